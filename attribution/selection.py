"""Segment scores (paper eqs. 3-4) and the selectors (eqs. 5-7 and the baselines). Pure functions on arrays.

For segment S with N tokens and token attributions IG_t:
  Strength(S)     = sum_t |IG_t| / sqrt(N)                     (eq. 3)
  Consistency(S)  = |sum_t IG_t| / sum_t |IG_t|                (eq. 3)
  NormStrength(S) = Strength(S) / sum_S' Strength(S')          (eq. 4)

Zero rule (no NaN): a segment with no tokens or all-zero attribution has strength 0 and
consistency 1 (it carries no mixed evidence, so the consistency filter never keeps it on its own);
when every segment of a trace has strength 0, all normalised strengths are 0.

Every selector takes a :class:`TraceView` and the recipe parameters its signature names (keyword
only, the values of common.config.SelectionArguments), and returns a :class:`Selection`: a token
mask over the full text, plus a segment mask for segment-level selectors. The first and last
segments are always kept.
"""
from __future__ import annotations

import inspect
import re
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from common.config import SELECTORS, SelectionArguments


@dataclass
class SegmentScores:
    n_tokens: np.ndarray  # (K,) int
    abs_sum: np.ndarray  # (K,) sum |IG|
    signed_sum: np.ndarray  # (K,) sum IG
    strength: np.ndarray  # (K,) eq. 3
    norm_strength: np.ndarray  # (K,) eq. 4
    consistency: np.ndarray  # (K,) eq. 3


def segment_scores(token_ig: np.ndarray, token_segment: np.ndarray, n_segments: int) -> SegmentScores:
    """Scores of segments 0..n_segments-1; tokens with token_segment < 0 (prompt, tail) are ignored."""
    token_ig = np.asarray(token_ig, dtype=np.float64)
    token_segment = np.asarray(token_segment)
    if token_ig.shape != token_segment.shape:
        raise ValueError(f"token_ig {token_ig.shape} and token_segment {token_segment.shape} differ in shape")
    inside = token_segment >= 0
    seg, ig = token_segment[inside], token_ig[inside]
    n = np.bincount(seg, minlength=n_segments)[:n_segments]
    abs_sum = np.bincount(seg, weights=np.abs(ig), minlength=n_segments)[:n_segments]
    signed = np.bincount(seg, weights=ig, minlength=n_segments)[:n_segments]
    strength = np.divide(abs_sum, np.sqrt(n), out=np.zeros(n_segments), where=n > 0)
    total = strength.sum()
    norm = strength / total if total > 0 else np.zeros(n_segments)
    consistency = np.divide(np.abs(signed), abs_sum, out=np.ones(n_segments), where=abs_sum > 0)
    return SegmentScores(n, abs_sum, signed, strength, norm, consistency)


@dataclass
class TraceView:
    token_segment: np.ndarray  # (T,) segment index of each token, < 0 outside the trace
    n_segments: int
    token_ig: np.ndarray | None = None  # (T,)
    scores: SegmentScores | None = None
    segment_texts: list[str] = field(default_factory=list)
    answer: str | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)  # per-segment, higher = more important
    record_id: str = ""

    @property
    def segment_tokens(self) -> np.ndarray:
        inside = self.token_segment >= 0
        return np.bincount(self.token_segment[inside], minlength=self.n_segments)[: self.n_segments]


def trace_view(record_id: str, trace: str, answer: str | None, spans: list[list[int]], attribution: dict | None) -> TraceView:
    """What a selector looks at: segment texts from their character spans, and, with an attribution
    row, token IG, segment scores and features. Without one, only text-level selectors can run."""
    texts = [trace[a:b] for a, b in spans]
    if attribution is None:
        return TraceView(np.zeros(0, dtype=np.int64), len(spans), segment_texts=texts, answer=answer, record_id=record_id)
    token_segment = np.asarray(attribution["token_segment"], dtype=np.int64)
    token_ig = np.asarray(attribution["token_ig"], dtype=np.float64)
    return TraceView(token_segment, len(spans), token_ig, segment_scores(token_ig, token_segment, len(spans)), texts,
                     answer, {k: np.asarray(v) for k, v in attribution.get("features", {}).items()}, record_id)


