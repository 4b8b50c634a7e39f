"""The six evaluation sets: hub name + field mapping, or a local jsonl, into one item shape.

GPQA-Diamond's options are shuffled with a fixed seed per question: in common copies the correct
option is always listed first ("A"), which a letter-biased model would exploit.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from data.loaders import read_jsonl
from data.prompts import INSTRUCTION

CHOICE_INSTRUCTION = "\nPlease reason step by step, and put the letter of your choice (A, B, C or D) within \\boxed{}."


@dataclass(frozen=True)
class Spec:
    hub: str  # hub dataset name (real runs)
    split: str
    question: str  # field names
    answer: str
    kind: str = "math"  # or "choice"
    id: str | None = None
    samples: int = 6  # the paper's n for pass@1 with sampling


BENCHMARKS: dict[str, Spec] = {
    "math500": Spec("HuggingFaceH4/MATH-500", "test", "problem", "answer", id="unique_id"),
    "aime24": Spec("HuggingFaceH4/aime_2024", "train", "problem", "answer", id="id", samples=32),
    "amc23": Spec("math-ai/amc23", "test", "question", "answer", id="id", samples=32),
    "gpqa_diamond": Spec("fingertap/GPQA-Diamond", "test", "question", "answer", kind="choice", id="id"),
    "minerva_math": Spec("math-ai/minervamath", "test", "question", "answer"),
    "olympiadbench": Spec("math-ai/olympiadbench", "test", "question", "answer", id="id"),
    # held-out synthetic problems of the quickstart (data.synthetic), local only
    "synthetic": Spec("", "", "question", "answer", id="id", samples=4),
}


@dataclass(frozen=True)
class Item:
    benchmark: str
    id: str
    question: str  # without the instruction; prompts.render_prompt adds it
    answer: str
    kind: str

    @property
    def instruction(self) -> str:
        return CHOICE_INSTRUCTION if self.kind == "choice" else INSTRUCTION


_OPTION = re.compile(r"^([A-D])\. (.*)$", re.MULTILINE)


def shuffle_choices(question: str, answer: str, seed: int, key: str) -> tuple[str, str]:
    """Reorder 'A. ..' to 'D. ..' options with a seed per question; returns (question, new letter)."""
    options = _OPTION.findall(question)
    if len(options) != 4:
        raise ValueError(f"question {key}: expected options A-D on their own lines, found {len(options)}")
    stem = question[: _OPTION.search(question).start()].rstrip()
    texts = [t for _, t in options]
    right = texts["ABCD".index(answer.strip().upper())]
    random.Random(f"{seed}-{key}").shuffle(texts)
    body = "\n".join(f"{letter}. {t}" for letter, t in zip("ABCD", texts))
    return f"{stem}\n\n{body}", "ABCD"[texts.index(right)]


def _strip_instruction(q: str) -> str:
    # some local copies carry their own instruction; ours is added by the prompt builder
    return re.sub(r"\n*Please reason step[- ]by[- ]step.*$", "", q, flags=re.DOTALL).rstrip()


def load_benchmark(name: str, path: str | Path | None = None, limit: int | None = None, seed: int = 0) -> list[Item]:
    """Items of ``name`` from ``path`` (jsonl) or, without it, from the hub."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; use one of {sorted(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    if path is not None:
        rows = list(read_jsonl(path))
    else:
        import datasets

        rows = list(datasets.load_dataset(spec.hub, split=spec.split))
    items = []
    for i, row in enumerate(rows[:limit]):
        q = row.get(spec.question) or row.get("problem") or row.get("question")
        a = row.get(spec.answer)
        if q is None or a is None:
            raise ValueError(f"{name} row {i}: missing '{spec.question}' or '{spec.answer}'; check the field mapping")
        key = str(row.get(spec.id, i)) if spec.id else str(i)
        a = str(a)
        if isinstance(row.get(spec.answer), float) and row[spec.answer].is_integer():
            a = str(int(row[spec.answer]))  # AMC stores 27.0
        q = _strip_instruction(q)
        if spec.kind == "choice":
            q, a = shuffle_choices(q, a, seed, key)
        items.append(Item(name, key, q, a, spec.kind))
    return items
