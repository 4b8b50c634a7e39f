"""The whole method in one command, every stage cached under one run folder.

    python -m selective_sft.quickstart                                   # SmolLM2 + synthetic data, CPU
    python -m selective_sft.quickstart --config recipes/<model>/selective.yaml   # a paper setting, GPUs

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
import time
from dataclasses import replace
from pathlib import Path

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "quickstart" / "smollm2.yaml"


class Stages:
    """Runs named stages once: a ``<name>.done`` file in the run folder records each finished one."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.times: dict[str, float] = {}

    def __call__(self, name: str, fn):
        marker = self.run_dir / f"{name}.done"
        if marker.exists():
            print(f"== {name}: done before, skipped")
            return json.loads(marker.read_text())
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        result = fn() or {}
        self.times[name] = time.perf_counter() - t0
        marker.write_text(json.dumps(result))
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


def run(recipe_path: str, run_dir: str | None, overrides: list[str], n_train: int, n_eval: int) -> dict:
    from attribution import runner
    from attribution.attributions import load_attributions, load_summary
    from attribution.labels import write_labels
    from attribution.report import write_report
    from attribution.selection import select, trace_view
    from common.modeling import load_tokenizer
    from common.recipe import parse_recipe
    from data import synthetic
    from data.loaders import load_trace_records
    from data.records import write_jsonl
    from eval.run import collect_table, evaluate

    from .train import train

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
    stage("attribution", lambda: runner.run(recipe.traces, recipe.attribution, recipe.model, records, load=load))
    tok = load_tokenizer(recipe.model.model_name_or_path, recipe.traces.chat_template, recipe.training.think_tokens)
    attributions = load_attributions(attr_dir)
    # the recipe's selector against the full-CoT baseline, folders by the run-folder rule
    runs = {"selective": recipe.for_selector(recipe.selection.selector), "full_cot": recipe.for_selector("all")}
    command = " ".join(["python -m selective_sft.quickstart --config", recipe_path, *overrides])
    label_summaries = {name: stage(f"labels_{name}", lambda r=r: write_labels(tok, records, attributions, r, load,
                                                                              command).to_dict())
                       for name, r in runs.items()}
    for name, r in runs.items():  # both get the same schedule; a two-stage recipe trains full CoT first in both
        stage(f"train_{name}", lambda r=r: {"loss": train(r).state.log_history[-1]})
    for name, r in runs.items():
        stage(f"eval_{name}", lambda r=r: evaluate(str(r.trained_model_dir), r.selection.labels_name, r.eval,
                                                   r.traces.chat_template, r.training.think_prefix))
    table = collect_table(recipe.eval.eval_dir, "all", tuple(recipe.eval.eval_pass_k))
    report = write_report(runs["selective"].selection, attr_dir, records)
    lines = ["## Accuracy and output length", "", table, "", "## Supervision", "",
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
        lines += ["", "## Planted redundancy (synthetic data: ground truth known)", "", planted_table(records, by_sel)]
    gap = load_summary(attr_dir)
    lines += ["", f"IG: {gap['attributed']} traces, mean completeness gap {gap['mean_completeness_gap']:.3f}",
              f"plots and viewer: {report}"]
    text = "\n".join(lines)
    (paths.run_dir / "results.md").write_text(text + "\n")
    print("\n" + text)
    if stage.times:
        print("\nstage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in stage.times.items()))
    return {"results": str(paths.run_dir / "results.md"), "times": stage.times}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m selective_sft.quickstart", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_RECIPE))
    p.add_argument("--run-dir", help="default: the recipe's run_dir")
    p.add_argument("--n-train", type=int, default=24, help="synthetic training traces (traces: synthetic)")
    p.add_argument("--n-eval", type=int, default=20, help="held-out synthetic problems (traces: synthetic)")
    a, overrides = p.parse_known_args(argv)
    run(a.config, a.run_dir, overrides, a.n_train, a.n_eval)


if __name__ == "__main__":
    main()
