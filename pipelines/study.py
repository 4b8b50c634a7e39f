"""The paper's claim tested on synthetic traces whose redundancy is known: validity gates, a selection
benchmark, then pre-registered students.

    python -m pipelines.study --config recipes/study/smollm2.yaml [--until selection] [--force] [--quick] [--key value ...]

1. data: benchmark traces with planted redundancy in three regimes (the same questions and planted segments:
   short; verbose, with reasoning prose; reflective, each genuine step catching and correcting a slip),
   held-out questions, clean traces of other questions for the attribution model and for gate a
   (data.synthetic). Every trace ends in the answer tail IG scores;
2. the attribution model: SmolLM2 fine-tuned on clean traces of other questions; **gates** a (P(gold) at
   the IG target on held-out clean traces) and c (held-out accuracy) are checked before any IG;
3. IG (``ig_steps: auto``) with the attribution model on every regime and with the base model on the short
   one; **gate** b (convergence): the unconverged are named and left out of the benchmark;
4. the **selection benchmark**: per score, AUROC for planted vs genuine middle segments with a bootstrap
   interval over traces, by planted kind (pipelines.study_selection); ``--until selection`` stops here;
5. Sec. 3 as the paper measures it (sampled confidence, ends excluded, by planted kind), and the tau/beta
   greedy search on the held-out benchmark traces (the ``paper_tuned`` row);
6. students from the base model, one per row and seed, on the first ``study_n_train`` short traces, each
   answering the held-out questions greedily; non-inferiority to full CoT, length change, the oracle's room.

``<run_dir>/report.md`` leads with the gates, then the benchmark, Sec. 3 and the students. A failed gate
stops the run with its reason (``--force`` goes on, and the report says so). Every stage (and every
student) leaves a ``<name>.done`` marker and is reused on rerun; IG and evaluation also resume mid-way.
``--quick`` runs the same stages at tiny sizes, gates open, in ``<run_dir>-quick``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from data.synthetic import VERBOSITIES as REGIMES  # each verbosity of the synthetic traces is a benchmark regime

from .quickstart import Stages, profile_table, stage_work, trained

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "study" / "smollm2.yaml"
# tiny sizes; the gates' thresholds opened and every IG level accepted, so the plumbing runs end to end
QUICK = ["--study_n_train", "6", "--study_n_bench", "8", "--study_n_verbose", "2", "--study_n_reflective", "2",
         "--study_n_base", "2", "--study_n_eval", "6", "--study_n_gate", "2", "--study_n_attributor", "8",
         "--study_seeds", "0", "--study_other_seeds", "0", "--study_attributor_epochs", "1", "--num_train_epochs", "1",
         "--ig_max_steps", "9", "--ig_tolerance", "1e6", "--eval_max_new_tokens", "24", "--analysis_confidence_samples", "2",
         "--study_min_probability", "0", "--study_min_accuracy", "0", "--study_max_unconverged", "1"]
NON_INFERIORITY_MARGIN = 5.0  # accuracy points; the issue's pre-registered margin


@dataclass(frozen=True)
class Row:
    """One student: its name, selector and selection keys; main rows train on every seed of study_seeds."""

    name: str
    selector: str
    keys: tuple = ()
    main: bool = False
    tuned: bool = False  # tau and beta from the Sec. 3 search on held-out traces
    paper_table2: float | None = None  # the paper's Table 2 (R1-Distill-Qwen-1.5B, greedy, macro average)


ROWS = (
    Row("full_cot", "all", main=True, paper_table2=44.8),
    Row("oracle", "oracle", main=True),
    Row("paper", "paper", main=True, paper_table2=46.9),
    Row("random", "random_segments", main=True, paper_table2=45.1),
    Row("paper_tuned", "paper", tuned=True),
    Row("high_strength", "high_strength_segments", paper_table2=46.9),
)
ATTRIBUTORS = {"task": "task attributor (fine-tuned on clean traces)", "base": "base model"}
IG_RUNS = (("task", "short"), ("base", "short"), ("task", "verbose"), ("task", "reflective"))  # (attributor, regime)


def _students(recipe) -> list[tuple[Row, int]]:
    """(row, seed) in training order: seed by seed, so every row has a first result early."""
    study = recipe.study
    seeds = sorted(set(study.study_seeds) | set(study.study_other_seeds))
    return [(row, s) for s in seeds for row in ROWS if s in (study.study_seeds if row.main else study.study_other_seeds)]


def _row_recipe(recipe, row: Row, seed: int | None = None, tuned: dict | None = None):
    """The recipe of one row (its labels under labels/<row>) and, with ``seed``, of one student."""
    run = recipe.paths
    keys = {**dict(row.keys), **(tuned if row.tuned else {})}
    selection = replace(recipe.selection, selector=row.selector, **keys)
    selection.labels_dir = str(run.labels(row.name))
    sft = recipe.sft if seed is None else replace(recipe.sft, seed=seed, output_dir=str(run.model(f"{row.name}-s{seed}")))
    return replace(recipe, selection=selection, sft=sft)


def _ig_recipe(recipe, which: str, regime: str, traces: str):
    """The recipe of one IG run: ``attribution_<which>_<regime>/`` over the ``traces`` file."""
    run_dir = recipe.paths.run_dir
    attribution = replace(recipe.attribution, attribution_dir=str(run_dir / f"attribution_{which}_{regime}"),
                          attribution_model_name_or_path=str(recipe.paths.model("attributor")) if which == "task" else None)
    return replace(recipe, attribution=attribution, traces=replace(recipe.traces, traces=traces))


def _design(recipe) -> dict:
    """What the study's results depend on: its sections and TRL's training keys (a rerun must match)."""
    from common.config import fingerprint

    sft_keys = ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
                "lr_scheduler_type", "warmup_steps", "weight_decay", "max_length", "loss_type")
    return {"model": recipe.model.model_name_or_path, "dtype": recipe.model.dtype,
            **fingerprint(recipe.traces, recipe.attribution, recipe.study),
            **{k: getattr(recipe.sft, k, None) for k in sft_keys},
            "eval_max_new_tokens": recipe.eval.eval_max_new_tokens,
            "analysis_confidence_samples": recipe.analysis.analysis_confidence_samples}


def _check_design(run_dir: Path, design: dict) -> None:
    """Refuse a run folder written with other settings. A setting the folder's study did not have yet (a
    stage added since, such as a new regime's size) is recorded and its stages run; none it had may change."""
    path, now = run_dir / "study.json", json.loads(json.dumps(design, default=str))
    before = json.loads(path.read_text()) if path.exists() else {}
    changed = {k: (before[k], v) for k, v in now.items() if k in before and before[k] != v}
    if changed:
        raise SystemExit(f"{run_dir} holds a study with other settings {changed} (before, now): use another --run_dir")
    added = sorted(set(now) - set(before))
    if before and added:
        print(f"{path}: settings new since this folder was written, their stages run now: "
              + ", ".join(f"{k}={now[k]}" for k in added))
    if added:
        path.write_text(json.dumps({**before, **now}, indent=1))


