"""Process settings that pay on CPU: glibc's allocator keeps freed memory instead of returning it.

Training a 135M model on a CPU allocates and frees the same large buffers (logits, activations) at every
step; glibc hands big ones back to the kernel each time, and the page faults that follow cost more than
the arithmetic (benchmarks/bench_train.py: 63 -> 89 tokens/s for SmolLM2 on 2 cores, 3 runs each). The variables must
be set before the interpreter starts, so a command re-executes itself once with them.
"""
from __future__ import annotations

import os
import sys

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**36), "MALLOC_TOP_PAD_": str(2**30)}


def keep_freed_memory(module: str, argv: list[str]) -> None:
    """Re-execute ``python -m module argv`` with MALLOC_ENV on Linux, unless already set (or
    SEGSFT_DEFAULT_MALLOC=1); returns only when nothing needs to change."""
    if not sys.platform.startswith("linux") or os.environ.get("SEGSFT_DEFAULT_MALLOC") == "1":
        return
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        return
    os.environ.update(MALLOC_ENV)
    os.execv(sys.executable, [sys.executable, "-m", module, *argv])
