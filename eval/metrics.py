"""Accuracy metrics: greedy accuracy, pass@1 over samples, unbiased pass@k, lengths, macro averages."""
from __future__ import annotations

from collections import defaultdict
from math import comb

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def summarize(rows: list[dict], ks: tuple[int, ...] = (1, 4, 8, 16, 32)) -> dict:
    """Per benchmark: greedy accuracy, pass@1 / pass@k of samples, mean output tokens (all in %, tokens)."""
    by = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by[r["benchmark"]][(r["id"], r["mode"])].append(r)
    out = {}
    for bench, groups in sorted(by.items()):
        res = {}
        greedy = [g[0]["correct"] for (i, mode), g in groups.items() if mode == "greedy"]
        if greedy:
            res["greedy_acc"] = 100 * float(np.mean(greedy))
        sampled = [g for (i, mode), g in groups.items() if mode == "sample"]
        if sampled:
            n = min(len(g) for g in sampled)
            res["samples"] = n
            for k in ks:
                if k <= n:
                    res[f"pass@{k}"] = 100 * float(np.mean([pass_at_k(n, sum(r["correct"] for r in g[:n]), k)
                                                            for g in sampled]))
        res["mean_tokens"] = float(np.mean([r["n_tokens"] for g in groups.values() for r in g]))
        res["questions"] = len({i for i, _ in groups})
        # answers the grader gave up on (math-verify hung past the timeout): graded wrong, counted here
        res["grading_timeouts"] = sum(r.get("how") == "timeout" for g in groups.values() for r in g)
        out[bench] = res
    return out


def headline(res: dict) -> float | None:
    """The accuracy a table shows: pass@1 of samples when there are any, else greedy accuracy."""
    return res.get("pass@1", res.get("greedy_acc"))


def macro(summary: dict, key: str) -> float | None:
    values = [headline(r) if key == "acc" else r.get(key) for r in summary.values()]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def relative_change(new: float, base: float) -> float:
    return 100.0 * (new - base) / base if base else float("nan")


def table(runs: dict[str, dict], baseline: str | None = None) -> str:
    """Markdown shaped like the paper's Table 1: one row per run, accuracy and length per benchmark."""
    benches = sorted({b for s in runs.values() for b in s})
    head = "| run | " + " | ".join(f"{b} acc | {b} len" for b in benches) + " | avg acc | avg len |"
    lines = [head, "|" + "---|" * (2 * len(benches) + 3)]
    for name, s in runs.items():
        cells = []
        for b in benches:
            r = s.get(b, {})
            acc, length = headline(r), r.get("mean_tokens")
            cells += [f"{acc:.1f}" if acc is not None else "-", f"{length:.0f}" if length is not None else "-"]
        acc, length = macro(s, "acc"), macro(s, "mean_tokens")
        avg = [f"{acc:.1f}" if acc is not None else "-", f"{length:.0f}" if length is not None else "-"]
        if baseline and name != baseline and baseline in runs and acc is not None:
            b_acc, b_len = macro(runs[baseline], "acc"), macro(runs[baseline], "mean_tokens")
            avg = [f"{acc:.1f} ({acc - b_acc:+.1f})", f"{length:.0f} ({relative_change(length, b_len):+.0f}%)"]
        lines.append(f"| {name} | " + " | ".join(cells + avg) + " |")
    return "\n".join(lines)
