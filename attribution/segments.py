"""Split a chain of thought into segments at transition keywords (paper Sec. 3.1).

A boundary sits at the ``\\n\\n`` before a keyword, so the keyword opens the segment it starts and
the segments join back to the exact trace. Keywords match whole words only (``\\n\\nBut`` does not
split ``\\n\\nButter``); a longer keyword wins over its prefix.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from common.config import KEYWORD_SETS



@dataclass(frozen=True)
class Segment:
    index: int
    start: int  # character span in the trace, end exclusive
    end: int
    text: str
    keyword: str | None  # the keyword that opened it (None for the first segment)


def resolve_keywords(keywords: str | Sequence[str]) -> tuple[str, ...]:
    """'paper', 'fine', or an explicit list (with or without the leading blank line)."""
    if isinstance(keywords, str):
        if keywords not in KEYWORD_SETS:
            raise ValueError(f"unknown keyword set {keywords!r}; use one of {sorted(KEYWORD_SETS)} or a list")
        return KEYWORD_SETS[keywords]
    words = tuple(k.lstrip("\n") for k in keywords)
    if not words or any(not w for w in words):
        raise ValueError(f"keyword list {list(keywords)!r} is empty or holds an empty keyword")
    return words


def _pattern(keywords: tuple[str, ...]) -> re.Pattern:
    alternatives = "|".join(re.escape(k) for k in sorted(set(keywords), key=len, reverse=True))
    return re.compile(rf"\n\n(?P<kw>{alternatives})(?![A-Za-z0-9])")


def split_segments(trace: str, keywords: str | Sequence[str] = "paper") -> list[Segment]:
    """Segments of ``trace``; ``"".join(s.text for s in segments) == trace`` always holds."""
    pattern = _pattern(resolve_keywords(keywords))
    cuts = [m.start() for m in pattern.finditer(trace) if m.start() > 0]
    words = {m.start(): m.group("kw") for m in pattern.finditer(trace)}
    bounds = [0, *cuts, len(trace)]
    segments = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        segments.append(Segment(i, a, b, trace[a:b], words.get(a)))
    return segments


def segments_from_spans(trace: str, spans: list[list[int]]) -> list[Segment]:
    """Segments at stored character spans (an attribution row's), so later stages never re-split."""
    return [Segment(i, a, b, trace[a:b], None) for i, (a, b) in enumerate(spans)]
