"""Segment scores from token attributions (paper eqs. 3-4). Pure functions on arrays.

For segment S with N tokens and token attributions IG_t:
  Strength(S)    = sum_t |IG_t| / sqrt(N)                      (eq. 3)
  Consistency(S) = |sum_t IG_t| / sum_t |IG_t|                 (eq. 3)
  NormStrength(S) = Strength(S) / sum_S' Strength(S')          (eq. 4)

Zero rule (no NaN): a segment with no tokens or all-zero attribution has strength 0 and
consistency 1 (it carries no mixed evidence, so the consistency filter never keeps it on its own);
when every segment of a trace has strength 0, all normalised strengths are 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SegmentScores:
    n_tokens: np.ndarray  # (K,) int
    abs_sum: np.ndarray  # (K,) sum |IG|
    signed_sum: np.ndarray  # (K,) sum IG
    strength: np.ndarray  # (K,) eq. 3
    norm_strength: np.ndarray  # (K,) eq. 4
    consistency: np.ndarray  # (K,) eq. 3

    def to_lists(self) -> dict[str, list]:
        return {k: getattr(self, k).tolist() for k in self.__dataclass_fields__}


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
