"""Greedy generation on CPU: eval.generate.greedy_decode (drops each row at its EOS) against
transformers' generate (decodes every row until the last one ends), on the same batch.

    python -m benchmarks.bench_generate --model runs/study/models/attributor --batch 50 --max-new-tokens 120

Prints seconds and ms per output token (mean and range over --repeats runs each), output tokens and
whether both give the same tokens. A model
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
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each decoder, in alternating order")
    a = p.parse_args()
    from common.runtime import keep_freed_memory

    keep_freed_memory("benchmarks.bench_generate", sys.argv[1:])
    import numpy as np
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
    def ours():
        return greedy_decode(model, enc["input_ids"], enc["attention_mask"], a.max_new_tokens, tok.eos_token_id)

    @torch.no_grad()
    def ref():
        rows = model.generate(**enc, max_new_tokens=a.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id)[:, enc["input_ids"].shape[1]:].tolist()
        return [row[: row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row for row in rows]

    seconds, answers = {"ours": [], "ref": []}, {}
    for r in range(a.repeats):  # the order alternates, so neither decoder always runs on a warm cache
        for name, fn in ((("ours", ours), ("ref", ref)) if r % 2 == 0 else (("ref", ref), ("ours", ours))):
            t0 = time.perf_counter()
            answers[name] = fn()
            seconds[name].append(time.perf_counter() - t0)
    tokens = sum(map(len, answers["ours"]))
    print("| decoder | seconds: mean (min-max) | runs | output tokens | ms per output token: mean (min-max) |\n|---|---|---|---|---|")
    for name, label in (("ours", "greedy_decode (drops finished rows)"), ("ref", "transformers generate")):
        t = np.array(seconds[name])
        ms = 1000 * t / tokens
        print(f"| {label} | {t.mean():.1f} ({t.min():.1f}-{t.max():.1f}) | {len(t)} | {tokens} | "
              f"{ms.mean():.1f} ({ms.min():.1f}-{ms.max():.1f}) |")
    print(f"\nsame tokens: {sum(x == y for x, y in zip(answers['ours'], answers['ref']))}/{len(answers['ours'])} answers")

if __name__ == "__main__":
    main()
