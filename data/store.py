"""Append-only jsonl with resume: a killed job loses at most the row it was writing, never duplicates.

Each row is written whole and fsynced; on reopen a torn last line (the kill landed mid-write) is cut
off, and the keys already present are skipped by the caller.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator


class JsonlStore:
    def __init__(self, path: str | Path, key: str = "id"):
        self.path, self.key = Path(path), key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set = set()
        if self.path.exists():
            self._repair()
            for row in self.rows():
                self.done.add(row[key])

    def _repair(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:  # drop the torn tail
                f.truncate(data.rfind(b"\n") + 1)

    def rows(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)

    def append(self, row: dict[str, Any]) -> None:
        if row[self.key] in self.done:
            raise ValueError(f"{self.path}: key {row[self.key]!r} is already stored; refusing a duplicate")
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done.add(row[self.key])
