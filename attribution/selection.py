"""Segment scores (paper eqs. 3-4) and the selectors (eqs. 5-7 and the baselines). Pure functions on arrays.

For segment S with N tokens and token attributions IG_t:
  Strength(S)     = sum_t |IG_t| / sqrt(N)                     (eq. 3)
  Consistency(S)  = |sum_t IG_t| / sum_t |IG_t|                (eq. 3)
  NormStrength(S) = Strength(S) / sum_S' Strength(S')          (eq. 4)

Strength aggregation (App. C.4): ``sqrt_norm`` is eq. 3; ``sum`` is sum_t |IG_t|; ``top20_mean`` is the
mean |IG| of the segment's top 20% tokens (at least one).

Zero rule (no NaN): a segment with no tokens or all-zero attribution has strength 0 and
consistency 1 (it carries no mixed evidence, so the consistency filter never keeps it on its own);
when every segment of a trace has strength 0, all normalised strengths are 0.

Every selector takes a :class:`TraceView` and the recipe parameters its signature names (keyword
only, the values of common.config.SelectionArguments), and returns a :class:`Selection`: a token
mask over the full text, plus a segment mask for segment-level selectors. Every selector keeps the
first and last segments (paper App. C.4: "in deploying our method and all baselines").
"""
from __future__ import annotations

import inspect
import re
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from common.config import SELECTORS, STRENGTH_AGGREGATIONS, SelectionArguments


@dataclass
class SegmentScores:
    n_tokens: np.ndarray  # (K,) int
    abs_sum: np.ndarray  # (K,) sum |IG|
    signed_sum: np.ndarray  # (K,) sum IG
    strength: np.ndarray  # (K,) eq. 3
    norm_strength: np.ndarray  # (K,) eq. 4
    consistency: np.ndarray  # (K,) eq. 3


def _top20_mean(abs_ig: np.ndarray, seg: np.ndarray, n_segments: int) -> np.ndarray:
    out = np.zeros(n_segments)
    for k in range(n_segments):
        v = np.sort(abs_ig[seg == k])[::-1]
        if len(v):
            out[k] = v[: max(1, int(np.ceil(0.2 * len(v))))].mean()
    return out


def segment_scores(token_ig: np.ndarray, token_segment: np.ndarray, n_segments: int,
                   aggregation: str = "sqrt_norm") -> SegmentScores:
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
    if aggregation == "sqrt_norm":  # eq. 3
        strength = np.divide(abs_sum, np.sqrt(n), out=np.zeros(n_segments), where=n > 0)
    elif aggregation == "sum":
        strength = abs_sum
    elif aggregation == "top20_mean":
        strength = _top20_mean(np.abs(ig), seg, n_segments)
    else:
        raise ValueError(f"unknown strength aggregation {aggregation!r}; use {STRENGTH_AGGREGATIONS}")
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
    planted: np.ndarray | None = None  # (K,) bool: the ground truth of synthetic traces (redundant segments)

    @property
    def segment_tokens(self) -> np.ndarray:
        inside = self.token_segment >= 0
        return np.bincount(self.token_segment[inside], minlength=self.n_segments)[: self.n_segments]


def trace_view(record_id: str, trace: str, answer: str | None, spans: list[list[int]], attribution: dict | None,
               aggregation: str = "sqrt_norm", planted: list[bool] | None = None) -> TraceView:
    """What a selector looks at: segment texts from their character spans, and, with an attribution
    row, token IG, segment scores (``aggregation``: strength_aggregation) and features. Without one,
    only text-level selectors can run. ``planted``: which segments are redundant, where known."""
    texts = [trace[a:b] for a, b in spans]
    truth = None if planted is None else np.asarray(planted, dtype=bool)
    if attribution is None:
        return TraceView(np.zeros(0, dtype=np.int64), len(spans), segment_texts=texts, answer=answer, record_id=record_id,
                         planted=truth)
    token_segment = np.asarray(attribution["token_segment"], dtype=np.int64)
    token_ig = np.asarray(attribution["token_ig"], dtype=np.float64)
    return TraceView(token_segment, len(spans), token_ig, segment_scores(token_ig, token_segment, len(spans), aggregation), texts,
                     answer, {k: np.asarray(v) for k, v in attribution.get("features", {}).items()}, record_id, truth)


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
    """Random segments, seeded per record: the ends, plus segment_ratio of the other segments (App. C.4:
    the ends are kept in addition), or, with segment_ratio None, as many in all as the paper's selector
    keeps on that trace."""
    keep = _ends(view.n_segments, keep_second_last)
    others = np.flatnonzero(~keep)
    if segment_ratio is None:
        n_draw = int(paper(view, tau=tau, beta=beta, keep_second_last=keep_second_last).segment_selected.sum()) - int(keep.sum())
    else:
        n_draw = round(segment_ratio * len(others))
    rng = np.random.default_rng([selection_seed, zlib.crc32(view.record_id.encode())])
    keep[rng.permutation(others)[: max(n_draw, 0)]] = True
    return _from_segments(view, keep)


