"""Metrics and the table of the paper's Table 1: greedy accuracy, pass@k of samples, lengths, macro averages.

Per benchmark, greedy decoding gives accuracy and its mean output length; sampling gives unbiased
pass@k for every asked k up to the samples each question has, and the mean length over all samples
(as the paper). The two decoding modes are never mixed in one number.
"""
from __future__ import annotations

from collections import defaultdict
from math import comb, sqrt

import numpy as np

from .benchmarks import BENCHMARKS


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% at z = 1.96) of a binomial proportion correct / n, in [0, 1]:
    unlike the normal approximation it stays inside [0, 1] and is sound at 0 or n successes."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = correct / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, center - half), min(1.0, center + half)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value for paired right/wrong outcomes: of the questions exactly one of
    two models solves (``only_a`` + ``only_b``), is the split further from even than chance (p = 1/2)?"""
    n = only_a + only_b
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n)


def summarize(rows: list[dict], ks: tuple[int, ...] = (1, 6)) -> dict:
    """Per benchmark: questions, greedy_acc (with greedy_correct and its 95% Wilson interval
    greedy_acc_ci) and greedy_tokens (with its standard error); samples (n per question), pass@k for
    each k <= n, sample_tokens; grading_timeouts. Accuracies in %, lengths in output tokens."""
    by = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by[r["benchmark"]][(r["id"], r["mode"])].append(r)
    out = {}
    for bench, groups in by.items():
        res = {"questions": len({i for i, _ in groups})}
        greedy = [g[0] for (_, mode), g in groups.items() if mode == "greedy"]
        if greedy:
            correct, tokens = sum(bool(r["correct"]) for r in greedy), np.array([r["n_tokens"] for r in greedy], float)
            res["greedy_correct"], res["greedy_acc"] = correct, 100 * correct / len(greedy)
            res["greedy_acc_ci"] = [100 * x for x in wilson_interval(correct, len(greedy))]
            res["greedy_tokens"] = float(tokens.mean())
            res["greedy_tokens_se"] = float(tokens.std(ddof=1) / sqrt(len(tokens))) if len(tokens) > 1 else 0.0
        sampled = [g for (_, mode), g in groups.items() if mode == "sample"]
        if sampled:
            n = min(len(g) for g in sampled)
            res["samples"] = n
            for k in sorted(set(ks)):
                if k <= n:
                    res[f"pass@{k}"] = 100 * float(np.mean([pass_at_k(n, sum(r["correct"] for r in g[:n]), k)
                                                            for g in sampled]))
            res["sample_tokens"] = float(np.mean([r["n_tokens"] for g in sampled for r in g[:n]]))
        # answers the grader gave up on (math-verify hung past the timeout): graded wrong, counted here
        res["grading_timeouts"] = sum(r.get("how") == "timeout" for g in groups.values() for r in g)
        out[bench] = res
    return out


def macro(summary: dict, key: str) -> float | None:
    """The mean of ``key`` over the benchmarks that have it (the paper's Avg. column)."""
    values = [r[key] for r in summary.values() if key in r]
    return float(np.mean(values)) if values else None


def relative_change(new: float, base: float) -> float:
    """100 (new - base) / base: the paper's change (46.9 vs 44.8 -> +4.7%)."""
    return 100.0 * (new - base) / base if base else float("nan")


def _ordered(benches) -> list[str]:
    order = list(BENCHMARKS)
    return sorted(benches, key=lambda b: (order.index(b) if b in order else len(order), b))


def _cell(value: float | None, digits: int, base: float | None = None) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return text if not base else f"{text} ({relative_change(value, base):+.1f}%)"  # no change against 0


def table(runs: dict[str, dict], baseline: str | None = None, ks: tuple[int, ...] = (1, 6)) -> str:
    """Markdown shaped like Table 1: a greedy block (accuracy per benchmark, average, length) and a sampling
    block (pass@1 per benchmark, average pass@1, average pass@k for the other k, length); averages and
    lengths of every run but the baseline carry their relative change against the baseline."""
    benches = _ordered({b for s in runs.values() for b in s})
    base = runs.get(baseline) if baseline else None

    def block(title: str, per_bench: str, averages: list[tuple[str, str]], length: str) -> list[str]:
        if not any(per_bench in r for s in runs.values() for r in s.values()):
            return []
        head = ["run", *benches, *(name for name, _ in averages), "length"]
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, s in runs.items():
            ref = base if base is not None and name != baseline else None
            cells = [_cell(s.get(b, {}).get(per_bench), 1) for b in benches]
            cells += [_cell(macro(s, key), 1, None if ref is None else macro(ref, key)) for _, key in averages]
            cells.append(_cell(macro(s, length), 0, None if ref is None else macro(ref, length)))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return lines + [""]

    greedy = block("Greedy decoding: accuracy (%)", "greedy_acc", [("avg", "greedy_acc")], "greedy_tokens")
    others = [(f"avg pass@{k}", f"pass@{k}") for k in sorted(set(ks)) if k != 1]
    sampling = block("Sampling (t=0.6, top-p 1): pass@1 (%)", "pass@1", [("avg pass@1", "pass@1"), *others],
                     "sample_tokens")
    return "\n".join(greedy + sampling).rstrip()
