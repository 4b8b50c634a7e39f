"""Evaluate models on the benchmarks: resumable per-sample jsonl, summary JSON, markdown table.

    python -m eval --config recipes/<model>/<method>.yaml          # the recipe's trained model and eval keys
    python -m eval --model runs/x/model --name selective --benchmarks math500,aime24 \\
        --data-dir ../shared/data/benchmarks --out runs/eval       # any model; flags override a recipe

Greedy decoding gives accuracy; ``--samples`` > 0 adds sampling at temperature 0.6 (top-p 1.0) with
n per benchmark (the paper: 32 for AIME24/AMC23, 6 otherwise) for pass@1 / pass@k. A killed run
continues where it stopped: every graded sample is stored under benchmark|id|mode|index.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.config import EvalArguments, RunArguments
from common.recipe import RunPaths
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


def evaluate(model_path: str, name: str, cfg: EvalArguments, chat_template: str | None = None,
             think_prefix: str = "", grade_timeout: float = 10.0) -> dict:
    """Generate, grade and summarize one model as ``cfg`` asks; returns its summary (also written to
    <eval_dir>/<name>/summary.json)."""
    from common.modeling import load_tokenizer, resolve_model_path

    out = Path(cfg.eval_dir) / name
    store = _samples(cfg.eval_dir, name)
    items = [it for b, path in cfg.benchmark_files().items() for it in load_benchmark(b, path, cfg.eval_limit, cfg.eval_seed)]
    modes, max_new_tokens, batch_size, seed = cfg.modes, cfg.eval_max_new_tokens, cfg.eval_batch_size, cfg.eval_seed
    todo = [(it, mode, n) for it, mode, n in plan(items, list(modes), cfg.n_samples)
            if f"{it.benchmark}|{it.id}|{mode}|0" not in store.done]
    if todo:
        path = resolve_model_path(model_path)
        tok = load_tokenizer(path, chat_template)
        gen = make_generator(cfg.eval_backend, path, tok, batch_size)
        groups: dict[tuple[str, int], list[Item]] = {}
        for it, mode, n in todo:
            groups.setdefault((mode, n), []).append(it)
        with Grader(grade_timeout) as grader:
            for (mode, n), group in groups.items():
                s = Sampling(n, 0.0 if mode == "greedy" else PAPER_TEMPERATURE, 1.0, max_new_tokens, seed)
                for lo in range(0, len(group), batch_size):
                    chunk = group[lo : lo + batch_size]
                    prompts = [render_prompt(tok, it.question, instruction=it.instruction, think_prefix=think_prefix)
                               for it in chunk]
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
    summary = summarize(rows, tuple(cfg.eval_pass_k))
    (out / "summary.json").write_text(json.dumps({"model": model_path, "benchmarks": summary}, indent=1))
    return summary


def load_samples(eval_dir: str | Path, name: str) -> list[dict]:
    """The graded generations of one evaluated run."""
    return list(_samples(eval_dir, name).rows())


def _samples(eval_dir: str | Path, name: str) -> JsonlStore:
    """<eval_dir>/<name>/samples.jsonl: one row per sample, resumable."""
    return JsonlStore(Path(eval_dir) / name / "samples.jsonl", key="key")


def collect_table(out_dir: str | Path, baseline: str | None = None, ks: tuple[int, ...] = (1, 6)) -> str:
    """The Table 1 markdown over every run under out_dir (written to out_dir/table.md)."""
    runs = {}
    for path in sorted(Path(out_dir).glob("*/summary.json")):
        runs[path.parent.name] = json.loads(path.read_text())["benchmarks"]
    md = table(runs, baseline, ks)
    (Path(out_dir) / "table.md").write_text(md + "\n")
    return md


# flag -> EvalArguments key; a flag given on the command line overrides the recipe
FLAGS = {"benchmarks": "eval_benchmarks", "data_dir": "eval_data_dir", "out": "eval_dir", "greedy": "eval_greedy",
         "samples": "eval_samples", "max_new_tokens": "eval_max_new_tokens", "backend": "eval_backend",
         "batch_size": "eval_batch_size", "limit": "eval_limit", "seed": "eval_seed"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="recipe: its eval keys, trained model and run folders (other --key value pairs override it)")
    p.add_argument("--model", help="model path or hub name (smollm2, tiny-qwen2 work offline); default: the recipe's trained model")
    p.add_argument("--name", help="run name in the table (default: the recipe's labels name, else the model's folder name)")
    p.add_argument("--benchmarks", type=lambda s: s.split(","), help=f"comma-separated, of {','.join(BENCHMARKS)}")
    p.add_argument("--data-dir", help="local root holding <benchmark>/test.jsonl; default: load from the hub")
    p.add_argument("--out", help="folder of the runs and table.md (default: <run_dir>/eval)")
    p.add_argument("--greedy", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--samples", type=int, help="sampled answers per question (0: none; -1: the paper's n)")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--backend", choices=["auto", "hf", "vllm"])
    p.add_argument("--batch-size", type=int)
    p.add_argument("--limit", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--chat-template")
    p.add_argument("--baseline", help="run name the table compares against")
    a, rest = p.parse_known_args(argv)
    if a.config:
        from common.recipe import parse_recipe

        recipe = parse_recipe(["--config", a.config, *rest])
        cfg, model, name = recipe.eval, str(recipe.trained_model_dir), recipe.selection.labels_name
        chat_template, think_prefix = recipe.traces.chat_template, recipe.training.think_prefix
    elif rest:
        p.error(f"unrecognized arguments: {' '.join(rest)} (recipe keys need --config)")
    else:
        cfg, model, name, chat_template, think_prefix = EvalArguments(), None, None, None, ""
        cfg.eval_dir = str(RunPaths(Path(RunArguments().run_dir)).eval)
    for flag, key in FLAGS.items():
        if getattr(a, flag) is not None:
            setattr(cfg, key, getattr(a, flag))
    model = a.model or model
    if model is None:
        p.error("give --model, or --config with a recipe whose model is trained")
    name = a.name or name or Path(model.rstrip("/")).name
    evaluate(model, name, cfg, a.chat_template or chat_template, think_prefix)
    print(collect_table(cfg.eval_dir, a.baseline, tuple(cfg.eval_pass_k)))
