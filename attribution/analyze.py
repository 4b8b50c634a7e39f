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


def _mean(values) -> float:
    values = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=float)
    return float(values.mean()) if len(values) else float("nan")


def analyze(recipe: Recipe, records: list[Record], model=None, tokenizer=None, judge=None) -> dict:
    """Run the recipe's analysis steps; returns the summary (also in ``analysis_dir/summary.json``).
    ``model``/``tokenizer`` (the attribution model) and ``judge`` ((model, tokenizer)) are loaded when not given."""
    from common.modeling import inference_model, load_tokenizer

    cfg, attr = recipe.analysis, recipe.attribution
    out = Path(cfg.analysis_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not finished(attr.attribution_dir):
        raise FileNotFoundError(f"no attribution run in {attr.attribution_dir}: run `python -m attribution ig` first")
    by_id = {r.id: r for r in records}
    traces = _segments(by_id, load_attributions(attr.attribution_dir), recipe.selection.strength_aggregation)
    steps = set(cfg.analysis_steps)
    attr_args = attribution_model(attr, recipe.model)
    template = recipe.traces.chat_template if attr_args.model_name_or_path == recipe.model.model_name_or_path else None

    def lm():
        nonlocal model, tokenizer
        if model is None:
            tokenizer = tokenizer or load_tokenizer(attr_args.model_name_or_path, template)
            model = inference_model(attr_args.model_name_or_path, attr_args.dtype or "auto")
        return model, tokenizer

    def prompt_of(rec: Record) -> str:
        return attribution_text(lm()[1], rec.question, "", rec.answer, attr.ig_answer_suffix, recipe.traces.system_prompt).prompt

    from .features import segment_features, segment_token_stats

    summary, report = {"traces": len(traces), "steps": sorted(steps)}, [f"# Why the selection: Sec. 3 on {len(traces)} traces", ""]
    gains = {}
    if steps & {"confidence", "search"}:
        rows = _per_trace(out / "confidence.jsonl", [(t["id"], t) for t in traces], lambda t: {"gain": segment_features(
            *lm(), prompt_of(t["record"]), t["texts"], t["record"].answer, ["confidence_gain"], attr.ig_answer_suffix,
            cfg.analysis_confidence_samples, zlib.crc32(t["id"].encode()))["confidence_gain"].tolist()}, "confidence")
        gains = {rid: np.asarray(r["gain"]) for rid, r in rows.items()}
    split = {t["id"]: analysis.segment_classes(t["norm_strength"], t["consistency"], cfg.analysis_tau, cfg.analysis_beta)
             for t in traces}
    imp = {rid: s[1] for rid, s in split.items()}
    thresholds = f"tau {cfg.analysis_tau}, beta {cfg.analysis_beta}"

    if "redundancy" in steps:
        from .runner import attribute_record

        wrong = [(t["id"], t["record"]) for t in traces if t["record"].meta.get("shortest_incorrect")]
        groups = {"correct": [(t["norm_strength"], t["tokens"]) for t in traces]}
        if wrong:
            def attribute(rec: Record) -> dict:
                trace = rec.meta["shortest_incorrect"].split(THINK_CLOSE, 1)[0].rstrip()
                row = attribute_record(lm()[0], lm()[1], Record(rec.id, rec.question, trace, rec.answer, rec.source),
                                       recipe.traces, attr)
                if row["status"] != "ok":
                    return {"status": row["status"]}
                view = trace_view(rec.id, trace, rec.answer, row["segments"], row, recipe.selection.strength_aggregation)
                return {"status": "ok", "norm_strength": view.scores.norm_strength.tolist(), "tokens": view.segment_tokens.tolist()}

            rows = _per_trace(out / "incorrect.jsonl", wrong, attribute, "incorrect responses")
            groups["incorrect"] = [(np.asarray(r["norm_strength"]), np.asarray(r["tokens"])) for r in rows.values()
                                   if r["status"] == "ok"]
        red = {}
        for name, group in groups.items():
            curve = np.mean([analysis.cumulative_curve(s) for s, _ in group], axis=0) if group else np.full(10, np.nan)
            red[name] = {"traces": len(group), "segments": _mean([len(s) for s, _ in group]),
                         "tokens": _mean([tok.sum() for _, tok in group]), "curve": curve.tolist(),
                         "share_of_segments_for_80pct": analysis.reach(curve, 0.8) if group else float("nan")}
        summary["redundancy"] = red
        grid = np.arange(1, 11) / 10

        def draw(ax):
            for name, r in red.items():
                ax.plot(grid, r["curve"], marker="o", label=f"{name} ({r['traces']})")
                ax.axvline(r["share_of_segments_for_80pct"], ls=":", lw=1)
            ax.axhline(0.8, ls="--", color="grey", lw=1)
            ax.set(xlabel="share of segments (strongest first)", ylabel="share of attribution strength", ylim=(0, 1.02))
            ax.legend(fontsize=8)

        report += ["## 1. Redundancy (Fig. 1)", "", "| responses | traces | segments | tokens | segments holding 80% of strength |",
                   "|---|---|---|---|---|"]
        report += [f"| {n} | {r['traces']} | {r['segments']:.1f} | {r['tokens']:.0f} | {100 * r['share_of_segments_for_80pct']:.0f}% |"
                   for n, r in red.items()]
        if not wrong:
            report += ["", "No record carries a shortest incorrect response (`python -m eval.self_generate` writes them)."]
        report += ["", f"![]({_plot(out / 'redundancy.png', draw)})", ""]

    if "confidence" in steps:
        classes = np.concatenate([split[t["id"]][0] for t in traces])
        g = np.concatenate([gains[t["id"]] for t in traces])
        important = np.concatenate([imp[t["id"]] for t in traces])
        by_class = analysis.class_means(g, classes)
        summary["confidence"] = {"by_class": by_class, "important": _mean(g[important]), "unimportant": _mean(g[~important]),
                                 "estimate": "log-prob" if not cfg.analysis_confidence_samples else f"{cfg.analysis_confidence_samples} samples"}
        report += [f"## 2. Confidence gain by segment class (Figs. 2, 4; {thresholds})", "", "| class | segments | mean gain |", "|---|---|---|"]
        report += [f"| {c} | {n} | {m:.3f} |" for c, (m, n) in by_class.items()]
        report += [f"| important | {int(important.sum())} | {summary['confidence']['important']:.3f} |",
                   f"| unimportant | {int((~important).sum())} | {summary['confidence']['unimportant']:.3f} |"]
        report += ["", f"![]({_plot(out / 'confidence.png', lambda ax: (ax.bar(range(4), [m for m, _ in by_class.values()]), ax.set_xticks(range(4), ['HS-MC', 'HS-HC', 'LS-MC', 'LS-HC']), ax.set(ylabel='mean confidence gain')))})", ""]

    if "search" in steps:
        rows = analysis.search([{**t, "gain": gains[t["id"]]} for t in traces], cfg.analysis_taus, cfg.analysis_betas)
        tau_star = analysis.greedy_tau(rows, cfg.analysis_beta)
        summary["search"] = {"grid": rows, "greedy_tau": tau_star}
        report += ["## 3. tau / beta search (Fig. 4, App. D)", "",
                   "| tau | beta | segments important | tokens important | gain gap (important - unimportant) | false-negative rate |",
                   "|---|---|---|---|---|---|"]
        report += [f"| {r['tau']} | {r['beta']} | {100 * r['segments']:.0f}% | {100 * r['tokens']:.0f}% | {r['gain_gap']:.3f} | "
                   f"{100 * r['false_negative_rate']:.0f}% |" for r in rows]
        report += ["", f"Greedy tau* at beta {cfg.analysis_beta}: {tau_star} (tau rises while the gain gap grows).", ""]

    if "linguistic" in steps:
        def stats(t: dict) -> dict:
            nll, ent = segment_token_stats(*lm(), prompt_of(t["record"]), t["texts"])
            return {"nll": nll.tolist(), "entropy": ent.tolist(), "bleu": analysis.bleu_vs_preceding(t["texts"]).tolist()}

        rows = _per_trace(out / "linguistic.jsonl", [(t["id"], t) for t in traces], stats, "linguistic")
        important = np.concatenate([imp[t["id"]] for t in traces])
        values = {k: np.concatenate([np.asarray(rows[t["id"]][k], dtype=float) for t in traces]) for k in ("nll", "entropy", "bleu")}
        ling = {side: {"log_perplexity": _mean(values["nll"][mask]), "entropy": _mean(values["entropy"][mask]),
                       "bleu": _mean(values["bleu"][mask]),
                       "share_bleu_over_0.8": float(np.mean(values["bleu"][mask & ~np.isnan(values["bleu"])] > 0.8))
                       if np.any(mask & ~np.isnan(values["bleu"])) else float("nan")}
                for side, mask in (("important", important), ("unimportant", ~important))}
        summary["linguistic"] = ling
        report += [f"## 4. Linguistic profile (Fig. 3; {thresholds})", "",
                   "| segments | log perplexity | entropy | BLEU vs earlier segments | BLEU > 0.8 |", "|---|---|---|---|---|"]
        report += [f"| {s} | {v['log_perplexity']:.3f} | {v['entropy']:.3f} | {v['bleu']:.3f} | {100 * v['share_bleu_over_0.8']:.0f}% |"
                   for s, v in ling.items()]

        def draw(ax):
            for side, mask in (("important", important), ("unimportant", ~important)):
                ax.hist(values["nll"][mask], bins=20, alpha=0.5, density=True, label=side)
            ax.set(xlabel="log perplexity of the segment", ylabel="density")
            ax.legend(fontsize=8)

        report += ["", f"![]({_plot(out / 'linguistic.png', draw)})", ""]

    if "judge" in steps:
        def verdicts(t: dict) -> dict:
            nonlocal judge
            if judge is None:
                judge = (inference_model(cfg.judge_model_name_or_path), load_tokenizer(cfg.judge_model_name_or_path))
            return {"truncated": _judge(*judge, t["texts"], cfg.judge_max_new_tokens)}

        rows = _per_trace(out / "judge.jsonl", [(t["id"], t) for t in traces], verdicts, "judge")
        said = {side: [v for t in traces for v, i in zip(rows[t["id"]]["truncated"], imp[t["id"]]) if i == (side == "important")]
                for side in ("important", "unimportant")}
        summary["judge"] = {side: {"truncated": sum(v is True for v in vs), "judged": sum(v is not None for v in vs),
                                   "no_verdict": sum(v is None for v in vs)} for side, vs in said.items()}
        report += [f"## 5. Truncation judge (`{cfg.judge_model_name_or_path}`, App. B; {thresholds})", "",
                   "| segments | cut off | judged | no verdict |", "|---|---|---|---|"]
        report += [f"| {s} | {v['truncated']} ({100 * v['truncated'] / max(v['judged'], 1):.0f}%) | {v['judged']} | {v['no_verdict']} |"
                   for s, v in summary["judge"].items()]
        report += [""]

    if "position" in steps:
        pos = {side: np.concatenate([analysis.positions(imp[t["id"]] if side == "important" else ~imp[t["id"]], t["answer_at"])
                                     for t in traces]) for side in ("important", "unimportant")}
        summary["position"] = {side: {"before": int((p < 0).sum()), "at": int((p == 0).sum()), "after": int((p > 0).sum())}
                               for side, p in pos.items()}
        summary["position"]["traces_stating_the_answer"] = sum(t["answer_at"] is not None for t in traces)
        report += [f"## 6. Position relative to the first segment stating the answer (App. A; {thresholds})", "",
                   "| segments | before | at | after |", "|---|---|---|---|"]
        report += [f"| {s} | {v['before']} | {v['at']} | {v['after']} |" for s, v in summary["position"].items() if isinstance(v, dict)]

        def draw(ax):
            for side, p in pos.items():
                if len(p):
                    ax.hist(p, bins=np.arange(p.min() - 0.5, p.max() + 1.5), alpha=0.5, label=side)
            ax.set(xlabel="segments after the first answer statement", ylabel="segments")
            ax.legend(fontsize=8)

        report += ["", f"{summary['position']['traces_stating_the_answer']} of {len(traces)} traces state the answer in "
                       f"their thinking.", "", f"![]({_plot(out / 'position.png', draw)})", ""]

    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    (out / "report.md").write_text("\n".join(report) + "\n")
    return summary
