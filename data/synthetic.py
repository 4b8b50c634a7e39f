"""Small word problems with R1-style traces and planted redundancy of known position and share.

A trace is a chain of keyword-opened segments (paper keyword list): the genuine steps of one of four
problem families a 135M model can learn (two-digit addition and subtraction by tens and ones, a times
table product, a rectangle's perimeter), and planted redundant segments of four kinds (paper Sec. 3),
recorded in ``meta["segments"]`` with their character spans:

- ``repeat``: a genuine step's computation done again;
- ``verify``: a check of a result already established;
- ``abandoned``: another approach, cut off mid-computation;
- ``restatement``: the result reworded once it is known.

Genuine and planted segments draw their opening keyword from the same list, so the opening word says
nothing about the kind; each planted kind has a fixed phrase after it (``MARKERS``), which lets
``planted_counts`` find the kinds in any text, a trained model's answers included. The number of
planted segments is drawn per trace (0 to ``max_planted``), so the planted share of a trace varies
from none to most of it. ``plant=False`` gives the clean traces (genuine steps only).

``verbosity="verbose"`` wraps every segment's computation in reasoning prose (``PROSE``), so middle
segments run to ~60-110 SmolLM2 tokens instead of ~20, as R1's do; kinds, markers, positions and
computations are those of the short traces, so the ground truth is unchanged. ``tail`` (a format
string with ``{answer}``) becomes each record's ``completion``: the study trains on the same answer
tail integrated gradients scores.

``verbosity="reflective"`` keeps the short traces' text but writes each genuine computation with a slip
caught and corrected inside its segment (``SLIP``), as the segments the paper finds important reflect;
the planted segments and the ground truth are the short traces'.
"""
from __future__ import annotations

import random
import re

from .records import Record, write_jsonl

NAMES = ["Tom", "Ana", "Ravi", "Mia", "Kofi", "Lena", "Omar", "Yuki", "Sara", "Ivan"]
ITEMS = ["apples", "marbles", "stickers", "pencils", "coins", "cards", "shells", "books"]
KINDS = ("genuine", "repeat", "verify", "abandoned", "restatement")
PLANTED = KINDS[1:]
# every segment after the first opens with one of these (all paper keywords), whatever its kind
OPENERS = ("Wait,", "But wait,", "Alternatively,", "However,", "Going back,", "Another thing:")
# the phrase after the opener that marks each planted kind (never in a genuine segment)
MARKERS = {"repeat": "let me redo that:", "verify": "let me double-check:", "abandoned": "I could also try",
           "restatement": "in other words, the result is"}
VERBOSITIES = ("short", "verbose", "reflective")
# reflective traces: between a genuine step's wrong value and its correction (inside the segment, no keyword)
SLIP = "no, that slipped:"
# verbose traces: a lead before and a follow-up after each segment's content, by kind (one of each drawn);
# no digit, marker or conclusion in them, so they add length and no information
PROSE = {
    "setup": (("let me read the question once more and make sure I understand exactly what it asks before I start "
               "computing anything, because it is easy to mix up which numbers go where. So",), ("",)),
    "genuine": (("I should take this one part at a time and be careful with each number, because a slip here would "
                 "carry through. So I work out",
                 "the next piece is where the actual arithmetic happens, so let me slow down and write the numbers "
                 "out in full. I compute",
                 "let me think about what this part of the calculation needs, since it feeds into what comes next. "
                 "Written out, I get"),
                ("That gives me a value I will need in the next step, so I keep it in mind and move on.",
                 "Good, that part is settled now, and the rest of the solution builds on it.",
                 "So this piece is done, and I can carry that value forward without changing it.")),
    "repeat": (("I am not fully sure that I did that computation right, and a slip would carry through, so",),
               ("Yes, it comes out exactly the same way as the first time, so nothing changes.",
                "That is the same value I had before, so I did not learn anything new by going through it again.")),
    "verify": (("before I commit to this, it would be good to check the result by going the other way round and "
                "seeing whether it fits, so",),
               ("The check works out, which only confirms the value I already had.",
                "Everything is consistent, so the result I found earlier was already right.")),
    "abandoned": (("maybe there is a more direct route that avoids splitting the numbers into parts at all, since it "
                   "could be quicker and leave less room for a slip. It costs little to look, so",
                   "there might be a simpler way to see this that does not need the method I am using. I am not sure it "
                   "will lead anywhere, but",), ("",)),
    "restatement": (("just to say it again plainly, so that it is completely clear to me before I go on:",),
                    ("This is simply the same number I already found, said in different words.",
                     "Nothing new comes from this; it is the value the earlier steps already gave.")),
}


