"""Which parts of a trace to train on: the paper's selector and the baselines, one interface.

Every selector is a pure function of a :class:`TraceView` (arrays, no model) and returns a
:class:`Selection`: a token mask over the full text, plus a segment mask for segment-level selectors.
Model-derived baseline features (perplexity, entropy, confidence gain) are computed beforehand by
:mod:`attribution.features` and passed in ``view.features``.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .scores import SegmentScores


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


@dataclass
class Selection:
    token_selected: np.ndarray  # (T,) bool; False outside the trace
    segment_selected: np.ndarray | None = None  # (K,) bool for segment-level selectors
    note: str = ""


def _forced(k: int, keep_first: bool, keep_last: bool, keep_second_last: bool) -> np.ndarray:
    keep = np.zeros(k, dtype=bool)
    if k:
        keep[0] |= keep_first
        keep[-1] |= keep_last
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


def _need_scores(view: TraceView, name: str) -> SegmentScores:
    if view.scores is None:
        raise ValueError(f"selector {name!r} needs IG segment scores; run attribution first")
    return view.scores


def paper(view: TraceView, tau: float = 0.7, beta: float = 0.8, keep_first: bool = True, keep_last: bool = True,
          keep_second_last: bool = False, consistency_filter: bool = True, **_) -> Selection:
    """Top-k* by normalised strength (eqs. 5-6), then consistency <= beta (eq. 7); ends always kept."""
    s = _need_scores(view, "paper")
    keep = top_k_star(s.norm_strength, tau)
    if consistency_filter:
        keep &= s.consistency <= beta
    return _from_segments(view, keep | _forced(view.n_segments, keep_first, keep_last, keep_second_last))


def high_strength_segments(view: TraceView, **kw) -> Selection:
    """Ablation: top-k* by strength without the consistency filter."""
    return paper(view, **{**kw, "consistency_filter": False})


def _rank_until_ratio(view: TraceView, priority: np.ndarray, token_ratio: float, keep_first=True, keep_last=True,
                      keep_second_last=False, **_) -> Selection:
    """Forced ends, then segments by descending priority until >= token_ratio of trace tokens."""
    n_tok = view.segment_tokens
    keep = _forced(view.n_segments, keep_first, keep_last, keep_second_last)
    total = max(int(n_tok.sum()), 1)
    for k in np.argsort(-np.asarray(priority, dtype=np.float64), kind="stable"):
        if n_tok[keep].sum() / total >= token_ratio:
            break
        keep[k] = True
    return _from_segments(view, keep)


def random_segments(view: TraceView, seed: int = 0, segment_ratio: float | None = None, **kw) -> Selection:
    """Random segments, seeded per record; as many as the paper's selector keeps (or segment_ratio)."""
    if segment_ratio is None:
        n_keep = int(paper(view, **kw).segment_selected.sum())
    else:
        n_keep = max(1, round(segment_ratio * view.n_segments))
    forced = _forced(view.n_segments, kw.get("keep_first", True), kw.get("keep_last", True),
                     kw.get("keep_second_last", False))
    rng = np.random.default_rng([seed, zlib.crc32(view.record_id.encode())])
    rest = rng.permutation(np.flatnonzero(~forced))[: max(n_keep - int(forced.sum()), 0)]
    keep = forced.copy()
    keep[rest] = True
    return _from_segments(view, keep)


def _top_tokens(view: TraceView, values: np.ndarray, token_ratio: float) -> Selection:
    inside = np.flatnonzero(view.token_segment >= 0)
    n = int(np.ceil(token_ratio * len(inside)))
    order = inside[np.argsort(-values[inside], kind="stable")][:n]
    tokens = np.zeros(len(view.token_segment), dtype=bool)
    tokens[order] = True
    return Selection(tokens)


def high_abs_ig_tokens(view: TraceView, token_ratio: float = 0.45, **_) -> Selection:
    """Token-level baseline: the top token_ratio of trace tokens by |IG|."""
    if view.token_ig is None:
        raise ValueError("selector 'high_abs_ig_tokens' needs token IG; run attribution first")
    return _top_tokens(view, np.abs(view.token_ig), token_ratio)


def high_ig_tokens(view: TraceView, token_ratio: float = 0.45, **_) -> Selection:
    """Token-level baseline: the top token_ratio of trace tokens by signed IG."""
    if view.token_ig is None:
        raise ValueError("selector 'high_ig_tokens' needs token IG; run attribution first")
    return _top_tokens(view, view.token_ig, token_ratio)


def first_correct_solution(view: TraceView, **_) -> Selection:
    """The first segment whose text states the gold answer, and every segment before it."""
    if not view.answer:
        raise ValueError(f"record {view.record_id!r}: first_correct_solution needs the gold answer")
    # the answer as a whole number/word: "16" must not match inside "160" or "2.16"
    pattern = re.compile(rf"(?<![\w.]){re.escape(view.answer.strip())}(?![\w]|\.\d)")
    for k, text in enumerate(view.segment_texts):
        if pattern.search(text):
            return _from_segments(view, np.arange(view.n_segments) <= k)
    return _from_segments(view, np.ones(view.n_segments, dtype=bool), note="answer never stated: kept all")


def _feature_selector(feature: str) -> Callable[..., Selection]:
    def select_by(view: TraceView, token_ratio: float = 0.45, **kw) -> Selection:
        if feature not in view.features:
            raise ValueError(f"selector {feature!r} needs per-segment feature {feature!r}; compute it with "
                             f"attribution.features before selection")
        return _rank_until_ratio(view, view.features[feature], token_ratio, **kw)

    select_by.__name__ = feature
    select_by.__doc__ = f"Segments by descending {feature} until token_ratio of trace tokens are kept."
    return select_by


def all_tokens(view: TraceView, **_) -> Selection:
    """Full-CoT SFT: every trace token."""
    return _from_segments(view, np.ones(view.n_segments, dtype=bool))


SELECTORS: dict[str, Callable[..., Selection]] = {
    "paper": paper,
    "high_strength_segments": high_strength_segments,
    "random_segments": random_segments,
    "high_abs_ig_tokens": high_abs_ig_tokens,
    "high_ig_tokens": high_ig_tokens,
    "first_correct_solution": first_correct_solution,
    "segment_perplexity": _feature_selector("segment_perplexity"),
    "segment_entropy": _feature_selector("segment_entropy"),
    "confidence_gain": _feature_selector("confidence_gain"),
    "all": all_tokens,
}
NEEDS_IG = {"paper", "high_strength_segments", "random_segments", "high_abs_ig_tokens", "high_ig_tokens"}
NEEDS_FEATURE = {"segment_perplexity", "segment_entropy", "confidence_gain"}


def select(name: str, view: TraceView, **params) -> Selection:
    """Run the selector called ``name`` (see SELECTORS) with the recipe's parameters."""
    if name not in SELECTORS:
        raise ValueError(f"unknown selector {name!r}; use one of {sorted(SELECTORS)}")
    return SELECTORS[name](view, **params)
