"""The paper's experiment (Tables 1-2) in miniature, on synthetic traces whose redundancy is known.

    python -m pipelines.study --config recipes/study/smollm2.yaml [--run_dir D] [--quick] [--key value ...]

1. data: students' traces with planted redundancy, held-out questions, and clean traces of other
   questions for the attribution model (data.synthetic);
2. an attribution model that knows the task: SmolLM2 fine-tuned on the clean traces (paper: R1-Distill-
   Qwen-7B), evaluated on the held-out questions; IG with it and, as a comparison, with the base model;
3. students from the base model, one per row (ROWS) and training seed, same data and hyperparameters;
4. every model answers the held-out questions greedily: accuracy, length, answers at the token limit,
   planted-kind segments written; rows pooled over seeds, paired against full CoT;
5. ``<run_dir>/report.md``: Tables 1-2 shaped tables, selection quality against the ground truth, the
   Sec. 3 confidence-gain gap, the power statement, a figure and a per-stage profile.

Every stage (and every student and seed) leaves a ``<name>.done`` marker and is reused on rerun; IG and
evaluation also resume mid-way. ``--quick`` runs the same design at tiny sizes in ``<run_dir>-quick``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .quickstart import Stages, profile_table, stage_work, trained

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "study" / "smollm2.yaml"
QUICK = ["--study_n_train", "8", "--study_n_eval", "6", "--study_n_attributor", "8", "--study_seeds", "0",
         "--study_other_seeds", "0", "--study_attributor_epochs", "1", "--num_train_epochs", "1", "--ig_steps", "2",
         "--eval_max_new_tokens", "24"]


@dataclass(frozen=True)
class Row:
    """One student: its name, selector and selection keys; main rows train on every seed of study_seeds."""

    name: str
    selector: str
    keys: tuple = ()
    main: bool = False
    paper_table2: float | None = None  # the paper's Table 2 (R1-Distill-Qwen-1.5B, greedy, macro average)


ROWS = (
    Row("full_cot", "all", main=True, paper_table2=44.8),
    Row("oracle", "oracle", main=True),
    Row("paper", "paper", main=True, paper_table2=46.9),
    Row("random", "random_segments", main=True, paper_table2=45.1),
    Row("random_matched", "random_segments", (("segment_ratio", None),)),
    Row("abs_ig_tokens", "high_abs_ig_tokens", paper_table2=46.1),
    Row("ig_tokens", "high_ig_tokens", paper_table2=45.2),
    Row("high_strength", "high_strength_segments", paper_table2=46.9),
    Row("pruned", "paper", (("label_mode", "prune"),), paper_table2=43.9),
)
ATTRIBUTORS = {"task": "task attributor (fine-tuned on clean traces)", "base": "base model"}  # attribution/ and attribution_base/


def _students(recipe) -> list[tuple[Row, int]]:
    """(row, seed) in training order: seed by seed, so every row has a first result early."""
    study = recipe.study
    seeds = sorted(set(study.study_seeds) | set(study.study_other_seeds))
    return [(row, s) for s in seeds for row in ROWS if s in (study.study_seeds if row.main else study.study_other_seeds)]


def _row_recipe(recipe, row: Row, seed: int | None = None):
    """The recipe of one row (its labels under labels/<row>) and, with ``seed``, of one student."""
    run = recipe.paths
    selection = replace(recipe.selection, selector=row.selector, **dict(row.keys))
    selection.labels_dir = str(run.labels(row.name))
    sft = recipe.sft if seed is None else replace(recipe.sft, seed=seed, output_dir=str(run.model(f"{row.name}-s{seed}")))
    return replace(recipe, selection=selection, sft=sft)


def _attributor_recipe(recipe, which: str):
    """The recipe whose IG run is attribution/ (task attributor) or attribution_base/ (base model)."""
    attribution = replace(recipe.attribution, attribution_dir=str(recipe.paths.run_dir / ("attribution" if which == "task"
                                                                                            else "attribution_base")),
                          attribution_model_name_or_path=str(recipe.paths.model("attributor")) if which == "task" else None)
    analysis = replace(recipe.analysis, analysis_steps=["confidence"], analysis_dir=str(recipe.paths.analysis))
    return replace(recipe, attribution=attribution, analysis=analysis)


def _design(recipe) -> dict:
    """What the study's results depend on: its sections and TRL's training keys (a rerun must match)."""
    from common.config import fingerprint

    sft_keys = ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
                "lr_scheduler_type", "warmup_steps", "weight_decay", "max_length", "loss_type")
    return {"model": recipe.model.model_name_or_path, "dtype": recipe.model.dtype,
            **fingerprint(recipe.traces, recipe.attribution, recipe.study),
            **{k: getattr(recipe.sft, k, None) for k in sft_keys},
            "eval_max_new_tokens": recipe.eval.eval_max_new_tokens}


def _check_design(run_dir: Path, design: dict) -> None:
    path = run_dir / "study.json"
    if path.exists():
        before = json.loads(path.read_text())
        changed = {k: (before.get(k), v) for k, v in json.loads(json.dumps(design, default=str)).items() if before.get(k) != v}
        if changed:
            raise SystemExit(f"{run_dir} holds a study with other settings {changed} (before, now): use another --run_dir")
    else:
        path.write_text(json.dumps(design, indent=1, default=str))


# --- measurements (pure: samples and selections in, numbers out) ------------------------------------

def answer_metrics(samples: list[dict], max_new_tokens: int) -> dict[str, dict]:
    """Per question id: correct, output tokens, whether the answer hit the token limit, and the planted-kind
    segments it wrote."""
    from data.synthetic import planted_counts

    return {r["id"]: {"correct": float(bool(r["correct"])), "tokens": float(r["n_tokens"]),
                      "at_limit": float(r["n_tokens"] >= max_new_tokens),
                      "planted": float(sum(planted_counts(r["response"]).values()))}
            for r in samples if r["mode"] == "greedy"}


def pool(runs: list[dict[str, dict]]) -> dict[str, np.ndarray]:
    """A row's seeds pooled per question (the mean over seeds), on the questions every seed answered."""
    ids = sorted(set.intersection(*(set(r) for r in runs)))
    return {"ids": np.asarray(ids), **{k: np.asarray([np.mean([r[q][k] for r in runs]) for q in ids])
                                        for k in ("correct", "tokens", "at_limit", "planted")}}


