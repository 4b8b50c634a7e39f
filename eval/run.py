"""Evaluate models on the benchmarks: resumable per-sample jsonl, summary JSON, markdown table.

    python -m eval --model runs/x/model --name selective --benchmarks math500,aime24 \\
        --data-dir ../shared/data/benchmarks --out runs/eval

Greedy decoding gives accuracy; ``--samples`` > 0 adds sampling at temperature 0.6 (top-p 1.0) with
n per benchmark (the paper: 32 for AIME24/AMC23, 6 otherwise) for pass@1 / pass@k. A killed run
continues where it stopped: every graded sample is stored under benchmark|id|mode|index.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from data.prompts import render_prompt
from data.store import JsonlStore

from .benchmarks import BENCHMARKS, Item, load_benchmark
from .generate import Sampling, make_generator
from .grading import Grader
from .metrics import summarize, table

PAPER_TEMPERATURE = 0.6


def plan(items: list[Item], modes: list[str], samples: int | None) -> list[tuple[Item, str, int]]:
    """(item, mode, n) for every question and decoding mode."""
    out = []
    for it in items:
        for mode in modes:
            n = 1 if mode == "greedy" else (samples or BENCHMARKS[it.benchmark].samples)
            out.append((it, mode, n))
    return out


def answer_and_grade(generate, grader, prompts: list[str], golds: list[tuple[str, str]], s: Sampling) -> list[list[dict]]:
    """Generate ``s.n`` answers per prompt and grade them against (gold, kind): per prompt, a list of
    {index, text, n_tokens, correct, extracted, how}."""
    outputs = generate(prompts, s)
    grades = iter(grader.grade([(text, gold, kind) for (gold, kind), outs in zip(golds, outputs) for text, _ in outs]))
    return [[{"index": i, "text": text, "n_tokens": k, **next(grades)} for i, (text, k) in enumerate(outs)]
            for outs in outputs]


def evaluate(model_path: str, name: str, benchmarks: dict[str, str | None], out_dir: str | Path,
             modes: tuple[str, ...] = ("greedy",), samples: int | None = None, max_new_tokens: int = 32768,
             backend: str = "auto", batch_size: int = 8, limit: int | None = None, chat_template: str | None = None,
             seed: int = 0, grade_timeout: float = 10.0) -> dict:
    """Generate, grade and summarize one model; returns its summary (also written to out_dir/name)."""
    from selective_sft.modeling import load_tokenizer, resolve_model_path

    out = Path(out_dir) / name
    store = JsonlStore(out / "samples.jsonl", key="key")
    items = [it for b, path in benchmarks.items() for it in load_benchmark(b, path, limit, seed)]
    todo = [(it, mode, n) for it, mode, n in plan(items, list(modes), samples)
            if f"{it.benchmark}|{it.id}|{mode}|0" not in store.done]
    if todo:
        path = resolve_model_path(model_path)
        tok = load_tokenizer(path, chat_template)
        gen = make_generator(backend, path, tok, batch_size)
        groups: dict[tuple[str, int], list[Item]] = {}
        for it, mode, n in todo:
            groups.setdefault((mode, n), []).append(it)
        with Grader(grade_timeout) as grader:
            for (mode, n), group in groups.items():
                s = Sampling(n, 0.0 if mode == "greedy" else PAPER_TEMPERATURE, 1.0, max_new_tokens, seed)
                for lo in range(0, len(group), batch_size):
                    chunk = group[lo : lo + batch_size]
                    prompts = [render_prompt(tok, it.question, instruction=it.instruction) for it in chunk]
                    answers = answer_and_grade(gen, grader, prompts, [(it.answer, it.kind) for it in chunk], s)
                    for it, samples in zip(chunk, answers):
                        rows = [{"key": f"{it.benchmark}|{it.id}|{mode}|{i}", "benchmark": it.benchmark, "id": it.id,
                                 "mode": mode, "sample": i, "response": a["text"], "n_tokens": a["n_tokens"],
                                 "gold": it.answer, "correct": a["correct"], "extracted": a["extracted"],
                                 "how": a["how"]} for i, a in enumerate(samples)]
                        # a question's samples are stored together, index 0 last: it marks the question done
                        for row in rows[1:] + rows[:1]:
                            if row["key"] not in store.done:
                                store.append(row)
    wanted = {(it.benchmark, it.id) for it in items}
    rows = [r for r in store.rows() if (r["benchmark"], r["id"]) in wanted and r["mode"] in modes]
    summary = summarize(rows)
    (out / "summary.json").write_text(json.dumps({"model": model_path, "benchmarks": summary}, indent=1))
    return summary


def collect_table(out_dir: str | Path, baseline: str | None = None) -> str:
    """The markdown table over every run under out_dir (written to out_dir/table.md)."""
    runs = {}
    for path in sorted(Path(out_dir).glob("*/summary.json")):
        runs[path.parent.name] = json.loads(path.read_text())["benchmarks"]
    md = table(runs, baseline)
    (Path(out_dir) / "table.md").write_text(md + "\n")
    return md


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model path or hub name (smollm2, tiny-qwen2 work offline)")
    p.add_argument("--name", help="run name in the table (default: the model's folder name)")
    p.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    p.add_argument("--data-dir", help="local root holding <benchmark>/test.jsonl; default: load from the hub")
    p.add_argument("--out", default="runs/eval")
    p.add_argument("--greedy", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--samples", type=int, default=0, help="sampled answers per question (0: none; -1: the paper's n)")
    p.add_argument("--max-new-tokens", type=int, default=32768)
    p.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int)
    p.add_argument("--chat-template")
    p.add_argument("--baseline", help="run name the table compares against")
    a = p.parse_args(argv)
    names = a.benchmarks.split(",")
    benches = {b: (str(Path(a.data_dir) / b / "test.jsonl") if a.data_dir else None) for b in names}
    modes = (("greedy",) if a.greedy else ()) + (("sample",) if a.samples else ())
    name = a.name or Path(a.model.rstrip("/")).name
    evaluate(a.model, name, benches, a.out, modes, None if a.samples == -1 else a.samples, a.max_new_tokens,
             a.backend, a.batch_size, a.limit, a.chat_template)
    print(collect_table(a.out, a.baseline))
