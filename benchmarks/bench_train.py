"""Training throughput: tokens/s and peak memory of the SFT path on selective labels.

CPU (plain transformers + TRL): the tiny random Qwen2 and SmolLM2-135M-Instruct. On a CUDA GPU,
``--model r1-distill-qwen-1.5b`` (the architecture with random weights, built offline by
common.assets) and ``--unsloth false,true`` compare the paths. Each path (model, unsloth, precision,
allocator) runs in its own process, its lengths one after another (GPU peak memory is reset for each;
peak RSS is the process's so far); gradient checkpointing is on for GPU runs.
    python -m benchmarks.bench_train                       # tiny-qwen2 and smollm2 on CPU
    python -m benchmarks.bench_train --model r1-distill-qwen-1.5b --length 4096,16384 --batch 1 --unsloth false,true
    python -m benchmarks.bench_train --model tiny-qwen2 --steps 3 --length 300 --precision fp32,bf16   # CPU autocast
    python -m benchmarks.bench_train --model smollm2 --steps 4 --batch 8 --length 320 --allocator default,keep
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def one(model: str, steps: int, batch: int, length: int, unsloth: str, precision: str) -> dict:
    import torch
    from transformers import TrainerCallback
    from trl import ModelConfig, SFTConfig

    from attribution.labels import build_labels
    from attribution.labels_dataset import save_labels
    from common.assets import R1_DISTILL_ARCHS, random_checkpoint
    from common.config import SelectionArguments, TracesArguments, TrainingArguments
    from common.modeling import load_tokenizer
    from common.recipe import make_recipe
    from data import synthetic
    from data.records import Record
    from selective_sft.train import train

    path = str(random_checkpoint(model)) if model in R1_DISTILL_ARCHS else model  # speed only: random weights
    tok = load_tokenizer(path)
    recs = synthetic.generate(batch * steps, seed=7)
    if length > 300:  # long-context runs: repeat each trace up to the length
        recs = [Record(r.id, r.question, (r.trace + "\n\n") * max(1, length // 180), r.answer, r.source)
                for r in recs]
    rows, summary = build_labels(tok, recs, None, SelectionArguments(selector="first_correct_solution"), TracesArguments(), length)
    tmp = Path(tempfile.mkdtemp())
    save_labels(rows, summary, tmp / "labels")
    n_tokens = sum(len(r["input_ids"]) for r in rows)
    gpu = torch.cuda.is_available()

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 1:  # skip the first step (warm-up, allocation)
                self.t0 = time.perf_counter()

    clock = Clock()
    config = SFTConfig(output_dir=str(tmp / "out"), max_length=length, max_steps=steps, per_device_train_batch_size=batch,
                       learning_rate=1e-5, save_strategy="no", report_to="none", bf16=gpu or precision == "bf16", use_cpu=not gpu,
                       loss_type="nll", gradient_checkpointing=gpu, logging_steps=steps)
    margs = ModelConfig(model_name_or_path=path, dtype="bfloat16" if gpu else "float32")
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    train(make_recipe(config, margs, selection=SelectionArguments(labels_dir=str(tmp / "labels")),
                      training=TrainingArguments(use_unsloth=unsloth)), callbacks=[clock])
    dt = time.perf_counter() - clock.t0
    per_step = n_tokens / steps
    return {"model": model, "unsloth": unsloth, "precision": "bf16" if gpu else precision, "steps_timed": steps - 1, "tokens_per_step": per_step,
            "tokens_per_s": per_step * (steps - 1) / dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if gpu else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-qwen2,smollm2")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", default="512", help="comma-separated sequence lengths")
    p.add_argument("--unsloth", default="false", help="comma-separated: false, true")
    p.add_argument("--precision", default="fp32", help="CPU: comma-separated fp32, bf16 (autocast); GPU runs are bf16")
    p.add_argument("--allocator", default="keep", help="comma-separated: keep (common.runtime: glibc keeps freed "
                   "memory, what the study and quickstart run with), default (glibc's own settings)")
    p.add_argument("--repeats", type=int, default=1, help="processes per configuration: tokens/s as mean (min-max)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        if a.unsloth == "true":
            import unsloth  # noqa: F401  (before trl, which one() imports, so Unsloth can patch it)
        for length in a.length.split(","):
            print("result:", json.dumps(one(a.model, a.steps, a.batch, int(length), a.unsloth, a.precision)), flush=True)
        return
    from itertools import product

    from common.runtime import MALLOC_ENV

    configs = list(product(*(getattr(a, k).split(",") for k in ("model", "unsloth", "precision", "allocator"))))
    runs: dict[tuple, list[dict]] = {}
    for _ in range(a.repeats):  # repeats interleaved across configs, so drift on the machine hits all alike
        for model, use_unsloth, precision, allocator in configs:
            cmd = [sys.executable, "-m", "benchmarks.bench_train", "--one", "--model", model, "--steps", str(a.steps),
                   "--batch", str(a.batch), "--length", a.length, "--unsloth", use_unsloth, "--precision", precision]
            env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV} | (MALLOC_ENV if allocator == "keep" else {})
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            for length, line in zip(a.length.split(","), [x for x in out.stdout.splitlines() if x.startswith("result: ")]):
                runs.setdefault((model, length, use_unsloth, precision, allocator), []).append(
                    json.loads(line.removeprefix("result: ")))
    print("| model | length | unsloth | precision | allocator | tokens/step | tokens/s: mean (min-max) | runs | "
          "peak RSS MB | peak GPU MB |\n|---|---|---|---|---|---|---|---|---|---|")
    for (model, length, use_unsloth, precision, allocator), rs in runs.items():
        rate = [r["tokens_per_s"] for r in rs]
        gpu = f"{max(r['peak_gpu_mb'] for r in rs):.0f}" if rs[0]["peak_gpu_mb"] is not None else "-"
        print(f"| {model} | {length} | {use_unsloth} | {rs[0]['precision']} | {allocator} | {rs[0]['tokens_per_step']:.0f} | "
              f"{np.mean(rate):.0f} ({min(rate):.0f}-{max(rate):.0f}) | {len(rs)} | "
              f"{max(r['peak_rss_mb'] for r in rs):.0f} | {gpu} |", flush=True)


if __name__ == "__main__":
    main()
