"""The study's selection benchmark: does a score tell planted (redundant) middle segments from genuine ones?

Per middle segment of each attributed synthetic trace (the ends are kept by every selector, and are never
planted), every score below predicts "planted" (higher = more likely planted); its AUROC against the planted
truth gets a 95% bootstrap interval over traces (a trace's segments share its attribution), overall and per
planted kind (that kind's segments against the genuine ones). Pure functions: trace views in, numbers out.
"""
from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np

from common.stats import auroc, cluster_bootstrap_ci

# name -> (what it reads, the paper's direction): higher value = predicted planted
SCORES = {
    "low strength (eq. 4)": "the normalised strength, negated",
    "high consistency (eq. 3)": "consistency: eq. 7 drops segments above beta",
    "paper's rule masks it (eqs. 5-7)": "1 when tau 0.7 / beta 0.8 leave the segment out",
    "high strength alone masks it (eqs. 5-6)": "1 when top-k* by strength leaves it out",
    "low segment perplexity (Table 3)": "the perplexity rise of the rest when the segment is cut, negated",
    "low segment entropy (Table 3)": "the mean predictive entropy, negated",
    "low confidence gain (Table 3)": "the forced-answer log-prob gain, negated",
    "random": "a seeded uniform draw per segment: the chance line",
}


def middle_segments(views: dict, kinds: dict[str, list[str]], selection, seed: int = 0) -> list[dict]:
    """Per trace (``views``: id -> TraceView with planted truth; ``kinds``: id -> kind per segment;
    ``selection``: SelectionArguments), its middle segments' truth, kind, token count, consistency and
    the value of every score in SCORES."""
    from attribution.selection import select

    out = []
    for rid, v in views.items():
        mid = slice(1, v.n_segments - 1)
        s = v.scores
        masked = {name: ~select(v, replace(selection, selector=sel)).segment_selected
                  for name, sel in (("paper", "paper"), ("strength", "high_strength_segments"))}
        feature = lambda k: -np.asarray(v.features[k], dtype=float) if k in v.features else None  # noqa: E731
        values = {"low strength (eq. 4)": -s.norm_strength, "high consistency (eq. 3)": s.consistency,
                  "paper's rule masks it (eqs. 5-7)": masked["paper"].astype(float),
                  "high strength alone masks it (eqs. 5-6)": masked["strength"].astype(float),
                  "low segment perplexity (Table 3)": feature("segment_perplexity"),
                  "low segment entropy (Table 3)": feature("segment_entropy"),
                  "low confidence gain (Table 3)": feature("confidence_gain"),
                  "random": np.random.default_rng([seed, zlib.crc32(rid.encode())]).random(v.n_segments)}
        out.append({"id": rid, "planted": v.planted[mid], "kind": np.asarray(kinds[rid][mid]),
                    "tokens": v.segment_tokens[mid], "consistency": s.consistency[mid],
                    "scores": {k: x[mid] for k, x in values.items() if x is not None}})
    return out


def _auroc(traces: list[dict], score: str, kind: str | None) -> float | None:
    """AUROC of ``score`` over the pooled middle segments of ``traces``: planted (or only ``kind``) vs genuine."""
    keep = [np.ones(len(t["kind"]), dtype=bool) if kind is None else np.isin(t["kind"], ["genuine", kind]) for t in traces]
    if not any(k.any() for k in keep):
        return None
    values = np.concatenate([t["scores"][score][k] for t, k in zip(traces, keep)])
    truth = np.concatenate([t["planted"][k] for t, k in zip(traces, keep)])
    return auroc(values, truth)


def benchmark(traces: list[dict], resamples: int = 2000, seed: int = 0) -> dict:
    """Per score: AUROC with its 95% interval over traces, overall and per planted kind; None where a
    class is missing (never NaN)."""
    from data.synthetic import PLANTED

    kinds = [k for k in PLANTED if any((t["kind"] == k).any() for t in traces)]
    out = {}
    for score in SCORES:
        if not all(score in t["scores"] for t in traces):
            continue

        def cell(kind):
            value = _auroc(traces, score, kind)
            lo, hi = cluster_bootstrap_ci(traces, lambda ts: _auroc(ts, score, kind), resamples, seed)
            return {"auroc": value, "ci": [lo, hi]}

        out[score] = {**cell(None), "by_kind": {k: cell(k) for k in kinds}}
    return out


def counts(traces: list[dict], beta: float) -> dict:
    """Traces, middle segments, planted ones by kind; the median tokens of genuine and planted ones, and
    the share of each whose consistency is above ``beta`` (eq. 7 drops those)."""
    cat = lambda key: np.concatenate([t[key] for t in traces]) if traces else np.array([])  # noqa: E731
    kind, tokens, consistency = cat("kind"), cat("tokens"), cat("consistency")
    classes = {"genuine": kind == "genuine", "planted": kind != "genuine"}
    of = lambda fn: {c: float(fn(m)) if m.any() else None for c, m in classes.items()}  # noqa: E731
    return {"traces": len(traces), "segments": int(len(kind)),
            "by_kind": {k: int((kind == k).sum()) for k in np.unique(kind)},
            "median_tokens": of(lambda m: np.median(tokens[m])),
            "above_beta": of(lambda m: np.mean(consistency[m] > beta))}
