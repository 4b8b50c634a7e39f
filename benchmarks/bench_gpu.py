"""Integrated gradients on a CUDA GPU: this engine vs a paper-style loop, and the cost of LIMO-scale attribution.

On random models of the R1-Distill-Qwen architectures (common.assets.random_model, bf16, built on the GPU,
nothing from the hub) and random token sequences of each length (IG's cost does not depend on the text):

1. ``ig``: seconds per IG point and peak GPU memory at each --lengths, for the engine at each internal
   batch with gradient checkpointing off and on, and for the paper-style loop (batch 1, full logits,
   parameter gradients); an out-of-memory case is reported as such.
2. ``limo``: H100-hours for 817 traces of --limo-tokens tokens (LIMO's length distribution is not
   available offline: the mean is an input, stated in the output) with the 7B architecture, at the paper's
   J = 50 and at the mean points per trace that ``ig_steps: auto`` needed (--auto-points, measured on CPU by
   benchmarks/bench_ig_steps: an input too, since random weights say nothing about convergence),
   from the measured s/point (fitted a L + b L^2 over the two lengths), next to the paper's ~7
   GPU-hours and to a FLOP bound: each point is a forward and a backward to the inputs only, about
   4 N L matmul FLOPs for N parameters (2 N L each way; no weight gradients) plus attention
   (8 layers d L^2 over both passes), at the GPU's dense bf16 peak (--peak-tflops, H100 SXM: 989).

    python -m benchmarks.bench_gpu --out runs/gpu_check/ig.md
    python -m benchmarks.bench_gpu --dry-run        # the cases it would run, and why it cannot here
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from common.assets import R1_DISTILL_ARCHS

LIMO_TRACES, PAPER_GPU_HOURS = 817, 7.0
# mean points per trace of ig_steps: auto (riemann_trapezoid, tolerance 0.05) on the 20 cut R1 traces with SmolLM2
# (docs/measurements.md, "IG points per trace"); the GPU estimate scales J = 50's cost by it
AUTO_POINTS = 161.0


def cases(lengths: list[int], batches: list[int]) -> list[tuple[str, int, int, bool]]:
    """(engine, length, internal batch, checkpointing) for every measured configuration."""
    out = []
    for length in lengths:
        out += [("engine", length, b, c) for c in (False, True) for b in batches]
        out.append(("paper_loop", length, 1, False))
    return out


def measure(model, engine: str, length: int, batch: int, checkpointing: bool, points: int) -> dict:
    import torch

    from attribution.integrated_gradients import integrated_gradients

    from .bench_attribution import paper_loop

    rng = np.random.default_rng(0)
    ids = rng.integers(10, 1000, size=length)
    answer = np.arange(length - 4, length)
    mask = np.zeros(length, dtype=bool)
    mask[64 : length - 16] = True  # a trace between a prompt and the forced answer
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    try:
        if engine == "paper_loop":
            paper_loop(model, SimpleNamespace(input_ids=ids, answer_positions=answer), 0, points)
        else:
            integrated_gradients(model, ids, answer, mask, 0, rule="riemann_right", steps=points, internal_batch=batch,
                                 gradient_checkpointing=checkpointing)
        torch.cuda.synchronize()
    except torch.OutOfMemoryError:
        return {"seconds_per_point": None, "peak_gb": None}
    return {"seconds_per_point": (time.perf_counter() - t0) / points,
            "peak_gb": (torch.cuda.max_memory_allocated() - base) / 2**30}


def limo_hours(seconds: dict[int, float], tokens: int, points: float = 50) -> float:
    """817 traces x ``points`` points at ``tokens`` tokens, from s/point measured at two lengths (a L + b L^2)."""
    (l1, s1), (l2, s2) = sorted(seconds.items())[:2]
    b = (s2 / l2 - s1 / l1) / (l2 - l1)
    a = s1 / l1 - b * l1
    return LIMO_TRACES * points * (a * tokens + b * tokens**2) / 3600


def flop_bound_hours(arch: str, tokens: int, peak_tflops: float) -> float:
    s = R1_DISTILL_ARCHS[arch]
    d, layers = s["hidden_size"], s["num_hidden_layers"]
    kv = d // s["num_attention_heads"] * s["num_key_value_heads"]
    n = layers * (2 * d * d + 2 * d * kv + 3 * d * s["intermediate_size"])  # the matmul weights a token meets
    per_point = 4 * n * tokens + 8 * layers * d * tokens**2  # forward + input-gradient backward, attention included
    return LIMO_TRACES * 50 * per_point / (peak_tflops * 1e12) / 3600


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="r1-distill-qwen-1.5b", choices=sorted(R1_DISTILL_ARCHS))
    p.add_argument("--lengths", default="4096,16384")
    p.add_argument("--batches", default="1,4,8,16")
    p.add_argument("--points", type=int, default=4, help="IG points timed per case")
    p.add_argument("--limo-tokens", type=int, default=6000, help="mean LIMO trace length assumed for the estimate")
    p.add_argument("--auto-points", type=float, default=AUTO_POINTS, help="mean points per trace of ig_steps: auto")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100 SXM: 989)")
    p.add_argument("--out", help="also write the tables to this markdown file")
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args()
    lengths, batches = [int(x) for x in a.lengths.split(",")], [int(x) for x in a.batches.split(",")]
    import torch

    if a.dry_run or not torch.cuda.is_available():
        why = "dry run" if a.dry_run else "no CUDA GPU here"
        for c in cases(lengths, batches):
            print(f"would measure {c[0]} at {c[1]} tokens, internal batch {c[2]}, checkpointing {c[3]} ({why})")
        print(f"would estimate LIMO-scale H100-hours with r1-distill-qwen-7b at {a.limo_tokens} tokens, J = 50 and "
              f"auto's {a.auto_points:.0f} points a trace ({why})")
        return
    from common.assets import random_model

    lines = [f"## IG on {torch.cuda.get_device_name()}: {a.arch} (random bf16 weights), {a.points} points a case", "",
             "| engine | tokens | internal batch | checkpointing | s / point | peak GB above the model |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    model = random_model(a.arch, device="cuda").eval()
    for engine, length, batch, ckpt in cases(lengths, batches):
        r = measure(model, engine, length, batch, ckpt, a.points)
        cells = "out of memory | -" if r["seconds_per_point"] is None else f"{r['seconds_per_point']:.3f} | {r['peak_gb']:.1f}"
        lines.append(f"| {engine} | {length} | {batch} | {ckpt} | {cells} |")
        print(lines[-1], flush=True)
    del model
    torch.cuda.empty_cache()
    big = random_model("r1-distill-qwen-7b", device="cuda").eval()
    best = {length: min(s for s in (measure(big, "engine", length, b, True, a.points)["seconds_per_point"] for b in batches)
                        if s is not None) for length in lengths[:2]}
    bound = flop_bound_hours("r1-distill-qwen-7b", a.limo_tokens, a.peak_tflops)
    lines += ["", f"## LIMO-scale attribution with the 7B architecture ({LIMO_TRACES} traces, "
              f"{a.limo_tokens} tokens each: an assumed mean)", "",
              "| | GPU-hours |", "|---|---|",
              f"| this engine, J = 50 (best of internal batch {a.batches}, checkpointing on; s/point: "
              f"{', '.join(f'{v:.3f} at {k}' for k, v in best.items())}) | {limo_hours(best, a.limo_tokens):.1f} |",
              f"| this engine, ig_steps: auto ({a.auto_points:.0f} points a trace on average, measured on CPU: "
              f"docs/measurements.md) | {limo_hours(best, a.limo_tokens, a.auto_points):.1f} |",
              f"| the paper (App. C.4, J = 50) | ~{PAPER_GPU_HOURS:.0f} |",
              f"| FLOP bound at {a.peak_tflops:.0f} TFLOP/s, J = 50 (4 N L + 8 layers d L^2 per point) | {bound:.1f} |"]
    text = "\n".join(lines)
    print("\n".join(lines[-9:]))  # the LIMO table, with its title
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