# --- measurements (pure: samples, selections and stage results in, numbers out) ------------------------

def gates(study, probability: dict, eval_attributor: dict, ig: dict) -> list[dict]:
    """The validity gates, each with its value, threshold and verdict: a (P(gold) at the IG target on
    held-out clean traces, per verbosity), b (unconverged share per IG run), c (held-out accuracy)."""
    out = [{"gate": f"a. P(gold answer) at the IG target, {n} held-out clean {regime} traces (mean)",
            "value": p["mean"], "threshold": f">= {study.study_min_probability}",
            "passed": p["mean"] >= study.study_min_probability} for regime, p in probability.items() for n in [p["traces"]]]
    for name, summary in ig.items():
        share = len(summary["unconverged"]) / max(summary["attributed"], 1)
        out.append({"gate": f"b. unconverged at tolerance (ig_steps: auto), {name} ({summary['attributed']} traces)",
                    "value": share, "threshold": f"<= {study.study_max_unconverged} (the rest named, left out)",
                    "passed": share <= study.study_max_unconverged, "names": summary["unconverged"]})
    acc = eval_attributor["synthetic"]
    out.append({"gate": f"c. attribution model's greedy accuracy, {acc['questions']} held-out questions",
                "value": acc["greedy_acc"] / 100, "threshold": f">= {study.study_min_accuracy}",
                "passed": acc["greedy_acc"] / 100 >= study.study_min_accuracy})
    return out


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
    """Row against the baseline on their shared questions: accuracy difference (points) with a two-sided 95%
    bootstrap interval and its one-sided 95% lower bound (non-inferiority), the paired sign-flip p-value,
    the smallest difference detectable at this spread, and the length change (row / base - 1) with its
    95% bootstrap interval over questions."""
    from common.stats import bootstrap_ci, cluster_bootstrap_ci, detectable_difference, sign_flip_p

    shared = np.intersect1d(row["ids"], base["ids"])
    at = lambda r: np.searchsorted(r["ids"], shared)  # noqa: E731
    d = 100 * (row["correct"][at(row)] - base["correct"][at(base)])
    pairs = list(zip(row["tokens"][at(row)], base["tokens"][at(base)]))
    length = lambda ps: float(sum(a for a, _ in ps) / max(sum(b for _, b in ps), 1e-9) - 1)  # noqa: E731
    return {"diff": float(d.mean()), "ci": bootstrap_ci(d, seed=seed), "lower": bootstrap_ci(d, seed=seed, level=0.90)[0],
            "p": sign_flip_p(d, seed=seed), "mdd": detectable_difference(d), "questions": len(shared),
            "length": length(pairs), "length_ci": cluster_bootstrap_ci(pairs, length, seed=seed)}


