"""Sec. 3's analyses as pure functions over per-segment arrays (the model work is attribution.analyze).

- redundancy (Fig. 1): how few segments hold most of the attribution strength, per trace;
- segment classes (Figs. 2, 4): high/low strength x moderate/high consistency, and the important
  segments of eqs. 5-7 (at the analysis thresholds, Sec. 3.1: tau 0.8, beta 0.95);
- the tau/beta search (App. D): shares selected, the confidence gap, the false-negative rate;
- linguistic profile (Fig. 3): BLEU of a segment against the segments before it (sacrebleu);
- the truncation judge's verdict (App. B), and positions relative to the first answer (App. A).
"""
from __future__ import annotations

import re

import numpy as np

from .selection import top_k_star

CLASSES = ("high strength, moderate consistency", "high strength, high consistency",
           "low strength, moderate consistency", "low strength, high consistency")


def cumulative_curve(norm_strength, points: int = 10) -> np.ndarray:
    """(points,) share of a trace's attribution strength held by its strongest segments, when those
    are the top 1/points, 2/points, ..., all of its segments (rounded up to whole segments)."""
    s = np.sort(np.asarray(norm_strength, dtype=float))[::-1]
    total = s.sum()
    cum = np.cumsum(s) / total if total > 0 else np.arange(1, len(s) + 1) / len(s)
    k = np.ceil(np.arange(1, points + 1) / points * len(s)).astype(int)
    return cum[k - 1]


def reach(curve: np.ndarray, level: float = 0.8) -> float:
    """The smallest share of segments (on the curve's grid) holding ``level`` of the strength."""
    hit = np.flatnonzero(np.asarray(curve) >= level - 1e-12)
    return float((hit[0] + 1) / len(curve)) if len(hit) else 1.0


def counted_segments(n_segments: int, exclude_ends: bool) -> np.ndarray:
    """(K,) bool: the segments Sec. 3's comparisons count, all or all but the first and last (which every
    selector keeps)."""
    counted = np.ones(n_segments, dtype=bool)
    if exclude_ends:
        counted[[0, -1]] = False
    return counted


def segment_classes(norm_strength, consistency, tau: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """(class index into CLASSES, important) per segment: high strength = in the top k* reaching tau
    (eqs. 5-6), high consistency = above beta; important = high strength and consistency <= beta
    (eq. 7), the first and last segments not forced in (the analysis asks what the criterion picks)."""
    high = top_k_star(np.asarray(norm_strength, dtype=float), tau)
    consistent = np.asarray(consistency, dtype=float) > beta
    return 2 * (~high) + consistent, high & ~consistent


def class_means(values, classes) -> dict[str, tuple[float | None, int]]:
    """Mean of ``values`` per segment class, with the number of segments: {class: (mean or None, n)}."""
    values, classes = np.asarray(values, dtype=float), np.asarray(classes)
    return {name: (float(values[classes == i].mean()) if np.any(classes == i) else None, int(np.sum(classes == i)))
            for i, name in enumerate(CLASSES)}


def search(traces: list[dict], taus, betas, top_share: float = 0.1) -> list[dict]:
    """The tau/beta grid over ``traces`` (each with per-segment ``norm_strength``, ``consistency``,
    ``gain``, ``tokens`` and optionally ``counted``, the segments compared; default all): shares of
    counted segments and tokens important, the mean confidence gain of important minus unimportant
    segments (None when a side is empty), and the false-negative rate (of the ``top_share`` counted
    segments with the highest gain, pooled over traces, the share the split calls unimportant)."""
    counted = [np.asarray(t.get("counted", np.ones(len(t["gain"]), dtype=bool))) for t in traces]
    gain = np.concatenate([t["gain"][c] for t, c in zip(traces, counted)])
    tokens = np.concatenate([t["tokens"][c] for t, c in zip(traces, counted)])
    top = gain >= np.quantile(gain, 1 - top_share)
    rows = []
    for tau in taus:
        for beta in betas:
            imp = np.concatenate([segment_classes(t["norm_strength"], t["consistency"], tau, beta)[1][c]
                                  for t, c in zip(traces, counted)])
            gap = float(gain[imp].mean() - gain[~imp].mean()) if imp.any() and (~imp).any() else None
            rows.append({"tau": tau, "beta": beta, "segments": float(imp.mean()), "tokens": float(tokens[imp].sum() / tokens.sum()),
                         "gain_gap": gap, "false_negative_rate": float(np.mean(~imp[top]))})
    return rows


def greedy(rows: list[dict], vary: str, fixed: dict) -> float | None:
    """Our reading of the paper's greedy choice (Fig. 4): along the grid of ``vary`` ("tau" or "beta")
    with the other key at ``fixed``, raise it while the gain gap of important over unimportant segments
    still grows; the value where it stops (None when no gap is defined)."""
    line = sorted((r for r in rows if all(r[k] == v for k, v in fixed.items()) and r["gain_gap"] is not None),
                  key=lambda r: r[vary])
    for a, b in zip(line, line[1:]):
        if b["gain_gap"] <= a["gain_gap"]:
            return a[vary]
    return line[-1][vary] if line else None


def bleu_vs_preceding(texts: list[str]) -> np.ndarray:
    """(K,) sentence BLEU (sacrebleu, 0-1) of each segment against all the segments before it as
    references; NaN for the first segment, which has none."""
    import sacrebleu

    out = np.full(len(texts), np.nan)
    for k in range(1, len(texts)):
        out[k] = sacrebleu.sentence_bleu(texts[k], list(texts[:k])).score / 100
    return out


JUDGE_PROMPT = ("Here is one step taken from a model's reasoning on a math problem.\n\n"
                "Step:\n\"\"\"\n{segment}\n\"\"\"\n\n"
                "Is this step cut off, that is, does it stop before its thought or computation is finished? "
                "Answer Yes or No.")
JUDGE_FORCE = "\n\nFinal answer (Yes or No):"  # appended when the judge has not answered within its budget


def parse_judge(text: str) -> bool | None:
    """The judge's verdict: True for cut off (Yes), False (No), None when it gave neither. Reasoning
    inside <think>...</think> is skipped; the last Yes/No after it counts."""
    text = text.rsplit("</think>", 1)[-1]
    words = re.findall(r"\b(yes|no)\b", text, flags=re.IGNORECASE)
    return None if not words else words[-1].lower() == "yes"


def positions(important, answer_at: int | None) -> np.ndarray:
    """Offsets of the ``important`` (bool, K) segments from the first segment that states the answer
    (``answer_at``; negative = before it); empty when the trace never states it."""
    idx = np.flatnonzero(np.asarray(important))
    return idx - answer_at if answer_at is not None else np.array([], dtype=int)
