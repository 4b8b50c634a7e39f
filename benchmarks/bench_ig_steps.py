"""How many IG points each trace needs: ``ig_steps: auto`` by rule against fixed J, on a dense reference.

Two sets of traces, each attributed on the trace-only path (the recipes' default):
- ``study``: the study's training traces, attributed by its task-trained attribution model (``--run-dir``
  of a study run that has trained it: ``<run-dir>/models/attributor``, ``<run-dir>/data/train.jsonl``);
- ``r1``: complete real R1 traces from ../shared/data, attributed by SmolLM2-135M-Instruct, each cut at
  its last paragraph break within ``--max-trace-tokens`` tokens (then the forced answer) and segmented at
  every paragraph: at an affordable length no R1 trace here holds 3 keyword segments, and with the
  first and last always kept, fewer leave the selector nothing to decide. A trace is used when the cut
  keeps at least 3 paragraphs, in file order.

Per trace, the per-token products are evaluated once at the 513 points j/512 (j = 0..512) and kept in
``--out``; every rule whose points lie there is read from them, and a point no grid holds (J = 50's,
the graded rule's finer levels) is evaluated once and kept beside them. The reference is composite
Simpson on the 513 points. ``auto`` runs the production criterion (attribution.integrated_gradients.refine)
on these points, so its point counts are exactly what a run spends (``gap only``: the same levels stopped
by the completeness gap alone, to show which criterion binds); seconds are those points times the trace's
measured seconds per point. Agreement: the paper's selector (tau 0.7, beta 0.8) on each estimate
against the reference's selection, over the middle segments (the first and last are always kept).
Resumable after kill -9: each trace's points are saved every ``CHUNK`` points. ``--shard i/n`` splits the
traces over n processes run side by side (one thread each); ``--stored-only`` then reports on every trace
whose points are all stored, computing nothing new (rules whose points lie on the grid only).

    python -m benchmarks.bench_ig_steps --set study --run-dir runs/igbench-study --traces 3 --rules riemann_right,riemann_trapezoid,simpson
    python -m benchmarks.bench_ig_steps --set r1 --traces 20 --rules riemann_right,riemann_trapezoid,simpson --shard 0/2  # and 1/2
    python -m benchmarks.bench_ig_steps --set r1 --traces 20 --rules riemann_right,riemann_trapezoid,simpson --stored-only
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from attribution.alignment import align
from attribution.integrated_gradients import auto_levels, integration_points, open_path, refine
from attribution.segments import segments_from_spans, split_segments
from attribution.selection import segment_scores
from common.config import ANSWER_SUFFIX, AUTO_RULES, SelectionArguments
from data.prompts import attribution_text
from eval.metrics import wilson_interval

from .bench_attribution import TRACES, selected

ROOT = Path(__file__).resolve().parent.parent
GRID = 512  # the reference's intervals: 513 points j/512
CHUNK = 32  # points between two saves of a trace's store
FIXED = (16, 50)  # eq. 2 at a fixed J: the study's and the paper's
TAU, BETA = SelectionArguments().tau, SelectionArguments().beta  # the paper's selector's (bench_attribution.selected)
MARGIN = 0.01  # how close to a threshold a segment is "at" it


def load(which: str, n: int, run_dir: Path, max_trace_tokens: int):
    """(model, tokenizer, [(id, aligned text)]) of one set."""
    from common.modeling import inference_model, load_tokenizer
    from data.loaders import load_records

    if which == "study":
        name = str(run_dir / "models" / "attributor")
        if not Path(name).exists():
            sys.exit(f"{name} is absent: train the study's attribution model first (python -m pipelines.study --run_dir {run_dir})")
        records = load_records(str(run_dir / "data" / "train.jsonl"))[0]
    else:
        name = "smollm2"
        if not TRACES.exists():
            sys.exit(f"{TRACES} is absent: put the shared data folder beside the checkout")
        records = [r for r in load_records(str(TRACES), chat=True)[0] if r.answer]
    tok = load_tokenizer(name)
    out = []
    for r in records:
        trace, segs = r.trace, split_segments(r.trace)
        if which == "r1":  # paragraphs: within a few hundred tokens R1 traces hold at most 2 keyword segments
            cuts = [m.start() for m in re.finditer(r"\n\n", r.trace) if m.start() > 0] + [len(r.trace)]
            ends = [c for c in cuts if len(tok(r.trace[:c], add_special_tokens=False)["input_ids"]) <= max_trace_tokens]
            if len(ends) < 3:
                continue
            trace = r.trace[: ends[-1]]
            segs = segments_from_spans(trace, [[a, b] for a, b in zip([0, *ends[:-1]], ends)])
        out.append((r.id, align(tok, attribution_text(tok, r.question, trace, r.answer, ANSWER_SUFFIX), segs)))
        if len(out) == n:
            break
    return inference_model(name, dtype="float32"), tok, out


class PointStore:
    """A trace's evaluated points (alpha -> F, products) and the seconds they took, saved atomically."""

    def __init__(self, path: Path):
        self.path, self.points, self.seconds = path, {}, 0.0
        if path.exists():
            d = np.load(path)
            self.points = {float(a): (float(f), p) for a, f, p in zip(d["alphas"], d["f"], d["products"])}
            self.seconds = float(d["seconds"])

    def save(self) -> None:
        alphas = sorted(self.points)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, alphas=np.asarray(alphas), f=np.asarray([self.points[a][0] for a in alphas]),
                 products=np.stack([self.points[a][1] for a in alphas]), seconds=self.seconds)
        os.replace(tmp, self.path)

    def sampler(self, path):
        """``sample(alphas)`` for refine: stored points read back, the others evaluated once and stored."""
        def sample(alphas):
            new = [a for a in np.asarray(alphas).tolist() if a not in self.points]
            for lo in range(0, len(new), CHUNK):
                t0 = time.perf_counter()
                f, products = path.sample(np.asarray(new[lo : lo + CHUNK]), 1)
                self.seconds += time.perf_counter() - t0
                self.points.update(zip(new[lo : lo + CHUNK], zip(f.tolist(), products)))
                self.save()
            return (np.asarray([self.points[a][0] for a in alphas]), np.stack([self.points[a][1] for a in alphas]))
        return sample


