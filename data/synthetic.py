"""Small math word problems with R1-style traces and planted redundancy of known position.

Each trace is a chain of keyword-opened segments (paper keyword list): genuine reasoning steps, plus
planted redundant ones of three kinds, recorded in ``meta["segments"]`` with their character spans:

- ``repeat``: a verbatim repeat of an earlier step's computation;
- ``abandoned``: an alternative approach cut off mid-computation;
- ``restatement``: a superficial rewording of the result once it is known.

The ground truth lets the quickstart measure how often the selector masks planted segments.
"""
from __future__ import annotations

import random

from .records import Record, write_jsonl

NAMES = ["Tom", "Ana", "Ravi", "Mia", "Kofi", "Lena", "Omar", "Yuki", "Sara", "Ivan"]
ITEMS = ["apples", "marbles", "stickers", "pencils", "coins", "cards", "shells", "books"]
KINDS = ("genuine", "repeat", "abandoned", "restatement")
# how each planted kind opens: a generated text can be searched for them (planted_counts)
OPENINGS = {"repeat": "\n\nBut wait, let me redo that first part.", "abandoned": "\n\nAlternatively, ",
            "restatement": "\n\nHowever, in other words, the result is"}


def _problem(rng: random.Random) -> dict:
    """One problem: question, two computation steps, a check, the answer and an abandoned attempt."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randint(2, 9), rng.randint(3, 12)
        c = rng.randint(1, a * b - 1)
        ans = a * b - c
        return dict(
            question=f"{name} has {a} boxes with {b} {item} in each box. {name} gives away {c} {item}. "
                     f"How many {item} does {name} have left?",
            setup=f"{name} starts with {a} boxes of {b} {item}",
            step1=f"{a} boxes times {b} {item} per box is {a} * {b} = {a * b} {item}",
            step2=f"giving away {c} leaves {a * b} - {c} = {ans} {item}",
            check=f"{ans} + {c} = {a * b}, which matches {a} * {b}",
            abandoned=f"I could count box by box: {b}, {2 * b}, {3 * b}, and then",
            unit=item, answer=ans, name=name)
    if kind == 1:
        a, b = rng.randint(3, 20), rng.randint(2, 15)
        ans = 2 * (a + b)
        return dict(
            question=f"A rectangle has length {a} and width {b}. What is its perimeter?",
            setup=f"the rectangle is {a} long and {b} wide",
            step1=f"one length plus one width is {a} + {b} = {a + b}",
            step2=f"the perimeter counts each side twice, so it is 2 * {a + b} = {ans}",
            check=f"{a} + {b} + {a} + {b} = {ans}",
            abandoned=f"the perimeter is 2 * {a} + 2 * {b}, which is {2 * a} plus",
            unit="units", answer=ans, name="the rectangle")
    if kind == 2:
        a, b = rng.randint(2, 8), rng.randint(2, 9)
        c = rng.choice([x for x in (20, 50, 100) if x > a * b])
        ans = c - a * b
        return dict(
            question=f"{name} buys {a} {item} at {b} dollars each and pays with a {c}-dollar bill. "
                     f"How many dollars of change does {name} get?",
            setup=f"{name} buys {a} {item} at {b} dollars each",
            step1=f"the cost is {a} * {b} = {a * b} dollars",
            step2=f"the change is {c} - {a * b} = {ans} dollars",
            check=f"{a * b} + {ans} = {c}, the value of the bill",
            abandoned=f"I could subtract the price of each of the {item} from {c} one at a time: {c} - {b} = {c - b}, then",
            unit="dollars", answer=ans, name=name)
    n = rng.randint(4, 30)
    ans = n * (n + 1) // 2
    return dict(
        question=f"What is the sum of the first {n} positive integers?",
        setup=f"I need 1 + 2 + ... + {n}",
        step1=f"pairing the first and last terms gives pairs that each sum to {n + 1}",
        step2=f"there are {n} terms, so the sum is {n} * {n + 1} / 2 = {ans}",
        check=f"the formula n(n+1)/2 with n = {n} gives {ans} again",
        abandoned="I could just add them in order: 1 + 2 = 3, 3 + 3 = 6, 6 + 4 =",
        unit="", answer=ans, name="the sum")


def make_trace(p: dict, rng: random.Random, plant: bool = True) -> tuple[str, list[dict]]:
    """Join genuine and (optionally) planted segments; returns the trace and per-segment metadata."""
    unit = f" {p['unit']}" if p["unit"] else ""
    genuine = [
        f"Okay, let me work through this. {p['setup'][0].upper() + p['setup'][1:]}. First, {p['step1']}.",
        f"\n\nWait, that is only part of it. Next, {p['step2']}.",
        f"\n\nAnother check: {p['check']}. So the final answer is \\boxed{{{p['answer']}}}.",
    ]
    pieces = [(genuine[0], "genuine"), (genuine[1], "genuine")]
    if plant:
        planted = [
            (f"{OPENINGS['repeat']} First, {p['step1']}.", "repeat"),
            (f"{OPENINGS['abandoned']}{p['abandoned']}", "abandoned"),
            (f"{OPENINGS['restatement']} {p['answer']}{unit}.", "restatement"),
        ]
        order = rng.sample(range(3), k=rng.randint(1, 3))
        # repeats and abandoned attempts go between the steps, restatements after the result is known
        for i in order:
            text, kind = planted[i]
            pieces.insert(1 if kind != "restatement" and rng.random() < 0.5 else len(pieces), (text, kind))
    pieces.append((genuine[2], "genuine"))
    trace, meta, at = "", [], 0
    for text, kind in pieces:
        meta.append({"start": at, "end": at + len(text), "kind": kind})
        trace += text
        at += len(text)
    return trace, meta


def planted_counts(text: str) -> dict[str, int]:
    """How many segments of each planted kind a text (a trace, or a trained model's answer) contains."""
    return {kind: text.count(opening) for kind, opening in OPENINGS.items()}


def generate(n: int, seed: int = 0, split: str = "train", plant: bool = True) -> list[Record]:
    """``n`` records; the same seed and split give the same records."""
    rng = random.Random(f"{seed}-{split}")
    records = []
    for i in range(n):
        p = _problem(rng)
        trace, segs = make_trace(p, rng, plant)
        records.append(Record(f"synth-{split}-{i}", p["question"], trace, str(p["answer"]), "synthetic",
                              {"segments": segs}))
    return records


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="Write synthetic R1-style traces with planted redundancy as jsonl.")
    p.add_argument("path")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train")
    a = p.parse_args(argv)
    print(write_jsonl(generate(a.n, a.seed, a.split), a.path))


if __name__ == "__main__":
    main()
