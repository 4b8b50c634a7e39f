"""A rehearsal of the install part, here, before a GPU window is spent on it: a CPython 3.12 venv holding
what the GPU checks take from the box (its known versions, the others at the index's newest, the CUDA
builds torch, triton and torchvision as metadata-only stand-ins), then the kit's install part against
it, transfer by transfer. Needs the package index and a python3.12."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from .wheels import ROOT, box_packages, metadata_wheel, norm, read_lock, resolve

CUDA_BUILDS = ("torch", "triton", "torchvision")  # the box's own builds; no CPU wheel stands in for them here
KIT_NEEDS = ("pytest", "packaging")  # what the kit itself imports on the box


def box_like(python: str, venv: Path) -> list[str]:
    """Build the box-like venv; the requirements installed into it, as name==version or name."""
    box, _ = box_packages()
    locked = {norm(w.name) for w in read_lock()}
    taken = {norm(i["metadata"]["name"]) for i in resolve()} - locked | set(KIT_NEEDS)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    with tempfile.TemporaryDirectory() as tmp:
        stubs = [metadata_wheel(Path(tmp), n, box[n]) for n in CUDA_BUILDS if box.get(n)]
        subprocess.run([*pip, "--no-deps", *map(str, stubs)], check=True)
    reqs = sorted(f"{n}=={box[n]}" if box.get(n) else n for n in taken if n not in CUDA_BUILDS)
    subprocess.run([*pip, *reqs], check=True)
    return reqs


def rehearse(python: str, wheel_dir: Path, venv: Path) -> bool:
    """Install DIR/1, then DIR/2, into the venv's private target with the kit's own install part."""
    reqs = box_like(python, venv)
    print(f"box-like venv {venv}: {len(reqs)} packages, {', '.join(CUDA_BUILDS)} as metadata only")
    ok = True
    for transfer in sorted({w.transfer for w in read_lock()}):
        res = subprocess.run([str(venv / "bin" / "python"), "-m", "scripts.gpu_kit", "install",
                              str(wheel_dir / str(transfer)), "--target", str(venv / "site")],
                             cwd=ROOT, capture_output=True, text=True)
        print(f"transfer {transfer}: {'installs, every requirement met' if res.returncode == 0 else 'PROBLEMS'}")
        print(res.stdout + res.stderr[-2000:] * (res.returncode != 0), end="")
        ok &= res.returncode == 0
    return ok