def measure(model, tok, tid: str, al, out: Path, rules: list[str], tolerance: float, max_steps: int) -> dict:
    """One trace: the reference, each auto rule and each fixed J, with gap, points and agreement."""
    store = PointStore(out / f"{tid}.npz")
    with open_path(model, al.input_ids, al.answer_positions, al.token_segment >= 0, tok.pad_token_id) as path:
        sample = store.sampler(path)
        grid = np.arange(GRID + 1) / GRID
        f_grid, p_grid = sample(grid)
        ends = dict(zip((0.0, 1.0), (f_grid[0], f_grid[-1])))

        def ends_of(known):
            return ends[0.0], ends[1.0]

        # auto as it runs (gap and change), and stopping on the gap alone: which of the two criteria binds
        runs = {f"{name} {rule}": refine(rule, auto_levels(rule, max_steps), sample, ends_of, tolerance, both)
                for rule in rules for name, both in (("auto", True), ("gap only", False))}
        runs |= {f"J = {j}": refine("riemann_right", [j], sample, ends_of, tolerance, False) for j in FIXED}
    f0, f1 = ends[0.0], ends[1.0]
    ref = (integration_points("simpson", GRID + 1)[1] @ p_grid.astype(np.float64)).astype(np.float32)
    trap = (integration_points("riemann_trapezoid", GRID + 1)[1] @ p_grid.astype(np.float64)).astype(np.float32)
    ref_sel, middle = selected(ref, al), range(1, al.n_segments - 1)
    at_threshold = _at_threshold(ref, al)

    def agreement(ig) -> tuple[int, bool, int]:
        """Middle segments selected as by the reference, whether the whole selection is, and how many of the
        differing middle segments sit at a threshold of the reference's scores."""
        sel = selected(ig, al)
        differ = [i for i in middle if (i in sel) != (i in ref_sel)]
        return len(middle) - len(differ), sel == ref_sel, int(sum(at_threshold[i] for i in differ))

    s_per_point = store.seconds / max(len(store.points), 1)
    row = {"id": tid, "tokens": len(al.input_ids), "trace_tokens": int((al.token_segment >= 0).sum()),
           "segments": al.n_segments, "middle": len(middle), "s_per_point": s_per_point, "f_input": f1, "f_baseline": f0,
           "reference_gap": abs(float(ref.sum(dtype=np.float64)) - (f1 - f0)) / max(abs(f1 - f0), 1e-12),
           "reference_vs_trapezoid": agreement(trap)[1], "runs": {}}
    for name, r in runs.items():
        same, identical, tied = agreement(r.token_ig)
        error = float(np.abs(r.token_ig - ref).sum(dtype=np.float64) / max(np.abs(ref).sum(dtype=np.float64), 1e-12))
        row["runs"][name] = {"points": r.steps, "converged": r.converged, "gap": r.completeness_gap, "change": r.change,
                             "error": error,
                             "middle_same": same, "identical": identical, "differ_at_threshold": tied,
                             "seconds": r.steps * s_per_point}
    return row


