"""Greedy generation on CPU: eval.generate.greedy_decode (drops each row at its EOS) against
transformers' generate (decodes every row until the last one ends), on the same batch.

    python -m benchmarks.bench_generate --model runs/study/models/attributor --batch 50 --max-new-tokens 120

Prints seconds, output tokens, ms per output token and whether both give the same tokens. A model
that ends its answers (a trained student) shows the saving; the base model rarely emits EOS early.
"""
from __future__ import annotations

import argparse
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="model path or offline name")
    p.add_argument("--chat-template", default="recipes/study/chatml.jinja")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--max-new-tokens", type=int, default=320)
    a = p.parse_args()
    from common.runtime import keep_freed_memory

    keep_freed_memory("benchmarks.bench_generate", sys.argv[1:])
    import torch

    from common.modeling import inference_model, load_tokenizer, resolve_model_path
    from data import synthetic
    from data.prompts import render_prompt
    from eval.generate import greedy_decode

    path = resolve_model_path(a.model)
    tok = load_tokenizer(path, a.chat_template)
    tok.padding_side = "left"
    model = inference_model(path)
    questions = [r.question for r in synthetic.generate(a.batch, 0, "eval")]  # questions of the eval split
    enc = tok([render_prompt(tok, q) for q in questions], return_tensors="pt", padding=True, add_special_tokens=False)
    t0 = time.perf_counter()
    ours = greedy_decode(model, enc["input_ids"], enc["attention_mask"], a.max_new_tokens, tok.eos_token_id)
    t1 = time.perf_counter()
    with torch.no_grad():
        ref = model.generate(**enc, max_new_tokens=a.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)[:, enc["input_ids"].shape[1]:].tolist()
    t2 = time.perf_counter()
    ref = [row[: row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row for row in ref]
    tokens = sum(map(len, ours))
    print("| decoder | seconds | output tokens | ms per output token |\n|---|---|---|---|")
    print(f"| greedy_decode (drops finished rows) | {t1 - t0:.1f} | {tokens} | {1000 * (t1 - t0) / tokens:.1f} |")
    print(f"| transformers generate | {t2 - t1:.1f} | {tokens} | {1000 * (t2 - t1) / tokens:.1f} |")
    print(f"\nsame tokens: {sum(x == y for x, y in zip(ours, ref))}/{len(ours)} answers")


if __name__ == "__main__":
    main()