@dataclass
class Selection:
    token_selected: np.ndarray  # (T,) bool; False outside the trace
    segment_selected: np.ndarray | None = None  # (K,) bool for segment-level selectors
    note: str = ""


def _ends(k: int, keep_second_last: bool) -> np.ndarray:
    """The segments kept by every selector: first and last (and the second-to-last if asked)."""
    keep = np.zeros(k, dtype=bool)
    if k:
        keep[[0, -1]] = True
        if k >= 2:
            keep[-2] |= keep_second_last
    return keep


def _from_segments(view: TraceView, seg_mask: np.ndarray, note: str = "") -> Selection:
    inside = view.token_segment >= 0
    tokens = np.zeros(len(view.token_segment), dtype=bool)
    tokens[inside] = seg_mask[view.token_segment[inside]]
    return Selection(tokens, seg_mask, note)


def top_k_star(norm_strength: np.ndarray, tau: float) -> np.ndarray:
    """Eqs. 5-6: the fewest highest-strength segments whose cumulative normalised strength >= tau."""
    order = np.argsort(-norm_strength, kind="stable")  # ties: earlier segment first
    cum = np.cumsum(norm_strength[order])
    reached = np.flatnonzero(cum >= tau - 1e-12)
    k_star = reached[0] + 1 if len(reached) else 0  # all-zero trace: nothing reaches tau
    top = np.zeros(len(norm_strength), dtype=bool)
    top[order[:k_star]] = True
    return top


def _scores(view: TraceView) -> SegmentScores:
    if view.scores is None:
        raise ValueError(f"record {view.record_id!r}: this selector needs IG segment scores; run attribution first")
    return view.scores


def paper(view: TraceView, *, tau: float, beta: float, keep_second_last: bool) -> Selection:
    """Top-k* by normalised strength (eqs. 5-6) with consistency <= beta (eq. 7); ends always kept."""
    s = _scores(view)
    keep = top_k_star(s.norm_strength, tau) & (s.consistency <= beta)
    return _from_segments(view, keep | _ends(view.n_segments, keep_second_last))


def high_strength_segments(view: TraceView, *, tau: float, keep_second_last: bool) -> Selection:
    """Ablation: top-k* by strength without the consistency filter."""
    keep = top_k_star(_scores(view).norm_strength, tau)
    return _from_segments(view, keep | _ends(view.n_segments, keep_second_last))


def random_segments(view: TraceView, *, tau: float, beta: float, keep_second_last: bool, segment_ratio: float | None,
                    selection_seed: int) -> Selection:
    """Random segments, seeded per record; as many as the paper's selector keeps (or segment_ratio)."""
    if segment_ratio is None:
        n_keep = int(paper(view, tau=tau, beta=beta, keep_second_last=keep_second_last).segment_selected.sum())
    else:
        n_keep = max(1, round(segment_ratio * view.n_segments))
    keep = _ends(view.n_segments, keep_second_last)
    rng = np.random.default_rng([selection_seed, zlib.crc32(view.record_id.encode())])
    rest = rng.permutation(np.flatnonzero(~keep))[: max(n_keep - int(keep.sum()), 0)]
    keep[rest] = True
    return _from_segments(view, keep)


def _top_tokens(view: TraceView, values: np.ndarray, token_ratio: float) -> Selection:
    inside = np.flatnonzero(view.token_segment >= 0)
    n = int(np.ceil(token_ratio * len(inside)))
    order = inside[np.argsort(-values[inside], kind="stable")][:n]
    tokens = np.zeros(len(view.token_segment), dtype=bool)
    tokens[order] = True
    return Selection(tokens)