def compare(row: dict, base: dict, seed: int = 0) -> dict:
    """Row against the baseline on their shared questions: accuracy difference (points) with a bootstrap
    interval, the paired sign-flip p-value and the smallest difference detectable at this spread."""
    from common.stats import bootstrap_ci, detectable_difference, sign_flip_p

    shared = np.intersect1d(row["ids"], base["ids"])
    d = 100 * (row["correct"][np.searchsorted(row["ids"], shared)] - base["correct"][np.searchsorted(base["ids"], shared)])
    lo, hi = bootstrap_ci(d, seed=seed)
    return {"diff": float(d.mean()), "ci": (lo, hi), "p": sign_flip_p(d, seed=seed), "mdd": detectable_difference(d),
            "questions": len(shared)}


def selection_quality(views: dict, selections: dict) -> dict:
    """Token-level agreement of masked with planted over the traces (``views``: id -> TraceView with its
    ground truth; ``selections``: id -> Selection): precision (planted share of masked tokens), recall
    (masked share of planted tokens) and the share of trace tokens trained."""
    masked = planted = both = trace = 0
    for rid, view in views.items():
        inside = view.token_segment >= 0
        truth = view.planted[view.token_segment[inside]]
        m = ~selections[rid].token_selected[inside]
        masked, planted, both, trace = masked + m.sum(), planted + truth.sum(), both + (m & truth).sum(), trace + inside.sum()
    return {"precision": both / masked if masked else float("nan"), "recall": both / planted if planted else float("nan"),
            "trained": 1 - masked / max(trace, 1)}


# --- the run ------------------------------------------------------------------------------------------

