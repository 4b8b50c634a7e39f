"""The whole method in one command, every stage cached under one run folder.

    python -m pipelines.quickstart                                   # SmolLM2 + synthetic data, CPU
    python -m pipelines.quickstart --config recipes/<model>/selective.yaml   # a paper setting, GPUs

data -> segments + integrated gradients -> selection -> labels (the recipe's selector and full CoT,
``selector: all``) -> SFT of both -> evaluation of both -> table, plots, HTML viewer. Folders follow
the recipe's run_dir rule (labels/<selector>, models/<selector>, eval/). A finished stage leaves ``<stage>.done``
and is skipped on rerun; the attribution and evaluation stages also resume mid-way.
With ``traces: synthetic`` the data are generated (with planted redundancy) and the run reports how
often the selector masks planted vs genuine segments.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "quickstart" / "smollm2.yaml"
# what the default run took where it was last measured (docs/measurements.md#quickstart)
EXPECTED = ("quickstart: about 5 min on 2 cores (3 min 13 s where last measured; machines differ by 1.5x or "
            "more); each stage prints its time")


class Stages:
    """Runs named stages once: a ``<name>.done`` file in the run folder records each finished one, with
    its result and wall seconds (``times``, kept across resumed runs)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.times: dict[str, float] = {}

    def __call__(self, name: str, fn):
        marker = self.run_dir / f"{name}.done"
        if marker.exists():
            print(f"== {name}: done before, skipped")
            done = json.loads(marker.read_text())
            if "seconds" not in done:  # a marker of an earlier version holds the result alone, untimed
                done = {"result": done, "seconds": float("nan")}
            self.times[name] = done["seconds"]
            return done["result"]
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        result = fn() or {}
        self.times[name] = time.perf_counter() - t0
        marker.write_text(json.dumps({"result": result, "seconds": self.times[name]}))
        print(f"== {name}: {self.times[name]:.0f}s", flush=True)
        return result


def planted_table(records, selectors: dict[str, dict]) -> str:
    """How often each selector masks planted redundant segments vs genuine ones (synthetic data only)."""
    from data.synthetic import KINDS

    lines = ["| selector | " + " | ".join(f"{k} masked" for k in KINDS) + " | precision (planted among masked) | recall (planted masked) |",
             "|---|" + "---|" * (len(KINDS) + 2)]
    for name, rows in selectors.items():
        masked = {k: [0, 0] for k in KINDS}
        for rec in records:
            row = rows.get(rec.id)
            if row is None:
                continue
            for meta, sel in zip(rec.meta["segments"], row["selected"]):
                masked[meta["kind"]][0] += int(not sel)
                masked[meta["kind"]][1] += 1
        planted_masked = sum(masked[k][0] for k in KINDS if k != "genuine")
        planted_total = sum(masked[k][1] for k in KINDS if k != "genuine")
        all_masked = planted_masked + masked["genuine"][0]
        cells = [f"{masked[k][0]}/{masked[k][1]} ({100 * masked[k][0] / max(masked[k][1], 1):.0f}%)" for k in KINDS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * planted_masked / max(all_masked, 1):.0f}% | "
                     f"{100 * planted_masked / max(planted_total, 1):.0f}% |")
    return "\n".join(lines)


def greedy_samples(eval_dir: str, names: list[str]) -> dict[str, list[dict]]:
    """The graded greedy answers of each evaluated run."""
    from eval.run import load_samples

    return {n: [r for r in load_samples(eval_dir, n) if r["mode"] == "greedy"] for n in names}


def redundancy_table(records, greedy: dict[str, list[dict]]) -> str:
    """How much planted-kind redundancy each trained model writes in its greedy answers (``greedy``:
    run -> samples), beside the training traces: the paper's thesis (redundancy propagates through
    SFT), measured directly."""
    from data.synthetic import MARKERS, planted_counts

    texts = {"training traces": [r.trace for r in records]}
    texts |= {f"{n} (held-out answers)": [r["response"] for r in rows] for n, rows in greedy.items()}
    kinds = list(MARKERS)
    lines = ["| text | " + " | ".join(f"{k} per text" for k in kinds) + " | texts with any planted kind |",
             "|---|" + "---|" * (len(kinds) + 1)]
    for name, group in texts.items():
        counts = [planted_counts(t) for t in group]
        cells = [f"{np.mean([c[k] for c in counts]):.2f}" for k in kinds]
        any_ = sum(any(c.values()) for c in counts)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {any_}/{len(group)} |")
    return "\n".join(lines)


def profile_table(times: dict[str, float], work: dict[str, tuple[str, str]]) -> str:
    """Each stage's wall time, and what it did: ``work[stage]`` = (the work, its cost per unit)."""
    lines = ["| stage | wall s | work | per unit |", "|---|---|---|---|"]
    for name, seconds in times.items():
        what, per = work.get(name, ("", "-"))
        lines.append(f"| {name} | {seconds:.0f} | {what} | {per} |")
    return "\n".join(lines + [f"| total | {sum(times.values()):.0f} | | |"])