def selection_quality(views: dict, selections: dict) -> dict:
    """Token-level agreement of masked with planted over the traces (``views``: id -> TraceView with its
    ground truth; ``selections``: id -> Selection): precision (planted share of masked tokens), recall
    (masked share of planted tokens) and the share of trace tokens trained; None where undefined."""
    masked = planted = both = trace = 0
    for rid, view in views.items():
        inside = view.token_segment >= 0
        truth = view.planted[view.token_segment[inside]]
        m = ~selections[rid].token_selected[inside]
        masked, planted, both, trace = masked + m.sum(), planted + truth.sum(), both + (m & truth).sum(), trace + inside.sum()
    return {"precision": float(both / masked) if masked else None, "recall": float(both / planted) if planted else None,
            "trained": float(1 - masked / max(trace, 1))}


# --- the run ------------------------------------------------------------------------------------------

def _parse(argv: list[str]):
    """The recipe (``--quick``'s sizes win over the recipe's, the command line's over both; in
    ``<run_dir>-quick``) and the run's own flags."""
    from common.recipe import parse_recipe

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--force", action="store_true")
    p.add_argument("--until", choices=("selection",))
    a, rest = p.parse_known_args(argv)
    if "--config" not in rest:
        rest = ["--config", str(DEFAULT_RECIPE), *rest]
    recipe = parse_recipe(QUICK + rest if a.quick else rest)
    if a.quick and "--run_dir" not in rest:  # never mix tiny results into the real run's folder
        recipe = parse_recipe(QUICK + rest + ["--run_dir", recipe.run.run_dir + "-quick"])
    return recipe, a


def _study_records(recipe) -> dict[str, list]:
    """Every trace set of the study by file name, with disjoint questions across benchmark, held-out,
    attributor and gate traces; each regime's benchmark (and gate) traces share the short ones' questions
    and planted segments."""
    from data import synthetic

    study, seed, tail = recipe.study, recipe.sft.seed, recipe.attribution.ig_answer_suffix
    gen = lambda n, split, seen, **kw: synthetic.generate(n, seed, split, exclude=seen, tail=tail,  # noqa: E731
                                                          max_planted=study.study_max_planted, **kw)
    sizes = {"short": study.study_n_bench, "verbose": study.study_n_verbose, "reflective": study.study_n_reflective}
    made = {f"bench_{regime}": gen(sizes[regime], "train", set(), verbosity=regime) for regime in REGIMES}
    made["train"] = made["bench_short"][: study.study_n_train]
    seen = {r.question for r in made["bench_short"]}
    made["eval"] = gen(study.study_n_eval, "eval", seen)
    seen |= {r.question for r in made["eval"]}
    made["attributor"] = gen(study.study_n_attributor, "attributor", seen, plant=False)
    seen |= {r.question for r in made["attributor"]}
    made.update({f"gate_{regime}": gen(study.study_n_gate, "gate", seen, plant=False, verbosity=regime)
                 for regime in REGIMES})
    return made


