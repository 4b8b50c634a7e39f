"""Answer extraction and grading: last ``\\boxed{}`` (with fallbacks), math-verify, letters for choices.

math-verify guards itself with ``signal.alarm``, which only works on the main thread; here its own
timeouts are off and every answer is graded in a worker process that is killed after ``timeout``
seconds, so grading works from any thread or process and one pathological expression cannot hang
a run (it is graded wrong and counted).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import re

from data.loaders import last_boxed

# Extraction order (first hit wins): the last \boxed{...}; "final answer is X" / "answer: X";
# the last $...$ math span; the last number. Each step is tried only when the previous found nothing.
_FINAL = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*\$?([^\n$]+?)\$?\s*(?:\.|$)", re.IGNORECASE | re.MULTILINE)
_MATH = re.compile(r"\$([^$]+)\$")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")
_LETTER = re.compile(r"\b([A-J])\b")


def extract_answer(text: str) -> tuple[str | None, str]:
    """(answer, how) where how is 'boxed', 'final', 'math', 'number' or 'none'."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    for how, pattern in (("final", _FINAL), ("math", _MATH), ("number", _NUMBER)):
        hits = pattern.findall(text)
        if hits:
            return hits[-1].strip(), how
    return None, "none"


def _normalize(s: str) -> str:
    s = s.strip().strip("$").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\left", "")
    s = s.replace("\\right", "").replace("\\!", "").replace("\\,", "").replace(" ", "")
    s = re.sub(r"^[a-zA-Z]\s*=", "", s)  # "x=3" -> "3"
    s = re.sub(r"\\text\{\s*([^}]*)\}", r"\1", s)
    s = re.sub(r"\^\{?\\circ\}?|°", "", s)
    return s.rstrip(".")


def _strip_leading_zeros(s: str) -> str:
    return re.sub(r"^0+(\d)", r"\1", s)


def is_equivalent(pred: str, gold: str) -> bool:
    """Math equivalence: normalized string match, else math-verify (sympy) on both as LaTeX."""
    a, b = _normalize(pred), _normalize(gold)
    if a == b or _strip_leading_zeros(a) == _strip_leading_zeros(b):
        return True
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns on every call that we time it out ourselves

    def p(x: str):
        return parse(f"${x}$", parsing_timeout=None)

    for g, t in ((gold, pred), (b, a)):
        gp, tp = p(g), p(t)
        if gp and tp and verify(gp, tp, timeout_seconds=None):
            return True
    return False


def grade_one(response: str, gold: str, kind: str = "math") -> dict:
    """Grade one response: {'correct', 'extracted', 'how'}."""
    if kind == "choice":
        boxed = last_boxed(response)
        letters = _LETTER.findall(boxed if boxed is not None else response[-200:])
        extracted = letters[-1] if letters else None
        return {"correct": extracted == gold.strip().upper(), "extracted": extracted,
                "how": "boxed" if boxed is not None else ("tail" if extracted else "none")}
    extracted, how = extract_answer(response)
    return {"correct": extracted is not None and is_equivalent(extracted, gold), "extracted": extracted, "how": how}


def _worker(task):
    return grade_one(*task)


class Grader:
    """Grades many responses in worker processes with a per-answer timeout."""

    def __init__(self, timeout: float = 10.0, workers: int = 2):
        self.timeout, self.workers = timeout, workers
        self._pool = None

    def _new_pool(self):
        self._pool = mp.get_context("spawn").Pool(self.workers)

    def grade(self, tasks: list[tuple[str, str, str]]) -> list[dict]:
        """tasks: (response, gold, kind). Order is kept; a timed-out answer is wrong, with how='timeout'."""
        if self._pool is None:
            self._new_pool()
        pending = [self._pool.apply_async(_worker, (t,)) for t in tasks]
        out = []
        for i, res in enumerate(pending):
            try:
                out.append(res.get(self.timeout))
            except mp.TimeoutError:
                out.append({"correct": False, "extracted": None, "how": "timeout"})
                self._pool.terminate()  # the stuck worker dies with it; resubmit what is left
                self._new_pool()
                rest = self.grade(tasks[i + 1 :])
                return out + rest
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