def accuracy_table(greedy: dict[str, list[dict]]) -> str:
    """Greedy accuracy (``greedy``: run -> samples, two runs) as counts over totals with 95% Wilson
    intervals, lengths with standard errors, and the paired comparison of the two runs on the same
    questions (exact McNemar test)."""
    from eval.metrics import mcnemar_exact, summarize

    names = list(greedy)
    greedy = {n: {(r["benchmark"], r["id"]): r for r in rows} for n, rows in greedy.items()}
    lines = ["| run | correct | accuracy (95% Wilson interval) | mean output tokens (± s.e.) |", "|---|---|---|---|"]
    for name in names:
        for bench, s in summarize(list(greedy[name].values())).items():
            lo, hi = s["greedy_acc_ci"]
            lines.append(f"| {name} ({bench}) | {s['greedy_correct']}/{s['questions']} | {s['greedy_acc']:.1f}% "
                         f"({lo:.1f}-{hi:.1f}%) | {s['greedy_tokens']:.0f} ± {s['greedy_tokens_se']:.0f} |")
    a, b = names
    both = greedy[a].keys() & greedy[b].keys()
    only_a = sum(greedy[a][q]["correct"] and not greedy[b][q]["correct"] for q in both)
    only_b = sum(greedy[b][q]["correct"] and not greedy[a][q]["correct"] for q in both)
    lines += ["", f"Paired on the same {len(both)} questions: only {a} solves {only_a}, only {b} solves {only_b}; "
                  f"exact McNemar p = {mcnemar_exact(only_a, only_b):.2f} (a difference needs p < 0.05)."]
    return "\n".join(lines)


def trained(trainer) -> dict:
    """What a training stage reports: its last log entry, optimizer steps and the tokens it read (TRL's log)."""
    logged = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
    return {"loss": trainer.state.log_history[-1], "steps": trainer.state.global_step,
            "tokens": int(float(logged[-1])) if logged else None}


def stage_work(times: dict[str, float], results: dict[str, dict]) -> dict[str, tuple[str, str]]:
    """What each train_* and eval_* stage did and its cost per unit: training per optimizer step,
    generation per output token (``results``: stage -> what trained() or evaluate() returned)."""
    work = {}
    for name, result in results.items():
        if name.startswith("train_") and result.get("steps"):
            work[name] = (f"{result['steps']} steps, {result['tokens']} tokens", f"{times[name] / result['steps']:.1f} s per step")
        elif name.startswith("eval_"):
            tokens = sum(s["greedy_tokens"] * s["questions"] for s in result.values())
            work[name] = (f"{tokens:.0f} tokens for {sum(s['questions'] for s in result.values())} questions",
                          f"{1000 * times[name] / max(tokens, 1):.0f} ms per token")
    return work


def _work(attribution, dtype: str, attributions: dict, times: dict[str, float],
          results: dict[str, dict]) -> dict[str, tuple[str, str]]:
    """stage_work, and IG per point (the IG itself, without loading; the attribution section and the
    attribution model's ``dtype``)."""
    ok = [r for r in attributions.values() if r["status"] == "ok"]
    points, ig_seconds = sum(r["ig_steps_used"] for r in ok), sum(r["seconds"] for r in ok)
    return {"attribution": (f"{len(ok)} traces, {points} points (ig_steps {attribution.ig_steps}), "
                            f"{np.mean([len(r['input_ids']) for r in ok]):.0f} tokens each ({attribution.ig_rule}, {dtype})",
                            f"{ig_seconds / max(points, 1):.2f} s per point"),
            **stage_work(times, results)}


