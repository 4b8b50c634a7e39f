"""Self-generated CoT (the paper's data construction): sample N answers per training question, grade
them, keep the shortest correct one as the trace (and the shortest incorrect one, for analysis).

    python -m eval.self_generate --model deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B --questions GAIR/LIMO \\
        --n 32 --out runs/selfgen

Resumable: one row per question in ``out/candidates.jsonl``. Questions with no correct candidate are
counted and listed in ``out/summary.json``; the kept traces are ``out/traces.jsonl`` (records).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from data.loaders import THINK_CLOSE, load_records
from data.prompts import render_prompt
from data.records import Record, write_jsonl
from data.store import JsonlStore

from .generate import Sampling, make_generator
from .grading import Grader
from .run import answer_and_grade


def split_response(text: str) -> tuple[str, str]:
    """(thinking trace, final part) of a generated response; no </think> means it is all trace."""
    at = text.find(THINK_CLOSE)
    return (text, "") if at < 0 else (text[:at].rstrip(), text[at + len(THINK_CLOSE) :].strip())


def shortest(cands: list[dict], correct: bool) -> dict | None:
    pool = [c for c in cands if c["correct"] == correct]
    return min(pool, key=lambda c: (c["n_tokens"], c["index"])) if pool else None


def self_generate(questions: list[Record], generate, grader, out_dir: str | Path, tokenizer, n: int = 32,
                  temperature: float = 0.6, max_new_tokens: int = 32768, batch_size: int = 8, seed: int = 0) -> dict:
    """``generate(prompts, Sampling) -> [[(text, n_tokens)] * n]``; ``grader.grade(tasks)`` as in eval.grading."""
    out = Path(out_dir)
    store = JsonlStore(out / "candidates.jsonl")
    todo = [q for q in questions if q.id not in store.done]
    s = Sampling(n, temperature, 1.0, max_new_tokens, seed)
    for lo in range(0, len(todo), batch_size):
        chunk = todo[lo : lo + batch_size]
        prompts = [render_prompt(tokenizer, q.question) for q in chunk]
        for q, cands in zip(chunk, answer_and_grade(generate, grader, prompts, [(q.answer, "math") for q in chunk], s)):
            best, worst = shortest(cands, True), shortest(cands, False)
            store.append({"id": q.id, "question": q.question, "answer": q.answer, "n": len(cands),
                          "n_correct": sum(c["correct"] for c in cands), "shortest_correct": best,
                          "shortest_incorrect": worst})
    rows = [r for r in store.rows() if r["id"] in {q.id for q in questions}]
    kept = []
    for r in rows:
        if r["shortest_correct"] is None:
            continue
        text = r["shortest_correct"]["text"]
        trace, _ = split_response(text)
        wrong = r["shortest_incorrect"]
        # the whole response is trained: the thinking (segmented) and the completion after it (</think>, answer)
        kept.append(Record(r["id"], r["question"], trace, r["answer"], "self_generated",
                           {"n_tokens": r["shortest_correct"]["n_tokens"], "n_correct": r["n_correct"],
                            "n": r["n"], "shortest_incorrect": wrong["text"] if wrong else None},
                           completion=text[len(trace):].rstrip()))
    write_jsonl(kept, out / "traces.jsonl")
    summary = {"questions": len(rows), "with_correct": len(kept),
               "no_correct": [r["id"] for r in rows if r["shortest_correct"] is None],
               "mean_correct_rate": sum(r["n_correct"] / r["n"] for r in rows) / max(len(rows), 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> None:
    from common.modeling import load_tokenizer, resolve_model_path

    p = argparse.ArgumentParser(prog="python -m eval.self_generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--questions", required=True, help="hub dataset or .jsonl/.json/.parquet with question and answer")
    p.add_argument("--fields", help='JSON field map, e.g. {"question": "problem"}')
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--max-new-tokens", type=int, default=32768)
    p.add_argument("--backend", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int)
    p.add_argument("--out", default="runs/selfgen")
    a = p.parse_args(argv)
    fields = json.loads(a.fields) if a.fields else {}
    # questions need no trace: map it onto the question so validation passes
    recs, report = load_records(a.questions, fields={"trace": fields.get("question", "question"), **fields},
                                limit=a.limit)
    print(report.summary())
    path = resolve_model_path(a.model)
    tok = load_tokenizer(path)
    gen = make_generator(a.backend, path, tok, a.batch_size)
    with Grader() as grader:
        summary = self_generate(recs, gen, grader, a.out, tok, a.n, a.temperature, a.max_new_tokens, a.batch_size)
    print(json.dumps({k: v for k, v in summary.items() if k != "no_correct"}),
          f"no correct candidate: {len(summary['no_correct'])} questions (listed in {a.out}/summary.json)")


if __name__ == "__main__":
    main()