def _write_data(made: dict, files: dict, names: list[str]) -> dict:
    """Writes the trace sets ``names``; the students' planted share when they are among them."""
    from data.records import write_jsonl
    from data.synthetic import planted_share

    for name in names:
        write_jsonl(made[name], files[name])
    if "train" not in names:
        return {}
    shares = [planted_share(r) for r in made["train"]]
    return {"planted_share": {"mean": float(np.mean(shares)), "min": float(np.min(shares)),
                              "max": float(np.max(shares)), "quartiles": np.quantile(shares, [0.25, 0.5, 0.75]).tolist()}}


def _gate_probability(recipe, path: Path) -> dict:
    """Gate a: exp F(x) at the IG target, the task attributor on the held-out clean traces at ``path``."""
    from attribution.runner import target_logprob
    from common.modeling import inference_model, load_tokenizer
    from data.loaders import load_trace_records

    name = str(recipe.paths.model("attributor"))
    model, tok = inference_model(name, recipe.model.dtype), load_tokenizer(name)
    recs, _ = load_trace_records(replace(recipe.traces, traces=str(path)))
    p = np.exp([target_logprob(model, tok, r, recipe.traces, recipe.attribution) for r in recs])
    return {"mean": float(p.mean()), "min": float(p.min()), "traces": len(p)}


def _stop_on_failed(checked: list[dict], force: bool, report_path: Path, write) -> None:
    """A failed gate ends the run with its reason (after writing the report so far), unless ``force``."""
    failed = [g for g in checked if not g["passed"]]
    if failed and not force:
        write()
        raise SystemExit("validity gate failed: " + "; ".join(f"{g['gate']} = {g['value']:.3f}, needs {g['threshold']}"
                                                               for g in failed) + f" (report: {report_path}; --force goes on)")