def run(recipe_path: str, run_dir: str | None, overrides: list[str], n_train: int, n_eval: int) -> dict:
    from attribution import runner
    from attribution.attributions import ig_quality_lines, load_attributions, load_summary
    from attribution.labels import write_labels
    from attribution.report import write_report
    from attribution.selection import select, trace_view
    from common.modeling import load_tokenizer, resolve_model_path
    from common.recipe import attribution_model, parse_recipe
    from data import synthetic
    from data.loaders import load_trace_records
    from data.records import write_jsonl
    from eval.run import collect_table, evaluate
    from selective_sft.train import train

    recipe = parse_recipe(["--config", recipe_path, *overrides, *(["--run_dir", run_dir] if run_dir else [])])
    paths = recipe.paths
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    stage = Stages(paths.run_dir)
    synthetic_data = recipe.traces.traces == "synthetic"
    if synthetic_data:
        data = paths.run_dir / "data"
        recipe.traces.traces = str(data / "train.jsonl")
        recipe.eval.eval_data_dir, recipe.eval.eval_benchmarks = str(data), ["synthetic"]
        stage("data", lambda: {"train": str(write_jsonl(synthetic.generate(n_train, recipe.sft.seed, "train"), data / "train.jsonl")),
                               "eval": str(write_jsonl(synthetic.generate(n_eval, recipe.sft.seed, "eval"),
                                                       data / "synthetic" / "test.jsonl"))})
    records, load = load_trace_records(recipe.traces)
    attr_dir = recipe.attribution.attribution_dir
    attr_args = attribution_model(recipe.attribution, recipe.model)
    stage("model", lambda: {"path": resolve_model_path(attr_args.model_name_or_path)})
    stage("attribution", lambda: runner.run(recipe.traces, recipe.attribution, recipe.model, records, load=load))
    tok = load_tokenizer(recipe.model.model_name_or_path, recipe.traces.chat_template, recipe.training.think_tokens)
    attributions = load_attributions(attr_dir)
    # the recipe's selector against the full-CoT baseline, folders by the run-folder rule
    runs = {"selective": recipe.for_selector(recipe.selection.selector), "full_cot": recipe.for_selector("all")}
    command = " ".join(["python -m pipelines.quickstart --config", recipe_path, *overrides])
    label_summaries = {name: stage(f"labels_{name}", lambda r=r: write_labels(tok, records, attributions, r, load,
                                                                              command).to_dict())
                       for name, r in runs.items()}
    results = {}
    for name, r in runs.items():  # both get the same schedule; a two-stage recipe trains full CoT first in both
        results[f"train_{name}"] = stage(f"train_{name}", lambda r=r: trained(train(r)))
    for name, r in runs.items():
        results[f"eval_{name}"] = stage(f"eval_{name}", lambda r=r: evaluate(
            str(r.trained_model_dir), r.selection.labels_name, r.eval, r.traces.chat_template, r.training.think_prefix))
    work = _work(recipe.attribution, attr_args.dtype, attributions, stage.times, results)
    table = collect_table(recipe.eval.eval_dir, "all", tuple(recipe.eval.eval_pass_k))
    # the baseline first, as Table 1
    greedy = greedy_samples(recipe.eval.eval_dir, [runs[k].selection.labels_name for k in ("full_cot", "selective")])
    report = write_report(runs["selective"].selection, attr_dir, records)
    lines = ["## Accuracy and output length", "", table, "",
             accuracy_table(greedy), "",
             "## Supervision", "",
             "| labels | segments per trace | segments trained | tokens trained | records |", "|---|---|---|---|---|"]
    for name, s in label_summaries.items():
        lines.append(f"| {runs[name].selection.labels_name} | {s['segments_per_trace']:.1f} | {s['pct_segments_selected']:.1f}% | "
                     f"{s['pct_tokens_selected']:.1f}% | {s['records_out']} |")
    if synthetic_data:
        # only the segment choices matter here: select on the stored attributions, no tokenization
        views = {r.id: trace_view(r.id, r.trace, r.answer, attributions[r.id]["segments"], attributions[r.id],
                                  recipe.selection.strength_aggregation)
                 for r in records if attributions[r.id]["status"] == "ok"}
        by_sel = {sel: {rid: {"selected": select(v, replace(recipe.selection, selector=sel)).segment_selected.tolist()}
                        for rid, v in views.items()}
                  for sel in (recipe.selection.selector, "random_segments", "high_strength_segments")}
        lines += ["", "## Planted redundancy (synthetic data: ground truth known)", "", planted_table(records, by_sel),
                  "", "Redundancy the trained models write (greedy, held-out questions):", "",
                  redundancy_table(records, greedy)]
    summary = load_summary(attr_dir)
    lines += ["", f"IG on {summary['attributed']} traces ({recipe.attribution.ig_rule}, ig_steps "
                  f"{recipe.attribution.ig_steps}):", "", *ig_quality_lines(summary), "", f"plots and viewer: {report}", "", "## Profile", "", profile_table(stage.times, work)]
    text = "\n".join(lines)
    (paths.run_dir / "results.md").write_text(text + "\n")
    print("\n" + text)
    return {"results": str(paths.run_dir / "results.md"), "times": stage.times}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pipelines.quickstart", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_RECIPE))
    p.add_argument("--run-dir", help="default: the recipe's run_dir")
    p.add_argument("--n-train", type=int, default=8, help="synthetic training traces (traces: synthetic)")
    p.add_argument("--n-eval", type=int, default=16, help="held-out synthetic problems (traces: synthetic)")
    a, overrides = p.parse_known_args(argv)
    from common.runtime import keep_freed_memory

    keep_freed_memory("pipelines.quickstart", list(sys.argv[1:] if argv is None else argv))
    if a.config == str(DEFAULT_RECIPE) and not overrides:
        print(EXPECTED, flush=True)
    run(a.config, a.run_dir, overrides, a.n_train, a.n_eval)


if __name__ == "__main__":
    main()