def _top_tokens(view: TraceView, values: np.ndarray, token_ratio: float, keep_second_last: bool) -> Selection:
    """The top token_ratio of trace tokens by ``values``, plus every token of the kept end segments."""
    inside = np.flatnonzero(view.token_segment >= 0)
    n = int(np.ceil(token_ratio * len(inside)))
    order = inside[np.argsort(-values[inside], kind="stable")][:n]
    tokens = _from_segments(view, _ends(view.n_segments, keep_second_last)).token_selected
    tokens[order] = True
    return Selection(tokens)


def _token_ig(view: TraceView) -> np.ndarray:
    if view.token_ig is None:
        raise ValueError(f"record {view.record_id!r}: this selector needs token IG; run attribution first")
    return view.token_ig


def high_abs_ig_tokens(view: TraceView, *, token_ratio: float, keep_second_last: bool) -> Selection:
    """Token-level baseline: the top token_ratio of trace tokens by |IG|, plus the end segments."""
    return _top_tokens(view, np.abs(_token_ig(view)), token_ratio, keep_second_last)


def high_ig_tokens(view: TraceView, *, token_ratio: float, keep_second_last: bool) -> Selection:
    """Token-level baseline: the top token_ratio of trace tokens by signed IG, plus the end segments."""
    return _top_tokens(view, _token_ig(view), token_ratio, keep_second_last)


def states_answer(text: str, answer: str) -> bool:
    """Whether ``text`` states ``answer`` as a result: a boxed value, or an "answer is / = / : ANSWER"
    conclusion; a mere mention ("there are 5 cases" for answer 5) is not one."""
    a = re.escape(answer.strip())
    end = r"(?![\w]|\.\d)"  # "16" is not "160" or "16.5"
    boxed = rf"\\boxed\{{\s*{a}\s*\}}"
    conclusion = rf"\banswer\b[^.\n]{{0,40}}?(?:\bis\b|=|:)\s*\**\s*\$?\s*{a}{end}"
    return re.search(f"{boxed}|{conclusion}", text, flags=re.IGNORECASE) is not None


def first_correct_solution(view: TraceView, *, keep_second_last: bool) -> Selection:
    """Every segment up to the first one that states the gold answer as a result, and the end segments."""
    if not view.answer:
        raise ValueError(f"record {view.record_id!r}: first_correct_solution needs the gold answer")
    ends = _ends(view.n_segments, keep_second_last)
    for k, text in enumerate(view.segment_texts):
        if states_answer(text, view.answer):
            return _from_segments(view, (np.arange(view.n_segments) <= k) | ends)
    return _from_segments(view, np.ones(view.n_segments, dtype=bool), note="answer never stated: kept all")


def _feature(view: TraceView, name: str) -> np.ndarray:
    if name not in view.features:
        raise ValueError(f"record {view.record_id!r}: selector {name!r} needs the per-segment feature "
                         f"{name!r}; add it to ig_features and rerun attribution")
    return np.asarray(view.features[name], dtype=np.float64)


def _by_feature(feature: str) -> Callable[..., Selection]:
    def select_by(view: TraceView, *, token_ratio: float, keep_second_last: bool) -> Selection:
        values = _feature(view, feature)
        # the ends, then segments by descending feature until >= token_ratio of trace tokens
        n_tok = view.segment_tokens
        keep = _ends(view.n_segments, keep_second_last)
        total = max(int(n_tok.sum()), 1)
        for k in np.argsort(-values, kind="stable"):
            if n_tok[keep].sum() / total >= token_ratio:
                break
            keep[k] = True
        return _from_segments(view, keep)

    select_by.__name__ = feature
    select_by.__doc__ = f"Segments by descending {feature} until token_ratio of trace tokens are kept."
    return select_by


def confidence_gain(view: TraceView, *, keep_second_last: bool) -> Selection:
    """The segments whose appending raises the answer confidence (gain > 0, paper Sec. 3.1), and the ends."""
    return _from_segments(view, (_feature(view, "confidence_gain") > 0) | _ends(view.n_segments, keep_second_last))


def oracle(view: TraceView) -> Selection:
    """The ceiling on synthetic traces: every segment but the planted redundant ones (ends always kept)."""
    if view.planted is None:
        raise ValueError(f"record {view.record_id!r}: the oracle selector needs the planted-segment ground truth "
                         f"(meta.segments of data.synthetic traces, matching the record's segments)")
    return _from_segments(view, ~view.planted | _ends(view.n_segments, False))


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
    "confidence_gain": confidence_gain,
    "oracle": oracle,
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