def run(argv: list[str]) -> dict:
    from attribution import runner
    from attribution.analyze import analyze, load_gains
    from attribution.attributions import load_attributions, load_summary
    from attribution.labels import write_labels
    from common.modeling import load_tokenizer
    from data.loaders import load_trace_records
    from eval.run import evaluate, load_samples
    from selective_sft.train import train

    recipe, flags = _parse(argv)
    study, run_dir = recipe.study, recipe.paths.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_design(run_dir, _design(recipe))
    stage = Stages(run_dir)
    data = run_dir / "data"
    made = _study_records(recipe)
    files = {name: data / f"{name}.jsonl" for name in made}
    files["eval"] = data / "synthetic" / "test.jsonl"
    out = {"data": stage("data", lambda: _write_data(made, files, ["train", "eval", "attributor"])),
           "forced": flags.force, "until": flags.until}
    for regime in REGIMES:  # a stage each, so a regime added to a run folder gets its traces
        stage(f"data_{regime}", lambda regime=regime: _write_data(made, files, [f"bench_{regime}", f"gate_{regime}"]))
    recipe.traces.traces = str(files["train"])
    recipe.eval.eval_data_dir, recipe.eval.eval_benchmarks = str(data), ["synthetic"]
    tok = load_tokenizer(recipe.model.model_name_or_path, recipe.traces.chat_template)
    template, think = recipe.traces.chat_template, recipe.training.think_prefix
    command = "python -m pipelines.study " + " ".join(argv)
    results = {}

    def write_report() -> str:
        text = report(recipe, out, profile_table(stage.times, stage_work(stage.times, results)))
        (run_dir / "report.md").write_text(text)
        return text

    # 2. the attribution model, gates a and c
    attributor = replace(_row_recipe(recipe, Row("attributor_clean", "all")),
                         traces=replace(recipe.traces, traces=str(files["attributor"])),
                         sft=replace(recipe.sft, output_dir=str(recipe.paths.model("attributor")),
                                     num_train_epochs=study.study_attributor_epochs))
    clean, clean_load = load_trace_records(attributor.traces)
    stage("labels_attributor", lambda: write_labels(tok, clean, None, attributor, clean_load, command).to_dict())
    stage("train_attributor", lambda: trained(train(attributor)))
    out["eval_attributor"] = results["eval_attributor"] = stage("eval_attributor", lambda: evaluate(
        attributor.sft.output_dir, "attributor", recipe.eval, template, think))
    out["probability"] = {regime: stage(f"gate_probability_{regime}", lambda regime=regime: _gate_probability(
        recipe, files[f"gate_{regime}"])) for regime in REGIMES}
    out["gates"] = gates(study, out["probability"], out["eval_attributor"], {})
    _stop_on_failed(out["gates"], flags.force, run_dir / "report.md", write_report)

    # 3. IG on the benchmark traces; gate b
    loaded = {regime: load_trace_records(replace(recipe.traces, traces=str(files[f"bench_{regime}"])))
              for regime in REGIMES}
    records = {regime: recs for regime, (recs, _) in loaded.items()}
    ig, out["ig"] = {}, {}
    for which, regime in IG_RUNS:
        name = f"{which}_{regime}"
        recs, load = loaded[regime]
        recs = recs[: study.study_n_base] if which == "base" else recs
        ig[name] = _ig_recipe(recipe, which, regime, str(files[f"bench_{regime}"]))
        stage(f"ig_{name}", lambda r=ig[name], recs=recs, load=None if which == "base" else load: runner.run(
            r.traces, r.attribution, r.model, recs, load=load))
        out["ig"][name] = load_summary(ig[name].attribution.attribution_dir)
    out["gates"] = gates(study, out["probability"], out["eval_attributor"], out["ig"])
    _stop_on_failed(out["gates"], flags.force, run_dir / "report.md", write_report)

    # 4. the selection benchmark
    from .study_selection import benchmark, counts

    attributions = {name: load_attributions(r.attribution.attribution_dir) for name, r in ig.items()}
    tables, out["selection"] = {}, {}
    for name in ig:  # a stage per IG run, so a regime added to a run folder gets its own
        tables[name], excluded = _benchmark_table(recipe, records[name.split("_", 1)[1]], attributions[name])
        out["selection"][name] = stage(f"selection_{name}", lambda t=tables[name], x=excluded: {
            "counts": counts(t, recipe.selection.beta), "excluded": x, "auroc": benchmark(t, seed=recipe.sft.seed)})
    out["selection"]["figure"] = _consistency_figure(run_dir / "consistency.png", tables)
    if flags.until == "selection":
        print(write_report())
        return {"report": str(run_dir / "report.md"), "times": stage.times}

    # 5. Sec. 3 on the short benchmark traces: the tau/beta search on the held-out ones, then all of them
    sec3 = replace(ig["task_short"], analysis=replace(recipe.analysis, analysis_dir=str(run_dir / "analysis")))
    held_out = records["short"][study.study_n_train:]
    tuned = stage("tune", lambda: _tune(analyze(replace(sec3, analysis=replace(sec3.analysis, analysis_steps=["search"])),
                                                held_out)))
    out["tuned"] = tuned
    out["sec3"] = stage("sec3", lambda: analyze(replace(sec3, analysis=replace(sec3.analysis, analysis_steps=["confidence"])),
                                                records["short"])["confidence"])
    out["sec3_kinds"] = _gain_by_kind(records["short"], load_gains(sec3.analysis.analysis_dir), recipe.analysis)

    # 6. students: labels from the task attributor's IG on their traces, one model per row and seed
    task = replace(recipe, attribution=ig["task_short"].attribution)
    train_records, train_load = load_trace_records(recipe.traces)
    for row in ROWS:
        r = _row_recipe(task, row, tuned=tuned)
        stage(f"labels_{row.name}", lambda r=r: write_labels(tok, train_records, attributions["task_short"], r, train_load,
                                                             command).to_dict())
    for row, seed in _students(task):
        r = _row_recipe(task, row, seed, tuned)
        results[f"train_{row.name}-s{seed}"] = stage(f"train_{row.name}-s{seed}", lambda r=r: trained(train(r)))
        results[f"eval_{row.name}-s{seed}"] = stage(f"eval_{row.name}-s{seed}", lambda r=r, n=f"{row.name}-s{seed}": evaluate(
            r.sft.output_dir, n, recipe.eval, template, think))
    limit = recipe.eval.eval_max_new_tokens
    out["answers"] = {f"{row.name}-s{s}": answer_metrics(load_samples(recipe.eval.eval_dir, f"{row.name}-s{s}"), limit)
                      for row, s in _students(task)}
    print(write_report())
    return {"report": str(run_dir / "report.md"), "times": stage.times}


