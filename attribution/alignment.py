"""Exact segment-to-token alignment: tokenize the full text once and map tokens to segments.

Each token belongs to the part (prompt, segment k, tail) that holds its first character, read from
the fast tokenizer's offset mapping. Prefixes are never re-tokenized on their own: BPE merges across
a boundary (``.\\n\\n`` + ``Wait``) and separate tokenization would drift by a token there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.prompts import PromptedText

from .segments import Segment

PROMPT, TAIL = -1, -2  # token_segment codes for tokens outside the trace


@dataclass
class AlignedText:
    input_ids: np.ndarray  # (T,) int64
    offsets: np.ndarray  # (T, 2) character spans in the full text
    token_segment: np.ndarray  # (T,) segment index, PROMPT or TAIL
    n_segments: int
    answer_positions: np.ndarray  # token positions of the gold answer in the tail (may be empty)

    @property
    def trace_positions(self) -> np.ndarray:
        return np.flatnonzero(self.token_segment >= 0)

    def segment_token_spans(self) -> list[tuple[int, int]]:
        """[start, end) token span of each segment (empty spans for segments with no token)."""
        pos = self.trace_positions
        seg = self.token_segment[pos]  # non-decreasing: segments follow each other
        lo = np.searchsorted(seg, np.arange(self.n_segments), side="left")
        hi = np.searchsorted(seg, np.arange(self.n_segments), side="right")
        return [(int(pos[a]), int(pos[b - 1]) + 1) if b > a else (0, 0) for a, b in zip(lo, hi)]


def align(tokenizer, pt: PromptedText, segments: list[Segment]) -> AlignedText:
    """Tokenize ``pt.text`` once (no added special tokens) and assign every token a part."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("alignment needs a fast tokenizer (offset mapping); load it with use_fast=True")
    enc = tokenizer(pt.text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    first_char = offsets[:, 0]
    seg_starts = np.asarray([pt.trace_start + s.start for s in segments], dtype=np.int64)
    token_segment = np.searchsorted(seg_starts, first_char, side="right") - 1
    token_segment[first_char < pt.trace_start] = PROMPT
    token_segment[first_char >= pt.trace_end] = TAIL
    answer_positions = np.zeros(0, dtype=np.int64)
    if pt.answer_span is not None:
        a, b = pt.answer_span
        # tokens that overlap the answer characters (the answer's own tokens, merges at its edges included)
        answer_positions = np.flatnonzero((offsets[:, 1] > a) & (offsets[:, 0] < b))
    return AlignedText(ids, offsets, token_segment.astype(np.int64), len(segments), answer_positions)