def _token_ig(view: TraceView) -> np.ndarray:
    if view.token_ig is None:
        raise ValueError(f"record {view.record_id!r}: this selector needs token IG; run attribution first")
    return view.token_ig


def high_abs_ig_tokens(view: TraceView, *, token_ratio: float) -> Selection:
    """Token-level baseline: the top token_ratio of trace tokens by |IG|."""
    return _top_tokens(view, np.abs(_token_ig(view)), token_ratio)


def high_ig_tokens(view: TraceView, *, token_ratio: float) -> Selection:
    """Token-level baseline: the top token_ratio of trace tokens by signed IG."""
    return _top_tokens(view, _token_ig(view), token_ratio)


def first_correct_solution(view: TraceView) -> Selection:
    """The first segment whose text states the gold answer, and every segment before it."""
    if not view.answer:
        raise ValueError(f"record {view.record_id!r}: first_correct_solution needs the gold answer")
    # the answer as a whole number/word: "16" must not match inside "160" or "2.16"
    pattern = re.compile(rf"(?<![\w.]){re.escape(view.answer.strip())}(?![\w]|\.\d)")
    for k, text in enumerate(view.segment_texts):
        if pattern.search(text):
            return _from_segments(view, np.arange(view.n_segments) <= k)
    return _from_segments(view, np.ones(view.n_segments, dtype=bool), note="answer never stated: kept all")


def _by_feature(feature: str) -> Callable[..., Selection]:
    def select_by(view: TraceView, *, token_ratio: float, keep_second_last: bool) -> Selection:
        if feature not in view.features:
            raise ValueError(f"record {view.record_id!r}: selector {feature!r} needs the per-segment feature "
                             f"{feature!r}; add it to ig_features and rerun attribution")
        # the ends, then segments by descending feature until >= token_ratio of trace tokens
        n_tok = view.segment_tokens
        keep = _ends(view.n_segments, keep_second_last)
        total = max(int(n_tok.sum()), 1)
        for k in np.argsort(-np.asarray(view.features[feature], dtype=np.float64), kind="stable"):
            if n_tok[keep].sum() / total >= token_ratio:
                break
            keep[k] = True
        return _from_segments(view, keep)

    select_by.__name__ = feature
    select_by.__doc__ = f"Segments by descending {feature} until token_ratio of trace tokens are kept."
    return select_by


def all_tokens(view: TraceView) -> Selection:
    """Full-CoT SFT: every trace token."""
    return _from_segments(view, np.ones(view.n_segments, dtype=bool))


# the implementation of every name in common.config.SELECTORS
IMPLEMENTATIONS: dict[str, Callable[..., Selection]] = {
    "paper": paper,
    "high_strength_segments": high_strength_segments,
    "random_segments": random_segments,
    "high_abs_ig_tokens": high_abs_ig_tokens,
    "high_ig_tokens": high_ig_tokens,
    "first_correct_solution": first_correct_solution,
    "segment_perplexity": _by_feature("segment_perplexity"),
    "segment_entropy": _by_feature("segment_entropy"),
    "confidence_gain": _by_feature("confidence_gain"),
    "all": all_tokens,
}
assert IMPLEMENTATIONS.keys() == SELECTORS.keys(), "every registered selector needs an implementation"


def parameters(name: str) -> tuple[str, ...]:
    """The SelectionArguments a selector takes (its keyword-only parameters)."""
    sig = inspect.signature(IMPLEMENTATIONS[name])
    return tuple(p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY)


def select(view: TraceView, cfg: SelectionArguments) -> Selection:
    """Run the recipe's selector with the parameters it declares."""
    return IMPLEMENTATIONS[cfg.selector](view, **{p: getattr(cfg, p) for p in parameters(cfg.selector)})


def selector_params(cfg: SelectionArguments) -> dict:
    """The parameter values the recipe's selector ran with (stored beside the labels)."""
    return {p: getattr(cfg, p) for p in parameters(cfg.selector)}