def _benchmark_table(recipe, records: list, rows: dict) -> tuple[list[dict], list[str]]:
    """One IG run's middle segments with their scores and truth, on its converged traces, and the
    unconverged ones it leaves out."""
    from attribution.selection import trace_view
    from data.synthetic import planted_mask

    from .study_selection import middle_segments

    by_id = {r.id: r for r in records}
    ok = [rid for rid, row in rows.items() if row["status"] == "ok"]
    converged = [rid for rid in ok if rows[rid]["ig_converged"]]
    views = {rid: trace_view(rid, by_id[rid].trace, by_id[rid].answer, rows[rid]["segments"], rows[rid],
                             recipe.selection.strength_aggregation, planted_mask(by_id[rid].meta, rows[rid]["segments"]))
             for rid in converged}
    kinds = {rid: [m["kind"] for m in by_id[rid].meta["segments"]] for rid in converged}
    return middle_segments(views, kinds, recipe.selection, recipe.sft.seed), sorted(set(ok) - set(converged))


def _consistency_figure(path: Path, tables: dict) -> str:
    """Consistency against segment length (tokens), genuine vs planted middle segments, one panel per IG run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 3.6), sharey=True, squeeze=False)
    for ax, (name, traces) in zip(axes[0], tables.items()):
        for planted, color, label in ((False, "tab:blue", "genuine"), (True, "tab:red", "planted")):
            x = np.concatenate([t["tokens"][t["planted"] == planted] for t in traces]) if traces else []
            y = np.concatenate([t["consistency"][t["planted"] == planted] for t in traces]) if traces else []
            ax.scatter(x, y, s=10, alpha=0.6, color=color, label=label)
        ax.axhline(0.8, ls="--", color="grey", lw=1)
        ax.set(title=name.replace("_", ", "), xlabel="segment tokens", xscale="log")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("consistency (eq. 3)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def _tune(summary: dict) -> dict:
    """tau and beta of the ``paper_tuned`` row: the Sec. 3 greedy search's choice (Fig. 4)."""
    return {"tau": summary["search"]["greedy_tau"], "beta": summary["search"]["greedy_beta"]}


def _gain_by_kind(records: list, gains: dict[str, np.ndarray], analysis) -> dict:
    """Mean sampled confidence gain per segment kind (genuine and each planted kind), middle segments only
    when the analysis excludes the ends; None for a kind with no segment."""
    from attribution.analysis import counted_segments
    from data.synthetic import KINDS

    by = {k: [] for k in KINDS}
    for rec in records:
        if rec.id not in gains:
            continue
        metas = rec.meta["segments"]
        for meta, gain, counted in zip(metas, gains[rec.id], counted_segments(len(metas), analysis.analysis_exclude_ends)):
            if counted:
                by[meta["kind"]].append(float(gain))
    return {k: {"mean": float(np.mean(v)) if v else None, "segments": len(v)} for k, v in by.items()}


# --- the report ---------------------------------------------------------------------------------------