def _tens_and_ones(name: str, item: str, a: int, b: int, sign: int) -> dict:
    """a + b (sign 1) or a - b (sign -1, no borrowing), computed tens first, then ones."""
    (ta, oa), (tb, ob) = divmod(a, 10), divmod(b, 10)
    op, inverse = ("+", "-") if sign > 0 else ("-", "+")
    tens, ones, ans = 10 * (ta + sign * tb), oa + sign * ob, a + sign * b
    question = (f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?" if sign > 0 else
                f"{name} has {a} {item} and gives away {b}. How many {item} does {name} have left?")
    return dict(question=question, setup=f"I need {a} {op} {b}",
                steps=[f"the tens: {10 * ta} {op} {10 * tb} = {tens}", f"the ones: {oa} {op} {ob} = {ones}",
                       f"together: {tens} + {ones} = {ans}"],
                check=f"{ans} {inverse} {b} = {a}",
                abandoned=f"counting {'up' if sign > 0 else 'down'} from {a}: {a + sign}, {a + 2 * sign}, and then",
                answer=ans)


def _problem(rng: random.Random) -> dict:
    """One problem: its question, genuine steps (each a computation), a check, an abandoned approach."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    family = rng.randrange(4)
    if family == 0:  # addition by tens and ones
        return _tens_and_ones(name, item, rng.randint(11, 69), rng.randint(11, 29), +1)
    if family == 1:  # subtraction by tens and ones, no borrowing
        tb, ob = rng.randint(1, 4), rng.randint(0, 5)
        ta, oa = rng.randint(tb + 1, 9), rng.randint(ob, 9)
        return _tens_and_ones(name, item, 10 * ta + oa, 10 * tb + ob, -1)
    if family == 2:  # a times-table product
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        ans = a * b
        return dict(question=f"{name} has {a} boxes with {b} {item} in each box. How many {item} does {name} have?",
                    setup=f"I need {a} groups of {b}",
                    steps=[f"the product: {a} * {b} = {ans}"],
                    check=f"{ans} / {a} = {b}", abandoned=f"adding box by box: {b}, {2 * b}, and then", answer=ans)
    a, b = rng.randint(2, 19), rng.randint(2, 19)  # a rectangle's perimeter
    ans = 2 * (a + b)
    return dict(question=f"A rectangle has length {a} and width {b}. What is its perimeter?",
                setup=f"the perimeter is twice {a} + {b}",
                steps=[f"one length and one width: {a} + {b} = {a + b}", f"twice that: 2 * {a + b} = {ans}"],
                check=f"{a} + {b} + {a} + {b} = {ans}", abandoned=f"adding the sides in turn: {a} + {b} = {a + b}, then",
                answer=ans)


def _planted(kind: str, p: dict, step: int) -> str:
    """The body of a planted segment of ``kind`` (after its opener); a repeat redoes genuine ``step``."""
    if kind == "repeat":
        return f"{MARKERS['repeat']} {p['steps'][step]}."
    if kind == "verify":
        return f"{MARKERS['verify']} {p['check']}, so that holds."
    if kind == "abandoned":
        return f"{MARKERS['abandoned']} {p['abandoned']}"
    return f"{MARKERS['restatement']} {p['answer']}."


def _verbose(body: str, kind: str, rng: random.Random) -> str:
    """``body`` (a segment's content) inside prose of its ``kind``: lead, body, follow-up (none for an
    abandoned attempt, which still ends cut off)."""
    lead, follow = (rng.choice(options) for options in PROSE[kind])
    return " ".join(part for part in (lead, body, follow) if part)


def _reflective(body: str, kind: str, rng: random.Random) -> str:
    """A genuine step's computation (``label: expr = value.``) written with a wrong value first, then caught
    and corrected: ``label: expr = wrong, no, that slipped: expr = value.``; any other body unchanged."""
    m = re.fullmatch(r"(?P<label>[^:]+): (?P<expr>.+) = (?P<value>\d+)\.", body)
    if kind != "genuine" or m is None:
        return body
    value = int(m["value"])
    wrong = value + rng.choice([d for d in (-10, -2, -1, 1, 2, 10) if value + d >= 0])
    return f"{m['label']}: {m['expr']} = {wrong}, {SLIP} {m['expr']} = {value}."


STYLES = {"verbose": _verbose, "reflective": _reflective}


def make_trace(p: dict, rng: random.Random, plant: bool = True, max_planted: int = 6, verbosity: str = "short",
               style: random.Random | None = None) -> tuple[str, list[dict]]:
    """The trace of problem ``p`` and its per-segment metadata (span, kind). Planted segments sit
    between the first and last segments: an abandoned attempt anywhere there, a repeat after the step
    it redoes, checks and restatements once the result is known (after the last genuine step).
    Other than ``short``, ``verbosity`` rewrites the setup and middle segments (``STYLES``), drawing from
    ``style`` (a generator of its own, so the structure drawn from ``rng`` is the short trace's)."""
    opener = lambda: "\n\n" + rng.choice(OPENERS) + " "  # noqa: E731
    body = [(opener(), step + ".", "genuine", i) for i, step in enumerate(p["steps"])]
    if plant:
        for _ in range(rng.randint(0, max_planted)):
            kind, step = rng.choice(PLANTED), rng.randrange(len(p["steps"]))
            after = {"abandoned": -1, "repeat": step}.get(kind, len(p["steps"]) - 1)  # the genuine step it follows
            first = 0 if after < 0 else next(i for i, b in enumerate(body) if b[3] == after) + 1
            body.insert(rng.randint(first, len(body)), (opener(), _planted(kind, p, step), kind, None))
    wrap = (lambda text, kind: text) if verbosity == "short" else (  # noqa: E731
        lambda text, kind: STYLES[verbosity](text, kind, style))
    pieces = [("Okay, " + wrap(p["setup"] + ".", "setup"), "genuine"),
              *((op + wrap(text, kind), kind) for op, text, kind, _ in body),
              (f"{opener()}so the final answer is \\boxed{{{p['answer']}}}.", "genuine")]
    trace, meta, at = "", [], 0
    for text, kind in pieces:
        meta.append({"start": at, "end": at + len(text), "kind": kind})
        trace += text
        at += len(text)
    return trace, meta


def planted_counts(text: str) -> dict[str, int]:
    """How many segments of each planted kind a text (a trace, or a trained model's answer) contains."""
    return {kind: text.count(marker) for kind, marker in MARKERS.items()}


def planted_share(rec: Record) -> float:
    """The share of a record's trace characters that sit in planted segments."""
    planted = sum(m["end"] - m["start"] for m in rec.meta["segments"] if m["kind"] != "genuine")
    return planted / max(len(rec.trace), 1)


def planted_mask(meta: dict, spans: list[list[int]]) -> list[bool] | None:
    """Per segment at ``spans``: whether it is planted, from a record's ``meta``; None when the record
    has no ground truth for exactly these segments."""
    truth = {(m["start"], m["end"]): m["kind"] != "genuine" for m in meta.get("segments", []) if "kind" in m}
    flags = [truth.get((a, b)) for a, b in spans]
    return None if not truth or None in flags else flags


def generate(n: int, seed: int = 0, split: str = "train", plant: bool = True, max_planted: int = 6,
             exclude: set[str] = frozenset(), verbosity: str = "short", tail: str = "") -> list[Record]:
    """``n`` records with distinct questions, none in ``exclude``; the same arguments give the same records,
    and the records of every verbosity share questions, kinds and positions. ``tail`` (with ``{answer}``)
    is each record's ``completion``."""
    if verbosity not in VERBOSITIES:
        raise ValueError(f"verbosity {verbosity!r}: use one of {VERBOSITIES}")
    rng = random.Random(f"{seed}-{split}")
    # the verbose traces' generator keeps the name it had before reflective traces existed, so they stay the same
    style = random.Random(f"{seed}-{split}-{'prose' if verbosity == 'verbose' else verbosity}")
    records, seen = [], set(exclude)
    while len(records) < n:
        p = _problem(rng)
        if p["question"] in seen:
            continue
        seen.add(p["question"])
        trace, segs = make_trace(p, rng, plant, max_planted, verbosity, style)
        records.append(Record(f"synth-{split}-{len(records)}", p["question"], trace, str(p["answer"]), "synthetic",
                              {"segments": segs}, tail.format(answer=p["answer"])))
    return records


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m data.synthetic",
                                description="Write synthetic R1-style traces with planted redundancy as jsonl.")
    p.add_argument("path")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train")
    p.add_argument("--clean", action="store_true", help="genuine steps only, nothing planted")
    p.add_argument("--max-planted", type=int, default=6, help="planted segments per trace are drawn from 0..this")
    p.add_argument("--verbosity", default="short", choices=VERBOSITIES,
                   help="verbose: segments carry reasoning prose; reflective: genuine steps catch and correct a slip")
    a = p.parse_args(argv)
    print(write_jsonl(generate(a.n, a.seed, a.split, not a.clean, a.max_planted, verbosity=a.verbosity), a.path))


if __name__ == "__main__":
    main()
