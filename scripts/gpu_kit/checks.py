"""What runs on the GPU box, in one run: each part a command under its own time limit (a hang stops that
part and its subprocesses, then the next starts), the figures and logs into one folder. Needs nothing
beyond the standard library, packaging and pytest, which the box has."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .wheels import ROOT, SECOND, norm

TARGET = "/tmp/segsft-site"  # private install target on the box: its own packages stay untouched
# the box reaches nothing: libraries that would try the hub (Unsloth's usage statistics too) are told so
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "UNSLOTH_DISABLE_STATISTICS": "1"}


def lacking(*needs: str) -> list[str]:
    """Why a GPU check cannot run here: one reason per missing need (cuda, unsloth, bitsandbytes)."""
    import importlib.util

    importlib.invalidate_caches()  # a package the run's install part has just put in place counts
    reasons = []
    if "cuda" in needs:
        import torch

        if not torch.cuda.is_available():
            reasons.append("no CUDA GPU here")
    for pkg in ("unsloth", "bitsandbytes"):
        if pkg in needs and importlib.util.find_spec(pkg) is None:
            transfer = 2 if pkg in SECOND else 1
            reasons.append(f"{pkg} is not installed here (the kit's transfer {transfer} carries it)")
    return reasons


@dataclass(frozen=True)
class Part:
    """One step of the run on the box: a command under its own time limit, its log in OUT/<name>.log."""
    name: str
    limit_s: int
    proves: str
    needs: tuple[str, ...]
    argv: tuple[str, ...]  # {out} and {wheels} are filled in


PARTS = [
    Part("install", 30, "the carried wheels install offline beside the box's packages, and every requirement of "
         "every installed package is met", (), ("-m", "scripts.gpu_kit", "install", "{wheels}")),
    Part("pytest", 180, "pytest -m gpu: each test below", ("cuda",),
         ("-m", "pytest", "-m", "gpu", "-v", "-rs", "tests/test_gpu.py")),
    Part("train", 150, "Unsloth vs plain TRL full fine-tuning, tokens/s and peak GPU memory at 4k and 16k tokens "
         "(R1-Distill-Qwen-1.5B architecture, random weights, 3 timed steps)", ("cuda", "unsloth"),
         ("-m", "benchmarks.bench_train", "--model", "r1-distill-qwen-1.5b", "--length", "4096,16384", "--batch", "1",
          "--steps", "4", "--unsloth", "false,true")),
    Part("ig", 100, "IG on CUDA: s/point and peak memory of this engine vs the paper-style loop at 4k and 16k "
         "tokens, and LIMO-scale H100-hours with the 7B architecture", ("cuda",),
         ("-m", "benchmarks.bench_gpu", "--batches", "1,8", "--out", "{out}/ig.md")),
]


def install(wheels: list[str], target: str = TARGET) -> tuple[list[str], list[str]]:
    """Install the wheels into the private target (no index, no dependency resolution), then check every
    requirement of every package installed there against the target and the box. Returns the problems,
    each with what to do, and the needs a later transfer meets (bitsandbytes: Unsloth lists it, and
    only QLoRA uses it)."""
    from importlib.metadata import PackageNotFoundError, distributions, version

    from packaging.requirements import Requirement

    files = [str(f) for w in wheels for f in sorted(Path(w).glob("*.whl"))]
    if files:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", target, *files], check=True)
    sys.path.insert(0, target)
    problems, later = [], []
    for dist in distributions(path=[target]):
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = version(req.name)
            except PackageNotFoundError:
                if norm(req.name) in SECOND:
                    later.append(f"{dist.name} needs {req}: transfer 2 carries it ({SECOND[norm(req.name)]})")
                else:
                    problems.append(f"{dist.name} needs {req}, which neither the box nor the wheels have: the lock "
                                    "misses it; add it to WANT in scripts/gpu_kit/wheels.py and rerun --lock")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{dist.name} needs {req}, {have} is installed: add --carry {req.name} to "
                                "scripts/wheelhouse.sh --lock")
    return problems, later


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run(wheels: list[str], out: Path, parts: list[Part]) -> bool:
    """Each part in order under its own limit (a hang stops that part alone, with its subprocesses);
    OUT gets one log a part, ig.md (written by the ig part), box_packages.txt and the summary gpu_check.md."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": os.pathsep.join([TARGET, str(ROOT)]), "PYTHONUNBUFFERED": "1"}
    box_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    (out / "box_packages.txt").write_text(subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, env=box_env).stdout)
    sys.path.insert(0, TARGET)  # what the install part puts there counts for the later parts' needs
    try:
        rows = _run_parts(parts, wheels, out, env)
    finally:
        sys.path.remove(TARGET)
    _report(out, rows)
    return all(status == "passed" for _, status, _ in rows)


def _run_parts(parts: list[Part], wheels: list[str], out: Path, env: dict) -> list[tuple[Part, str, float]]:
    rows = []
    for p in parts:
        argv = [sys.executable] + [a.format(out=out, wheels=",".join(wheels)) for a in p.argv]
        t0 = time.monotonic()
        with open(out / f"{p.name}.log", "w") as log:
            if why := lacking(*p.needs):
                status = f"SKIPPED: {'; '.join(why)}"
            else:
                proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                try:
                    rc = proc.wait(timeout=p.limit_s)
                    status = "passed" if rc == 0 else f"FAILED (exit {rc})"
                except subprocess.TimeoutExpired:
                    status = f"STOPPED at its {p.limit_s} s limit"
                _kill_group(proc)  # whatever it left running (trainer workers) goes with it
        rows.append((p, status, time.monotonic() - t0))
        print(f"{p.name}: {status} in {rows[-1][2]:.0f} s", flush=True)
    return rows


def _report(out: Path, rows: list) -> None:
    gpu = shutil.which("nvidia-smi") and subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True, text=True).stdout.strip() or "no GPU found by nvidia-smi"
    lines = [f"# GPU check: {gpu}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| part | proves | limit s | took s | status |", "|---|---|---|---|---|"]
    lines += [f"| {p.name} | {p.proves} | {p.limit_s} | {took:.0f} | {status} |" for p, status, took in rows]
    for p, status, _ in rows:  # each part's figures and verdicts; the log's end too where it did not pass
        log = (out / f"{p.name}.log").read_text(errors="replace").splitlines()
        keep = [x for x in log if x.startswith(("|", "tests/", "SKIPPED", "FAILED", "PASSED", "ERROR", "problem:", "later:"))
                or re.search(r"\d+ (passed|failed|skipped)", x)]
        tail = log[-20:] if status != "passed" or not keep else []
        lines += ["", f"## {p.name}", "", *keep, *(["", "```", *tail, "```"] if tail else [])]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print(f"written: {out / 'gpu_check.md'}")
