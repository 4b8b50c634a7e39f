"""The one record shape of the pipeline, and its validation.

A record is ``{id, question, trace, answer, source, completion}`` plus free ``meta``. ``trace`` is the
reasoning text (the thinking) that is segmented and attributed, without chat tokens; ``completion``
is the exact text that followed it in the response (``"\n</think>\n\nSo ... \\boxed{5}."``; empty
for solution-style traces such as LIMO's), trained whole with the final EOS. Bad records raise :class:`RecordError` naming the
record and the field, or (``on_bad="skip"``) are skipped and counted in a :class:`LoadReport`.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

REQUIRED_FIELDS = ("id", "question", "trace", "answer")


class RecordError(ValueError):
    """A record that cannot enter the pipeline; the message names the record and the field.

    ``reason`` is the short form counted in a :class:`LoadReport` when records are skipped.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class Record:
    id: str
    question: str
    trace: str
    answer: str | None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    completion: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadReport:
    """What a loader kept and what it skipped, by reason: nothing is dropped silently."""

    source: str
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_ids: dict[str, list[str]] = field(default_factory=dict)  # reason -> where (file, line or index, id)

    @property
    def rows(self) -> int:
        """Every row read: kept + skipped."""
        return self.kept + sum(self.skipped.values())

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.skipped_ids.setdefault(reason, []).append(where)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rows": self.rows, "kept": self.kept, "skipped": dict(self.skipped),
                "skipped_ids": self.skipped_ids}

    def summary(self) -> str:
        parts = [f"{self.source}: {self.rows} rows, kept {self.kept}"]
        if self.skipped:
            parts.append("skipped " + ", ".join(f"{n} ({why})" for why, n in sorted(self.skipped.items())))
        return "; ".join(parts)


def check_record(rec: Record, where: str, require_answer: bool = True) -> None:
    """Raise RecordError if a required field is missing or empty."""
    for name in REQUIRED_FIELDS:
        if name == "answer" and not require_answer:
            continue
        value = getattr(rec, name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise RecordError(
                f"{where}: field '{name}' is missing or empty. Fix the source, map the field with "
                f"`fields` (e.g. trace: solution), or set on_bad: skip to skip such records.",
                reason=f"missing or empty '{name}'",
            )


def validated(
    records: Iterable[tuple[str, Record | RecordError]],
    report: LoadReport,
    on_bad: str = "raise",
    require_answer: bool = True,
) -> Iterator[Record]:
    """Yield good records; raise or skip-and-count bad ones (missing fields, duplicate ids)."""
    if on_bad not in ("raise", "skip"):
        raise ValueError(f"on_bad must be 'raise' or 'skip', got {on_bad!r}")
    seen: dict[str, str] = {}
    for where, rec in records:
        try:
            if isinstance(rec, RecordError):
                raise rec
            check_record(rec, where, require_answer)
            if rec.id in seen:
                raise RecordError(
                    f"{where}: duplicate id {rec.id!r} (first seen at {seen[rec.id]}). Give records unique "
                    f"ids, or set on_bad: skip to keep only the first.",
                    reason="duplicate id",
                )
        except RecordError as err:
            if on_bad == "raise":
                raise
            report.skip(err.reason, where)
            continue
        seen[rec.id] = where
        report.kept += 1
        yield rec


def write_jsonl(records: list[Record], path: str | Path) -> Path:
    """Write records as jsonl (the format every loader reads back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    return path