def run(argv: list[str]) -> dict:
    from attribution import runner
    from attribution.analyze import analyze
    from attribution.attributions import load_attributions, load_summary
    from attribution.labels import write_labels
    from common.modeling import load_tokenizer
    from common.recipe import parse_recipe
    from data import synthetic
    from data.loaders import load_trace_records
    from data.records import write_jsonl
    from eval.run import evaluate, load_samples
    from selective_sft.train import train

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--quick", action="store_true")
    a, rest = p.parse_known_args(argv)
    if "--config" not in rest:
        rest = ["--config", str(DEFAULT_RECIPE), *rest]
    recipe = parse_recipe(rest + QUICK if a.quick else rest)  # --quick's sizes win over the recipe's
    if a.quick and "--run_dir" not in rest:  # never mix tiny results into the real run's folder
        recipe = parse_recipe(rest + QUICK + ["--run_dir", recipe.run.run_dir + "-quick"])
    study, run_dir = recipe.study, recipe.paths.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_design(run_dir, _design(recipe))
    stage = Stages(run_dir)
    data = run_dir / "data"
    files = {"train": data / "train.jsonl", "eval": data / "synthetic" / "test.jsonl", "attributor": data / "attributor.jsonl"}

    def make_data() -> dict:
        train_recs = synthetic.generate(study.study_n_train, recipe.sft.seed, "train", max_planted=study.study_max_planted)
        seen = {r.question for r in train_recs}
        eval_recs = synthetic.generate(study.study_n_eval, recipe.sft.seed, "eval", exclude=seen)
        seen |= {r.question for r in eval_recs}
        clean = synthetic.generate(study.study_n_attributor, recipe.sft.seed, "attributor", plant=False, exclude=seen)
        for name, recs in (("train", train_recs), ("eval", eval_recs), ("attributor", clean)):
            write_jsonl(recs, files[name])
        shares = [synthetic.planted_share(r) for r in train_recs]
        return {"planted_share": {"mean": float(np.mean(shares)), "min": float(np.min(shares)),
                                  "max": float(np.max(shares)), "quartiles": np.quantile(shares, [0.25, 0.5, 0.75]).tolist()}}

    data_info = stage("data", make_data)
    recipe.traces.traces = str(files["train"])
    recipe.eval.eval_data_dir, recipe.eval.eval_benchmarks = str(data), ["synthetic"]
    records, load = load_trace_records(recipe.traces)
    tok = load_tokenizer(recipe.model.model_name_or_path, recipe.traces.chat_template)
    template, think = recipe.traces.chat_template, recipe.training.think_prefix
    command = "python -m pipelines.study " + " ".join(argv)

    # 2. the attribution model: full-CoT SFT of the base model on clean traces of other questions
    attributor = replace(_row_recipe(recipe, Row("attributor_clean", "all")),
                         traces=replace(recipe.traces, traces=str(files["attributor"])),
                         sft=replace(recipe.sft, output_dir=str(recipe.paths.model("attributor")),
                                     num_train_epochs=study.study_attributor_epochs))
    clean, clean_load = load_trace_records(attributor.traces)
    stage("labels_attributor", lambda: write_labels(tok, clean, None, attributor, clean_load, command).to_dict())
    stage("train_attributor", lambda: trained(train(attributor)))
    results = {"eval_attributor": stage("eval_attributor", lambda: evaluate(
        attributor.sft.output_dir, "attributor", recipe.eval, template, think))}
    ig = {which: _attributor_recipe(recipe, which) for which in ATTRIBUTORS}
    for which, r in ig.items():
        stage(f"ig_{which}", lambda r=r: runner.run(r.traces, r.attribution, r.model, records, load=load))
    attributions = {which: load_attributions(r.attribution.attribution_dir) for which, r in ig.items()}

    # 3-4. students: labels from the task attributor's IG, one model per row and seed, each evaluated
    task = replace(recipe, attribution=ig["task"].attribution)
    for row in ROWS:
        stage(f"labels_{row.name}", lambda row=row: write_labels(tok, records, attributions["task"], _row_recipe(task, row),
                                                                 load, command).to_dict())
    for row, seed in _students(task):
        r = _row_recipe(task, row, seed)
        results[f"train_{row.name}-s{seed}"] = stage(f"train_{row.name}-s{seed}", lambda r=r: trained(train(r)))
        results[f"eval_{row.name}-s{seed}"] = stage(f"eval_{row.name}-s{seed}", lambda r=r, n=f"{row.name}-s{seed}": evaluate(
            r.sft.output_dir, n, recipe.eval, template, think))
    confidence = stage("confidence", lambda: {k: float(v) for k, v in analyze(ig["task"], records)["confidence"].items()
                                              if k in ("important", "unimportant")})

    # 5. the report
    limit = recipe.eval.eval_max_new_tokens
    answers = {f"{row.name}-s{s}": answer_metrics(load_samples(recipe.eval.eval_dir, f"{row.name}-s{s}"), limit)
               for row, s in _students(task)}
    answers["attributor"] = answer_metrics(load_samples(recipe.eval.eval_dir, "attributor"), limit)
    quality = _quality(recipe, records, attributions)
    text = report(recipe, data_info, answers, quality, confidence, load_summary(ig["task"].attribution.attribution_dir),
                  profile_table(stage.times, stage_work(stage.times, results)))
    (run_dir / "report.md").write_text(text)
    print(text)
    return {"report": str(run_dir / "report.md"), "times": stage.times}