def _at_threshold(ig, al, margin: float = MARGIN) -> np.ndarray:
    """Per segment: whether the reference's scores put it within ``margin`` of a threshold of the paper's rule,
    where any error may flip it: consistency within margin of beta, or a cumulative strength share (eqs. 5-6,
    in strength order, just before or after the segment) within margin of tau."""
    scores = segment_scores(ig, al.token_segment, al.n_segments)
    order = np.argsort(-scores.norm_strength, kind="stable")
    after = np.cumsum(scores.norm_strength[order])
    near_tau = np.zeros(al.n_segments, dtype=bool)
    near_tau[order] = (np.abs(after - TAU) <= margin) | (np.abs(after - scores.norm_strength[order] - TAU) <= margin)
    return near_tau | (np.abs(scores.consistency - BETA) <= margin)


def _share(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{k}/{n} ({100 * k / max(n, 1):.0f}%, {100 * lo:.0f}-{100 * hi:.0f}%)"


def _q(x, q) -> float:
    return float(np.quantile(np.asarray(x, dtype=np.float64), q))


def report(which: str, rows: list[dict], tolerance: float) -> str:
    """Markdown: the validity lines first (reference, answer probability), then one row per rule."""
    gaps = [r["reference_gap"] for r in rows]
    p = np.exp([r["f_input"] for r in rows])
    middle = sum(r["middle"] for r in rows)
    lines = [f"### {which}: {len(rows)} traces, {np.mean([r['trace_tokens'] for r in rows]):.0f} trace tokens on average "
             f"({min(r['trace_tokens'] for r in rows)}-{max(r['trace_tokens'] for r in rows)}), {middle} middle segments", "",
             f"- reference (Simpson, {GRID + 1} points): completeness gap median {np.median(gaps):.4f}, max {max(gaps):.4f}; "
             f"its selection equals the {GRID + 1}-point trapezoid's on {sum(r['reference_vs_trapezoid'] for r in rows)}/{len(rows)} traces",
             f"- P(gold answer) at the IG target: median {np.median(p):.2f}, 10th percentile {_q(p, 0.1):.2f}, "
             f"{100 * np.mean(p < 0.5):.0f}% below 0.5",
             f"- {np.mean([r['s_per_point'] for r in rows]):.2f} s per point on average "
             f"({min(r['s_per_point'] for r in rows):.2f}-{max(r['s_per_point'] for r in rows):.2f} over the traces)", "",
             "Shares carry 95% Wilson intervals; a trace's segments are counted as independent, so the segment "
             "intervals are narrower than the traces alone support.", "",
             f"| IG | points per trace: mean (90th pct, max) | total points | converged (tolerance {tolerance:g}) | "
             "gap: median (90th pct, max) | token IG's L1 error vs the reference: median (max) | seconds "
             f"| middle segments as the reference; of the differing, at a threshold (within {MARGIN}) | traces with its selection |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in rows[0]["runs"]:
        rs = [r["runs"][name] for r in rows]
        pts, g, err = [x["points"] for x in rs], [x["gap"] for x in rs], [x["error"] for x in rs]
        same = sum(x["middle_same"] for x in rs)
        unconverged = [r["id"] for r, x in zip(rows, rs) if not x["converged"]]
        lines.append(f"| {name} | {np.mean(pts):.1f} ({_q(pts, 0.9):.0f}, {max(pts)}) | {sum(pts)} | "
                     f"{_share(len(rows) - len(unconverged), len(rows))} | {np.median(g):.3f} ({_q(g, 0.9):.3f}, {max(g):.3f}) | "
                     f"{np.median(err):.3f} ({max(err):.3f}) | "
                     f"{sum(x['seconds'] for x in rs):.0f} | {_share(same, middle)}; "
                     f"{sum(x['differ_at_threshold'] for x in rs)} of {middle - same} | "
                     f"{_share(sum(x['identical'] for x in rs), len(rows))} |")
    for name in (f"J = {j}" for j in FIXED):
        bad = [(r, r["runs"][name]) for r in rows if not r["runs"][name]["converged"]]
        if bad:
            n_middle = sum(r["middle"] for r, _ in bad)
            same = sum(x["middle_same"] for _, x in bad)
            lines.append(f"\n{name} leaves {len(bad)} of {len(rows)} traces above the tolerance "
                         f"({', '.join(r['id'] for r, _ in bad)}); on them, {same}/{n_middle} middle segments are "
                         f"selected as by the reference ({sum(x['differ_at_threshold'] for _, x in bad)} of the "
                         f"{n_middle - same} differing at a threshold), {sum(x['identical'] for _, x in bad)}/{len(bad)} "
                         f"traces identical.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", choices=("study", "r1"), required=True)
    p.add_argument("--traces", type=int, default=20, help="how many traces of the set")
    p.add_argument("--run-dir", default="runs/igbench-study", help="study: the run that trained the attribution model")
    p.add_argument("--max-trace-tokens", type=int, default=128, help="r1: cut each trace at its last paragraph break within this")
    p.add_argument("--rules", default=",".join(AUTO_RULES), help="the rules auto runs (graded_trapezoid's points beyond "
                   "J = 16 lie off the grid and cost extra)")
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--max-steps", type=int, default=512)
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_ig_steps"))
    p.add_argument("--shard", default="0/1", help="i/n: this process takes every n-th trace from the i-th (run n side by side)")
    p.add_argument("--reverse", action="store_true", help="take the shard's traces last first (a second process on a "
                   "shard meets the first one half-way)")
    p.add_argument("--stored-only", action="store_true", help="only the traces whose points are all stored (a report)")
    a = p.parse_args()
    out = Path(a.out) / a.set
    out.mkdir(parents=True, exist_ok=True)
    model, tok, traces = load(a.set, a.traces, Path(a.run_dir), a.max_trace_tokens)
    index, count = map(int, a.shard.split("/"))
    traces = traces[index::count][:: -1 if a.reverse else 1]
    if a.stored_only:  # report on the traces whose reference and J = 50 points are all stored, computing nothing
        need = set((np.arange(GRID + 1) / GRID).tolist()) | set(integration_points("riemann_right", 50)[0].tolist())
        stored = [(tid, al) for tid, al in traces
                  if (out / f"{tid}.npz").exists() and need <= set(np.load(out / f"{tid}.npz")["alphas"].tolist())]
        print(f"{len(stored)} of the first {len(traces)} traces have every point stored: "
              f"{', '.join(tid for tid, _ in stored)}")
        traces = stored
    if not traces:
        sys.exit("no trace to measure (with --stored-only: none has all its points stored yet)")
    rows = []
    for i, (tid, al) in enumerate(traces, 1):
        t0 = time.perf_counter()
        rows.append(measure(model, tok, tid, al, out, a.rules.split(","), a.tolerance, a.max_steps))
        print(f"[{i}/{len(traces)}] {tid}: {len(al.input_ids)} tokens, {rows[-1]['s_per_point']:.2f} s/point, "
              f"{time.perf_counter() - t0:.0f} s; " + ", ".join(f"{k} {v['points']}" for k, v in rows[-1]["runs"].items()),
              flush=True)
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    text = report(a.set, rows, a.tolerance)
    (out / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