def _num(x, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _ci(lo, hi, fmt: str = ".2f") -> str:
    return "-" if lo is None else f"{format(lo, fmt)} to {format(hi, fmt)}"


def report(recipe, out: dict, profile: str) -> str:
    """The study's report.md: gates, then the selection benchmark, Sec. 3 and the students, as far as the run got."""
    from attribution.attributions import ig_quality_lines

    study = recipe.study
    lines = ["# The study: selective SFT on traces with known redundancy", "",
             "## Validity gates (checked before the comparison they guard)", "",
             "| gate | value | threshold | passed |", "|---|---|---|---|"]
    for g in out.get("gates", []):
        lines.append(f"| {g['gate']} | {g['value']:.3f} | {g['threshold']} | {'yes' if g['passed'] else '**no**'} |")
    for g in out.get("gates", []):
        if g.get("names"):
            lines.append(f"\n{g['gate'].split(', ')[-1]}: left out of the benchmark: {', '.join(g['names'])}")
    if any(not g["passed"] for g in out.get("gates", [])):
        lines += ["", "**A gate failed: " + ("the run was forced past it (`--force`); read what follows in that light.**"
                                             if out["forced"] else "the run stopped here.**")]
    for name, s in out.get("ig", {}).items():
        lines += ["", f"IG, {name.replace('_', ', ')} ({recipe.attribution.ig_rule}, ig_steps {recipe.attribution.ig_steps}, "
                      f"tolerance {recipe.attribution.ig_tolerance}): " + " ".join(ig_quality_lines(s))]
    share = out["data"]["planted_share"]
    lines += ["", "## Design", "",
              f"- Benchmark traces: {study.study_n_bench} short (the first {study.study_n_train} train the students; the "
              f"other {study.study_n_bench - study.study_n_train} are the held-out traces of the tau/beta search), "
              f"{study.study_n_verbose} verbose (the first short ones' questions and planted segments, with reasoning "
              f"prose), {study.study_n_reflective} reflective (the first short ones, each genuine step catching and correcting "
              f"a slip inside its segment), the first {study.study_n_base} short ones with the base model too. "
              f"0-{study.study_max_planted} "
              f"planted segments per trace; the students' traces are {100 * share['mean']:.0f}% planted characters on "
              f"average (quartiles {', '.join(f'{100 * q:.0f}%' for q in share['quartiles'])}).",
              f"- Attribution model: {recipe.model.model_name_or_path} fine-tuned on {study.study_n_attributor} clean short "
              f"traces of other questions ({study.study_attributor_epochs:g} epochs), trained on exactly the text IG "
              f"scores (prompt, trace, `{recipe.attribution.ig_answer_suffix.format(answer='N')}`)."]
    if "selection" in out:
        lines += _selection_section(out["selection"], recipe.selection.beta)
    if "sec3" in out:
        lines += _sec3_section(recipe, out)
    if "answers" in out:
        lines += _students_section(recipe, out)
    return "\n".join(lines + ["", "## Profile", "", profile, ""])


def _selection_section(sel: dict, beta: float) -> list[str]:
    from .study_selection import SCORES

    lines = ["", "## Selection benchmark: which scores tell planted middle segments from genuine ones", "",
             "AUROC for \"planted\" (0.5 = chance; 1 = every planted segment scored above every genuine one), 95% "
             "bootstrap interval over traces; by kind: that planted kind against the genuine segments.", ""]
    for name, r in sel.items():
        if name == "figure":
            continue
        c = r["counts"]
        kinds = list(next(iter(r["auroc"].values()))["by_kind"]) if r["auroc"] else []
        lines += [f"### {name.replace('_', ', ')}: {c['traces']} traces, {c['segments']} middle segments "
                  f"({', '.join(f'{k} {n}' for k, n in c['by_kind'].items())}); median tokens genuine "
                  f"{_num(c['median_tokens']['genuine'], '.0f')}, planted {_num(c['median_tokens']['planted'], '.0f')}; "
                  f"consistency above beta {beta:g}: genuine {_num(c['above_beta']['genuine'], '.0%')}, "
                  f"planted {_num(c['above_beta']['planted'], '.0%')}"
                  + (f"; left out (unconverged): {', '.join(r['excluded'])}" if r["excluded"] else ""), "",
                  "| score | AUROC (95% CI) | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
        for score, a in r["auroc"].items():
            lines.append(f"| {score} | {_num(a['auroc'])} ({_ci(*a['ci'])}) | "
                         + " | ".join(f"{_num(a['by_kind'][k]['auroc'])}" for k in kinds) + " |")
        lines.append("")
    lines += ["Scores: " + "; ".join(f"{k}: {v}" for k, v in SCORES.items()) + ".", "",
              f"![consistency against segment length]({sel['figure']})"]
    return lines


def _sec3_section(recipe, out: dict) -> list[str]:
    a, conf = recipe.analysis, out["sec3"]
    lines = ["", "## Sec. 3 as the paper measures it", "",
             f"Confidence: the share of {a.analysis_confidence_samples} answers sampled at t = 0.6 after the forced "
             f"answer prefix that state the gold answer; gain = its rise when a segment is appended; "
             f"{'first and last segments left out' if a.analysis_exclude_ends else 'every segment'}; task attributor, "
             f"short benchmark traces.", "",
             f"- Important vs unimportant (tau {a.analysis_tau}, beta {a.analysis_beta}): {_num(conf['important'], '.3f')} "
             f"against {_num(conf['unimportant'], '.3f')}.",
             f"- Greedy search (Fig. 4) on the {recipe.study.study_n_bench - recipe.study.study_n_train} held-out traces: "
             f"tau* = {out['tuned']['tau']}, then beta* = {out['tuned']['beta']} (the `paper_tuned` row).", "",
             "| segment kind | middle segments | mean confidence gain |", "|---|---|---|"]
    lines += [f"| {k} | {v['segments']} | {_num(v['mean'], '.3f')} |" for k, v in out["sec3_kinds"].items()]
    return lines


def _students_section(recipe, out: dict) -> list[str]:
    from common.stats import bootstrap_ci

    students = _students(recipe)
    pooled = {row.name: pool([out["answers"][f"{row.name}-s{s}"] for r, s in students if r is row]) for row in ROWS}
    base, limit = pooled["full_cot"], recipe.eval.eval_max_new_tokens
    attributor = out["eval_attributor"]["synthetic"]["greedy_acc"]
    lines = ["", "## Students (pre-registered: recipes/study/preregistration.md)", "",
             f"Validity first: the full-CoT student, trained on {recipe.study.study_n_train} traces, answers "
             f"{100 * base['correct'].mean():.1f}% of the held-out questions and runs to the token limit on "
             f"{100 * base['at_limit'].mean():.1f}% of them; the attribution model, fine-tuned from the same base "
             f"on {recipe.study.study_n_attributor} clean traces, answers {attributor:.1f}%. A student that has not learnt the "
             f"task leaves its selection nothing to show; read the rows against the detectable differences below.", "",
             f"{len(base['ids'])} held-out questions, greedy, at most {limit} new tokens; a row's seeds pooled per "
             f"question; 95% bootstrap intervals over questions. Non-inferior: the one-sided 95% lower bound of the "
             f"difference to full CoT above -{NON_INFERIORITY_MARGIN:g} points.", "",
             "| row | seeds | accuracy % (95% CI) | vs full CoT, points (95% CI) | one-sided lower bound | non-inferior "
             "| output tokens | length vs full CoT (95% CI) | at token limit | planted-kind segments per answer |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    comparisons = {}
    for row in ROWS:
        r = pooled[row.name]
        lo, hi = (100 * x for x in bootstrap_ci(r["correct"]))
        seeds = sum(1 for x, _ in students if x is row)
        tokens = f"{r['tokens'].mean():.0f}"
        vs = ["-", "-", "-", tokens, "-"]  # vs full CoT, lower bound, non-inferior, tokens, length
        if row.name != "full_cot":
            c = comparisons[row.name] = compare(r, base)
            length_ci = _ci(*(None if x is None else 100 * x for x in c["length_ci"]), ".1f")
            vs = [f"{c['diff']:+.1f} ({c['ci'][0]:.1f} to {c['ci'][1]:.1f})", f"{c['lower']:+.1f}",
                  "yes" if c["lower"] > -NON_INFERIORITY_MARGIN else "no", tokens, f"{100 * c['length']:+.1f}% ({length_ci})"]
        lines.append(f"| {row.name} | {seeds} | {100 * r['correct'].mean():.1f} ({lo:.1f} to {hi:.1f}) | {' | '.join(vs)} "
                     f"| {100 * r['at_limit'].mean():.1f}% | {r['planted'].mean():.2f} |")
    o = comparisons["oracle"]
    room = o["ci"][0] > 0 or (o["length_ci"][1] is not None and o["length_ci"][1] < 0)
    lines += ["", "Oracle's room: " + (
        f"the oracle beats full CoT by a margin this design detects (accuracy {o['diff']:+.1f} points, 95% CI "
        f"{o['ci'][0]:.1f} to {o['ci'][1]:.1f}; length {100 * o['length']:+.1f}%), so a selector has room to win."
        if room else "the oracle does not beat full CoT on accuracy or length by a margin this design detects: the task "
                     "leaves no room for any selector."),
              "", "Detectable differences (two-sided 5%, power 80%, at each comparison's spread): "
              + ", ".join(f"{n} {c['mdd']:.1f}" for n, c in comparisons.items()) + " points."]
    return lines


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
