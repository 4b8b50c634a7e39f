"""The whole method in one command, every stage cached under one run folder.

    python -m selective_sft.quickstart                                   # SmolLM2 + synthetic data, CPU
    python -m selective_sft.quickstart --config recipes/<model>/selective.yaml   # a paper setting, GPUs

data -> segments + integrated gradients -> selection -> labels (selective and full-CoT) -> SFT of
both -> evaluation of both -> table, plots, HTML viewer. A finished stage leaves ``<stage>.done``
and is skipped on rerun; the attribution and evaluation stages also resume mid-way.
With ``traces: synthetic`` the data are generated (with planted redundancy) and the run reports how
often the selector masks planted vs genuine segments.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
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


def run(recipe: str, run_dir: str | None, overrides: list[str], n_train: int, n_eval: int) -> dict:
    from attribution import runner
    from attribution.labels import trace_view, write_recipe_labels
    from attribution.segments import split_segments
    from attribution.selection import select
    from attribution.report import write_report
    from data import synthetic
    from data.records import write_jsonl
    from eval.run import collect_table, evaluate

    from .config import parse_recipe
    from .modeling import load_tokenizer
    from .train import train

    args, sft, model_args = parse_recipe(["--config", recipe, *overrides])
    run_dir = Path(run_dir or Path("runs") / Path(recipe).stem)
    run_dir.mkdir(parents=True, exist_ok=True)
    stage = Stages(run_dir)
    synthetic_data = args.traces == "synthetic"
    benchmarks = {b: (str(Path(args.eval_data_dir) / b / "test.jsonl") if args.eval_data_dir else None)
                  for b in args.eval_benchmarks}
    if synthetic_data:
        args.traces = str(run_dir / "data" / "train.jsonl")
        benchmarks = {"synthetic": str(run_dir / "data" / "eval.jsonl")}
        stage("data", lambda: {"train": str(write_jsonl(synthetic.generate(n_train, sft.seed, "train"), args.traces)),
                               "eval": str(write_jsonl(synthetic.generate(n_eval, sft.seed, "eval"), benchmarks["synthetic"]))})
    args.attribution_dir = str(run_dir / "attribution")
    records = runner.load_trace_records(args)
    stage("attribution", lambda: runner.run(args, model_args, records=records))
    tok = load_tokenizer(model_args.model_name_or_path, args.chat_template)
    attributions = runner.load_attributions(args.attribution_dir)
    runs = {"selective": (args.selector, run_dir / "labels" / "selective"), "full_cot": ("all", run_dir / "labels" / "full_cot")}

    label_summaries = {name: stage(f"labels_{name}", lambda s=sel, o=out: write_recipe_labels(
        args, tok, records, attributions, sft.max_length, s, o).to_dict()) for name, (sel, out) in runs.items()}
    for name, (_, labels_dir) in runs.items():
        # both runs get the same schedule; a two-stage recipe trains full CoT first in both
        run_args = dataclasses.replace(args, labels_dir=str(labels_dir),
                                       first_stage_labels_dir=str(runs["full_cot"][1]) if args.first_stage_epochs > 0 else None)
        run_sft = dataclasses.replace(sft, output_dir=str(run_dir / "models" / name))
        stage(f"train_{name}", lambda a=run_args, s=run_sft: {"loss": train(a, s, model_args).state.log_history[-1]})
    eval_dir = run_dir / "eval"
    modes = ("greedy",) + (("sample",) if args.eval_samples else ())
    for name in runs:
        model_dir = run_dir / "models" / name
        if args.first_stage_epochs > 0:
            model_dir = model_dir / "final"
        stage(f"eval_{name}", lambda n=name, m=model_dir: evaluate(
            str(m), n, benchmarks, eval_dir, modes, None if args.eval_samples == -1 else args.eval_samples,
            args.eval_max_new_tokens, args.eval_backend, args.eval_batch_size, args.eval_limit, args.chat_template))
    table = collect_table(eval_dir, baseline="full_cot")
    report = write_report(runs["selective"][1], args.attribution_dir, records)
    lines = ["## Accuracy and output length", "", table, "", "## Supervision", "",
             "| labels | segments per trace | segments trained | tokens trained | records |", "|---|---|---|---|---|"]
    for name, s in label_summaries.items():
        lines.append(f"| {name} | {s['segments_per_trace']:.1f} | {s['pct_segments_selected']:.1f}% | "
                     f"{s['pct_tokens_selected']:.1f}% | {s['records_out']} |")
    if synthetic_data:
        # only the segment choices matter here: select on the stored attributions, no tokenization
        views = {r.id: trace_view(r, split_segments(r.trace, args.keyword_spec), attributions[r.id])
                 for r in records if attributions.get(r.id, {}).get("status") == "ok"}
        by_sel = {sel: {rid: {"selected": select(sel, v, **args.selector_params()).segment_selected.tolist()}
                        for rid, v in views.items()}
                  for sel in (args.selector, "random_segments", "high_strength_segments")}
        lines += ["", "## Planted redundancy (synthetic data: ground truth known)", "", planted_table(records, by_sel)]
    gap = json.loads((Path(args.attribution_dir) / "summary.json").read_text())
    lines += ["", f"IG: {gap['attributed']} traces, mean completeness gap {gap['mean_completeness_gap']:.3f}",
              f"plots and viewer: {report}"]
    text = "\n".join(lines)
    (run_dir / "results.md").write_text(text + "\n")
    print("\n" + text)
    if stage.times:
        print("\nstage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in stage.times.items()))
    return {"results": str(run_dir / "results.md"), "times": stage.times}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m selective_sft.quickstart", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_RECIPE))
    p.add_argument("--run-dir", help="default: runs/<recipe name>")
    p.add_argument("--n-train", type=int, default=24, help="synthetic training traces (traces: synthetic)")
    p.add_argument("--n-eval", type=int, default=20, help="held-out synthetic problems (traces: synthetic)")
    a, overrides = p.parse_known_args(argv)
    run(a.config, a.run_dir, overrides, a.n_train, a.n_eval)


if __name__ == "__main__":
    main()