def _quality(recipe, records, attributions: dict) -> dict:
    """Selection quality per attributor and selector row, against the planted spans."""
    from attribution.selection import select, trace_view
    from data.synthetic import planted_mask

    out = {}
    for which, rows in attributions.items():
        views = {r.id: trace_view(r.id, r.trace, r.answer, rows[r.id]["segments"], rows[r.id],
                                  recipe.selection.strength_aggregation, planted_mask(r.meta, rows[r.id]["segments"]))
                 for r in records if rows[r.id]["status"] == "ok"}
        for row in ROWS:
            if row.name in ("full_cot", "pruned"):  # full CoT masks nothing; pruned is paper's selection
                continue
            cfg = replace(recipe.selection, selector=row.selector, **dict(row.keys))
            out[(which, row.name)] = selection_quality(views, {rid: select(v, cfg) for rid, v in views.items()})
    return out


def _fmt_ci(lo: float, hi: float) -> str:
    return f"{lo:.1f} to {hi:.1f}"


def report(recipe, data_info: dict, answers: dict[str, dict], quality: dict, confidence: dict, ig_summary: dict,
           profile: str) -> str:
    """The study's report.md."""
    from attribution.attributions import ig_quality_lines
    from common.stats import bootstrap_ci

    study, students = recipe.study, _students(recipe)
    pooled = {row.name: pool([answers[f"{row.name}-s{s}"] for r, s in students if r is row]) for row in ROWS}
    acc_ci = {name: [100 * x for x in bootstrap_ci(r["correct"])] for name, r in pooled.items()}
    seeds = {row.name: [s for r, s in students if r is row] for row in ROWS}
    base = pooled["full_cot"]
    share, limit = data_info["planted_share"], recipe.eval.eval_max_new_tokens
    att = pool([answers["attributor"]])
    lines = ["# The study: selective SFT on traces with known redundancy", "",
             "## Design (fixed before the comparison was run)", "",
             f"- Students: {recipe.model.model_name_or_path}, full-parameter SFT on {study.study_n_train} synthetic traces, "
             f"{recipe.sft.num_train_epochs:g} epochs, lr {recipe.sft.learning_rate:g} "
             f"({getattr(recipe.sft.lr_scheduler_type, 'value', recipe.sft.lr_scheduler_type)}), "
             f"batch {recipe.sft.per_device_train_batch_size} x {recipe.sft.gradient_accumulation_steps}, eq. 9 loss; "
             f"seeds {study.study_seeds} for full CoT, oracle, paper and random, {study.study_other_seeds} for the others.",
             f"- Planted redundancy (repeats, checks, abandoned attempts, restatements; 0-{study.study_max_planted} per "
             f"trace): {100 * share['mean']:.0f}% of trace characters on average (quartiles "
             f"{', '.join(f'{100 * q:.0f}%' for q in share['quartiles'])}; range {100 * share['min']:.0f}-{100 * share['max']:.0f}%).",
             f"- Attribution model: the base model fine-tuned on {study.study_n_attributor} clean traces of other questions "
             f"({study.study_attributor_epochs:g} epochs); held-out greedy accuracy {100 * att['correct'].mean():.1f}% "
             f"(95% CI {_fmt_ci(*(100 * x for x in bootstrap_ci(att['correct'])))}) on the {len(att['ids'])} questions below.",
             f"- IG: {recipe.attribution.ig_rule}, ig_steps {recipe.attribution.ig_steps}, pad baseline on the trace "
             f"tokens, {ig_summary.get('attributed')} traces. " + " ".join(ig_quality_lines(ig_summary)),
             f"- Evaluation: {len(base['ids'])} held-out questions, greedy, at most {limit} new tokens. Rows pool their seeds "
             f"per question; intervals are 95% percentile bootstraps over questions; p is a paired sign-flip test "
             f"against full CoT on the same questions.", "",
             "## Table 1 shape: accuracy and length", "",
             "| row | seeds | accuracy % (95% CI) | vs full CoT, points (95% CI) | p | output tokens (± s.e.) | length vs full CoT "
             "| at token limit | planted-kind segments per answer |", "|---|---|---|---|---|---|---|---|---|"]
    comparisons = {}
    for row in ROWS:
        r = pooled[row.name]
        tokens_se = r["tokens"].std(ddof=1) / np.sqrt(len(r["tokens"])) if len(r["tokens"]) > 1 else 0.0
        if row.name == "full_cot":
            vs, p, rel = "-", "-", "-"
        else:
            c = comparisons[row.name] = compare(r, base)
            vs, p = f"{c['diff']:+.1f} ({_fmt_ci(*c['ci'])})", f"{c['p']:.3f}"
            rel = f"{100 * (r['tokens'].mean() / base['tokens'].mean() - 1):+.1f}%"
        lines.append(f"| {row.name} | {len(seeds[row.name])} | {100 * r['correct'].mean():.1f} ({_fmt_ci(*acc_ci[row.name])}) | {vs} | {p} "
                     f"| {r['tokens'].mean():.0f} ± {tokens_se:.0f} | {rel} | {100 * r['at_limit'].mean():.1f}% "
                     f"| {r['planted'].mean():.2f} |")
    mdd = {n: c["mdd"] for n, c in comparisons.items()}
    lines += ["", "## Table 2 shape: beside the paper (R1-Distill-Qwen-1.5B, greedy, macro average of six benchmarks)", "",
              "| row | paper, accuracy | here, accuracy | here, output tokens vs full CoT |", "|---|---|---|---|"]
    for row in ROWS:
        if row.paper_table2 is not None:
            r = pooled[row.name]
            rel = "-" if row.name == "full_cot" else f"{100 * (r['tokens'].mean() / base['tokens'].mean() - 1):+.1f}%"
            lines.append(f"| {row.name} | {row.paper_table2} | {100 * r['correct'].mean():.1f} | {rel} |")
    lines += ["", "The paper's selector used 18% fewer tokens than full CoT there.", "",
              "## Power", "",
              "At the spread each comparison shows, a paired difference is detected (two-sided 5%, power 80%) from "
              + ", ".join(f"{n} {v:.1f}" for n, v in mdd.items()) + " points on. Rows with fewer seeds are noisier.", "",
              "## Selection against the ground truth (token level: masked = planted?)", "",
              "| attributor | row | trace tokens trained | precision (planted among masked) | recall (planted masked) |",
              "|---|---|---|---|---|"]
    for (which, name), q in quality.items():
        lines.append(f"| {ATTRIBUTORS[which]} | {name} | {100 * q['trained']:.0f}% | {100 * q['precision']:.0f}% "
                     f"| {100 * q['recall']:.0f}% |")
    lines += ["", "## Sec. 3: confidence gain, important vs unimportant segments (task attributor)", "",
              f"Mean log-prob gain of the gold answer when a segment is appended (tau {recipe.analysis.analysis_tau}, "
              f"beta {recipe.analysis.analysis_beta}): important {confidence['important']:.3f}, unimportant "
              f"{confidence['unimportant']:.3f}, gap {confidence['important'] - confidence['unimportant']:+.3f}.", "",
              "## Figure", "", f"![accuracy against output length]({_figure(recipe.paths.run_dir / 'study.png', pooled, acc_ci)})", "",
              "## Profile", "", profile, ""]
    return "\n".join(lines)


def _figure(path: Path, pooled: dict, acc_ci: dict) -> str:
    """Accuracy against mean output length per row, with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in pooled.items():
        lo, hi = acc_ci[name]
        acc, tokens = 100 * r["correct"].mean(), r["tokens"].mean()
        se = r["tokens"].std(ddof=1) / np.sqrt(len(r["tokens"])) if len(r["tokens"]) > 1 else 0.0
        ax.errorbar(tokens, acc, yerr=[[acc - lo], [hi - acc]], xerr=1.96 * se, fmt="o", capsize=3, label=name)
    ax.set(xlabel="mean output tokens (held-out, greedy)", ylabel="accuracy %")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def main(argv: list[str] | None = None) -> None:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return
    from common.runtime import keep_freed_memory

    keep_freed_memory("pipelines.study", argv)
    run(argv)


if __name__ == "__main__":
    main()
