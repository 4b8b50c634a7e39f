"""``python -m attribution analyze --config R``: the paper's Sec. 3 on this recipe's model and traces.

Reads the attribution run (``python -m attribution ig`` first) and writes ``<run_dir>/analysis/``:
``report.md``, one PNG per step, ``summary.json``. The model work is per trace and resumable, one
jsonl per kind (``confidence``, ``linguistic``, ``judge``, ``incorrect``): a rerun computes only
what is missing. Steps (``analysis_steps``), each optional:

1. redundancy: segment and token counts and the cumulative-strength curve of correct traces, and of
   the shortest incorrect response where the records carry one (``python -m eval.self_generate``);
2. confidence: the answer-confidence gain of each segment (appended to the prefix before it) by
   segment class, and important vs unimportant at ``analysis_tau`` / ``analysis_beta``;
3. search: the tau x beta grid (attribution.analysis.search) and the greedy tau*;
4. linguistic: log perplexity and entropy (the attribution model's) and BLEU against earlier segments;
5. judge: whether ``judge_model_name_or_path`` calls each segment cut off;
6. position: where important and unimportant segments sit relative to the first one stating the answer.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from common.recipe import Recipe, attribution_model
from data.loaders import THINK_CLOSE
from data.prompts import attribution_text, render_prompt
from data.records import Record
from data.store import JsonlStore

from . import analysis
from .attributions import finished, load_attributions
from .selection import states_answer, trace_view


def _per_trace(path: Path, items: list, fn, desc: str) -> dict[str, dict]:
    """``fn(item)`` for every item not yet stored in ``path`` (resumable), then all rows by id."""
    from tqdm.auto import tqdm

    store = JsonlStore(path, key="id")
    for item in tqdm([i for i in items if i[0] not in store.done], desc=desc):
        store.append({"id": item[0], **fn(*item[1:])})
    return {r["id"]: r for r in store.rows()}


def _segments(records: dict[str, Record], attributions: dict[str, dict], aggregation: str) -> list[dict]:
    """Per attributed trace: segment texts, scores, token counts and the first segment stating the answer."""
    out = []
    for rid, row in attributions.items():
        if row["status"] != "ok" or rid not in records:
            continue
        rec = records[rid]
        view = trace_view(rid, rec.trace, rec.answer, row["segments"], row, aggregation)
        answer_at = next((k for k, t in enumerate(view.segment_texts) if states_answer(t, rec.answer)), None)
        out.append({"id": rid, "record": rec, "texts": view.segment_texts, "norm_strength": view.scores.norm_strength,
                    "consistency": view.scores.consistency, "tokens": view.segment_tokens, "answer_at": answer_at})
    return out


def _judge(model, tokenizer, texts: list[str], max_new_tokens: int) -> list[bool | None]:
    """The judge's verdict on each segment; if it has not answered within its budget, it is asked to
    answer now (the early-stop continuation)."""
    import torch

    device = next(model.parameters()).device

    @torch.no_grad()
    def generate(text: str, budget: int) -> str:
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]], device=device)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=budget,
                             pad_token_id=tokenizer.pad_token_id)
        return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    verdicts = []
    for text in texts:
        prompt = render_prompt(tokenizer, analysis.JUDGE_PROMPT.format(segment=text.strip()), instruction="")
        said = generate(prompt, max_new_tokens)
        verdict = analysis.parse_judge(said)
        if verdict is None:  # only what the judge says after the forced question counts
            verdict = analysis.parse_judge(generate(prompt + said + analysis.JUDGE_FORCE, 8))
        verdicts.append(verdict)
    return verdicts


def _plot(path: Path, draw) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    draw(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path.name


def _mean(values) -> float | None:
    """The mean of the defined values; None (null in the summary, never NaN) when there is none."""
    values = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=float)
    return float(values.mean()) if len(values) else None


def _fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


class _Run:
    """What every step reads: the recipe's analysis keys, its folder, the attributed traces with their
    important/unimportant split, and the attribution model (loaded on first use)."""

    def __init__(self, recipe: Recipe, records: list[Record], model, tokenizer):
        self.recipe, self.cfg, self.attr = recipe, recipe.analysis, recipe.attribution
        self.out = Path(self.cfg.analysis_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if not finished(self.attr.attribution_dir):
            raise FileNotFoundError(f"no attribution run in {self.attr.attribution_dir}: run `python -m attribution ig` first")
        self.traces = _segments({r.id: r for r in records}, load_attributions(self.attr.attribution_dir),
                                recipe.selection.strength_aggregation)
        self.split = {t["id"]: analysis.segment_classes(t["norm_strength"], t["consistency"], self.cfg.analysis_tau,
                                                        self.cfg.analysis_beta) for t in self.traces}
        self.thresholds = f"tau {self.cfg.analysis_tau}, beta {self.cfg.analysis_beta}"
        # the segments the comparisons count: all, or without the ends every selector keeps (Sec. 3)
        self.counted = {t["id"]: analysis.counted_segments(len(t["texts"]), self.cfg.analysis_exclude_ends)
                        for t in self.traces}
        self._model, self._tokenizer = model, tokenizer

    def lm(self):
        """The attribution model and tokenizer, loaded once."""
        if self._model is None:
            from common.modeling import inference_model, load_tokenizer

            args = attribution_model(self.attr, self.recipe.model)
            own = args.model_name_or_path == self.recipe.model.model_name_or_path
            self._tokenizer = self._tokenizer or load_tokenizer(args.model_name_or_path,
                                                                self.recipe.traces.chat_template if own else None)
            self._model = inference_model(args.model_name_or_path, args.dtype or "auto")
        return self._model, self._tokenizer

    def prompt_of(self, rec: Record) -> str:
        """The prompt IG saw before the trace."""
        return attribution_text(self.lm()[1], rec.question, "", rec.answer, self.attr.ig_answer_suffix,
                                self.recipe.traces.system_prompt).prompt

    def important(self) -> np.ndarray:
        """Important (eq. 7 at the analysis thresholds) per counted segment, over all traces."""
        return np.concatenate([self.split[t["id"]][1][self.counted[t["id"]]] for t in self.traces])

    def pooled(self, per_trace: dict) -> np.ndarray:
        """``per_trace`` (id -> per-segment values) on the counted segments, over all traces."""
        return np.concatenate([np.asarray(per_trace[t["id"]], dtype=float)[self.counted[t["id"]]] for t in self.traces])

    def items(self) -> list[tuple]:
        return [(t["id"], t) for t in self.traces]


def _gains(run: _Run) -> dict[str, np.ndarray]:
    """Each segment's confidence gain (features.segment_features' confidence_gain), per trace."""
    from .features import segment_features

    cfg = run.cfg

    def gain(t: dict) -> dict:
        feats = segment_features(*run.lm(), run.prompt_of(t["record"]), t["texts"], t["record"].answer, ["confidence_gain"],
                                 run.attr.ig_answer_suffix, cfg.analysis_confidence_samples, zlib.crc32(t["id"].encode()))
        return {"gain": feats["confidence_gain"].tolist()}

    rows = _per_trace(run.out / "confidence.jsonl", run.items(), gain, "confidence")
    return {rid: np.asarray(r["gain"]) for rid, r in rows.items()}


def load_gains(analysis_dir: str | Path) -> dict[str, np.ndarray]:
    """id -> per-segment confidence gain of a finished ``confidence`` step (every segment, in order)."""
    return {r["id"]: np.asarray(r["gain"], dtype=float) for r in JsonlStore(Path(analysis_dir) / "confidence.jsonl", key="id").rows()}


def _redundancy(run: _Run) -> tuple[dict, list[str]]:
    from .runner import attribute_record

    wrong = [(t["id"], t["record"]) for t in run.traces if t["record"].meta.get("shortest_incorrect")]
    groups = {"correct": [(t["norm_strength"], t["tokens"]) for t in run.traces]}
    if wrong:
        def attribute(rec: Record) -> dict:
            trace = rec.meta["shortest_incorrect"].split(THINK_CLOSE, 1)[0].rstrip()
            row = attribute_record(*run.lm(), Record(rec.id, rec.question, trace, rec.answer, rec.source),
                                   run.recipe.traces, run.attr)
            if row["status"] != "ok":
                return {"status": row["status"]}
            view = trace_view(rec.id, trace, rec.answer, row["segments"], row, run.recipe.selection.strength_aggregation)
            return {"status": "ok", "norm_strength": view.scores.norm_strength.tolist(), "tokens": view.segment_tokens.tolist()}

        rows = _per_trace(run.out / "incorrect.jsonl", wrong, attribute, "incorrect responses")
        groups["incorrect"] = [(np.asarray(r["norm_strength"]), np.asarray(r["tokens"])) for r in rows.values()
                               if r["status"] == "ok"]
    red = {}
    for name, group in groups.items():
        curve = np.mean([analysis.cumulative_curve(s) for s, _ in group], axis=0) if group else None
        red[name] = {"traces": len(group), "segments": _mean([len(s) for s, _ in group]),
                     "tokens": _mean([tok.sum() for _, tok in group]), "curve": None if curve is None else curve.tolist(),
                     "share_of_segments_for_80pct": analysis.reach(curve, 0.8) if group else None}
    grid = np.arange(1, 11) / 10

    def draw(ax):
        for name, r in ((n, r) for n, r in red.items() if r["curve"] is not None):
            ax.plot(grid, r["curve"], marker="o", label=f"{name} ({r['traces']})")
            ax.axvline(r["share_of_segments_for_80pct"], ls=":", lw=1)
        ax.axhline(0.8, ls="--", color="grey", lw=1)
        ax.set(xlabel="share of segments (strongest first)", ylabel="share of attribution strength", ylim=(0, 1.02))
        ax.legend(fontsize=8)

    report = ["## 1. Redundancy (Fig. 1)", "", "| responses | traces | segments | tokens | segments holding 80% of strength |",
              "|---|---|---|---|---|"]
    report += [f"| {n} | {r['traces']} | {_fmt(r['segments'], '.1f')} | {_fmt(r['tokens'], '.0f')} | "
               f"{_fmt(r['share_of_segments_for_80pct'] and 100 * r['share_of_segments_for_80pct'], '.0f')}% |" for n, r in red.items()]
    if not wrong:
        report += ["", "No record carries a shortest incorrect response (`python -m eval.self_generate` writes them)."]
    return red, report + ["", f"![]({_plot(run.out / 'redundancy.png', draw)})", ""]


def _confidence(run: _Run, gains: dict[str, np.ndarray]) -> tuple[dict, list[str]]:
    classes = run.pooled({t["id"]: run.split[t["id"]][0] for t in run.traces})
    g = run.pooled(gains)
    important = run.important()
    by_class = analysis.class_means(g, classes)
    samples = run.cfg.analysis_confidence_samples
    result = {"by_class": by_class, "important": _mean(g[important]), "unimportant": _mean(g[~important]),
              "estimate": f"{samples} samples" if samples else "log-prob", "ends_excluded": run.cfg.analysis_exclude_ends}
    report = [f"## 2. Confidence gain by segment class (Figs. 2, 4; {run.thresholds}"
              f"{'; first and last segments left out' if run.cfg.analysis_exclude_ends else ''})", "",
              "| class | segments | mean gain |", "|---|---|---|"]
    report += [f"| {c} | {n} | {_fmt(m)} |" for c, (m, n) in by_class.items()]
    report += [f"| important | {int(important.sum())} | {_fmt(result['important'])} |",
               f"| unimportant | {int((~important).sum())} | {_fmt(result['unimportant'])} |"]

    def draw(ax):
        ax.bar(range(4), [0.0 if m is None else m for m, _ in by_class.values()])
        ax.set_xticks(range(4), ["high S\nmoderate C", "high S\nhigh C", "low S\nmoderate C", "low S\nhigh C"])
        ax.set(ylabel="mean confidence gain")

    return result, report + ["", f"![]({_plot(run.out / 'confidence.png', draw)})", ""]


def _search(run: _Run, gains: dict[str, np.ndarray]) -> tuple[dict, list[str]]:
    cfg = run.cfg
    rows = analysis.search([{**t, "gain": gains[t["id"]], "counted": run.counted[t["id"]]} for t in run.traces],
                           cfg.analysis_taus, cfg.analysis_betas)
    tau_star = analysis.greedy(rows, "tau", {"beta": cfg.analysis_beta})
    beta_star = analysis.greedy(rows, "beta", {"tau": tau_star})
    report = ["## 3. tau / beta search (Fig. 4, App. D)", "",
              "| tau | beta | segments important | tokens important | gain gap (important - unimportant) | false-negative rate |",
              "|---|---|---|---|---|---|"]
    report += [f"| {r['tau']} | {r['beta']} | {100 * r['segments']:.0f}% | {100 * r['tokens']:.0f}% | {_fmt(r['gain_gap'])} | "
               f"{100 * r['false_negative_rate']:.0f}% |" for r in rows]
    report += ["", f"Greedy search (Fig. 4): tau* = {tau_star} at beta {cfg.analysis_beta}, then beta* = {beta_star} at "
                   f"tau* (each rises along its grid while the gain gap grows).", ""]
    return {"grid": rows, "greedy_tau": tau_star, "greedy_beta": beta_star}, report


def _linguistic(run: _Run) -> tuple[dict, list[str]]:
    from .features import segment_token_stats

    def stats(t: dict) -> dict:
        nll, ent = segment_token_stats(*run.lm(), run.prompt_of(t["record"]), t["texts"])
        return {"nll": nll.tolist(), "entropy": ent.tolist(), "bleu": analysis.bleu_vs_preceding(t["texts"]).tolist()}

    rows = _per_trace(run.out / "linguistic.jsonl", run.items(), stats, "linguistic")
    important = run.important()
    values = {k: run.pooled({i: r[k] for i, r in rows.items()}) for k in ("nll", "entropy", "bleu")}
    scored = ~np.isnan(values["bleu"])  # the first segment of a trace has nothing before it
    result = {side: {"log_perplexity": _mean(values["nll"][mask]), "entropy": _mean(values["entropy"][mask]),
                     "bleu": _mean(values["bleu"][mask]),
                     "share_bleu_over_0.8": float(np.mean(values["bleu"][mask & scored] > 0.8)) if np.any(mask & scored)
                     else None}
              for side, mask in (("important", important), ("unimportant", ~important))}
    report = [f"## 4. Linguistic profile (Fig. 3; {run.thresholds})", "",
              "| segments | log perplexity | entropy | BLEU vs earlier segments | BLEU > 0.8 |", "|---|---|---|---|---|"]
    report += [f"| {s} | {_fmt(v['log_perplexity'])} | {_fmt(v['entropy'])} | {_fmt(v['bleu'])} | "
               f"{_fmt(v['share_bleu_over_0.8'] and 100 * v['share_bleu_over_0.8'], '.0f')}% |" for s, v in result.items()]

    def draw(ax):
        for side, mask in (("important", important), ("unimportant", ~important)):
            ax.hist(values["nll"][mask], bins=20, alpha=0.5, density=True, label=side)
        ax.set(xlabel="log perplexity of the segment", ylabel="density")
        ax.legend(fontsize=8)

    return result, report + ["", f"![]({_plot(run.out / 'linguistic.png', draw)})", ""]


def _judge_step(run: _Run, judge) -> tuple[dict, list[str]]:
    cfg = run.cfg

    def verdicts(t: dict) -> dict:
        nonlocal judge
        if judge is None:
            from common.modeling import inference_model, load_tokenizer

            judge = (inference_model(cfg.judge_model_name_or_path), load_tokenizer(cfg.judge_model_name_or_path))
        return {"truncated": _judge(*judge, t["texts"], cfg.judge_max_new_tokens)}

    rows = _per_trace(run.out / "judge.jsonl", run.items(), verdicts, "judge")
    said = {side: [v for t in run.traces for v, i in zip(rows[t["id"]]["truncated"], run.split[t["id"]][1])
                   if i == (side == "important")] for side in ("important", "unimportant")}
    result = {side: {"truncated": sum(v is True for v in vs), "judged": sum(v is not None for v in vs),
                     "no_verdict": sum(v is None for v in vs)} for side, vs in said.items()}
    report = [f"## 5. Truncation judge (`{cfg.judge_model_name_or_path}`, App. B; {run.thresholds})", "",
              "| segments | cut off | judged | no verdict |", "|---|---|---|---|"]
    report += [f"| {s} | {v['truncated']} ({100 * v['truncated'] / max(v['judged'], 1):.0f}%) | {v['judged']} | {v['no_verdict']} |"
               for s, v in result.items()]
    return result, report + [""]


def _position(run: _Run) -> tuple[dict, list[str]]:
    pos = {side: np.concatenate([analysis.positions(run.split[t["id"]][1] == (side == "important"), t["answer_at"])
                                 for t in run.traces]) for side in ("important", "unimportant")}
    result = {side: {"before": int((p < 0).sum()), "at": int((p == 0).sum()), "after": int((p > 0).sum())}
              for side, p in pos.items()}
    stating = sum(t["answer_at"] is not None for t in run.traces)
    report = [f"## 6. Position relative to the first segment stating the answer (App. A; {run.thresholds})", "",
              "| segments | before | at | after |", "|---|---|---|---|"]
    report += [f"| {s} | {v['before']} | {v['at']} | {v['after']} |" for s, v in result.items()]

    def draw(ax):
        for side, p in pos.items():
            if len(p):
                ax.hist(p, bins=np.arange(p.min() - 0.5, p.max() + 1.5), alpha=0.5, label=side)
        ax.set(xlabel="segments after the first answer statement", ylabel="segments")
        ax.legend(fontsize=8)

    report += ["", f"{stating} of {len(run.traces)} traces state the answer in their thinking.", "",
               f"![]({_plot(run.out / 'position.png', draw)})", ""]
    return {**result, "traces_stating_the_answer": stating}, report


def _require_models(recipe: Recipe, steps: set[str], attribution_model_needed: bool, judge_needed: bool) -> None:
    """Every model the asked steps load, found before the first step runs (common.modeling.require_model)."""
    from common.modeling import require_model

    others = ",".join(s for s in recipe.analysis.analysis_steps if s != "judge")
    if judge_needed and "judge" in steps:
        require_model(recipe.analysis.judge_model_name_or_path, "judge_model_name_or_path",
                      f"drop the judge step (--analysis_steps {others})")
    if attribution_model_needed and steps - {"position", "judge"}:
        name = attribution_model(recipe.attribution, recipe.model).model_name_or_path
        key = "attribution_model_name_or_path" if recipe.attribution.attribution_model_name_or_path else "model_name_or_path"
        require_model(name, key)


def analyze(recipe: Recipe, records: list[Record], model=None, tokenizer=None, judge=None) -> dict:
    """Run the recipe's analysis steps; returns the summary (also in ``analysis_dir/summary.json``).
    ``model``/``tokenizer`` (the attribution model) and ``judge`` ((model, tokenizer)) are loaded when not given."""
    run = _Run(recipe, records, model, tokenizer)
    steps = set(run.cfg.analysis_steps)
    _require_models(recipe, steps, model is None, judge is None)
    gains = _gains(run) if steps & {"confidence", "search"} else {}
    summary = {"traces": len(run.traces), "steps": sorted(steps)}
    report = [f"# Why the selection: Sec. 3 on {len(run.traces)} traces", ""]
    for name, step in (("redundancy", lambda: _redundancy(run)), ("confidence", lambda: _confidence(run, gains)),
                       ("search", lambda: _search(run, gains)), ("linguistic", lambda: _linguistic(run)),
                       ("judge", lambda: _judge_step(run, judge)), ("position", lambda: _position(run))):
        if name in steps:
            summary[name], lines = step()
            report += lines
    (run.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float, allow_nan=False))
    (run.out / "report.md").write_text("\n".join(report) + "\n")
    return summary
