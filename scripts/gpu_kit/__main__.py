"""The GPU kit's command line.

    python -m scripts.gpu_kit lock [--carry NAMES]   # here (needs the package index): resolve, write the lock file
    python -m scripts.gpu_kit fetch DIR              # here: download the locked wheels, sha256-checked, into DIR/1, DIR/2
    python -m scripts.gpu_kit rehearse DIR           # here: install DIR/1, DIR/2 into a box-like CPython 3.12 venv
    python -m scripts.gpu_kit plan                   # anywhere, offline: transfers, MiB, minutes; every check, and
                                                     # why it would skip here; exits 1 if the plan does not fit
    python -m scripts.gpu_kit run --wheels DIR/1 --out OUT   # on the box: install, then each part under its limit
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from .checks import PARTS, TARGET, install, run
from .plan import plan
from .rehearse import rehearse
from .wheels import LOCK, ROOT, fetch, lock, norm


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m scripts.gpu_kit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    lk = sub.add_parser("lock", help="resolve for the box and write scripts/gpu_wheels.lock (needs the index)")
    lk.add_argument("--carry", default="", help="comma-separated box packages to carry anyway (their box version breaks a check)")
    fe = sub.add_parser("fetch", help="download the locked wheels into DIR/1, DIR/2, sha256-checked")
    fe.add_argument("dir", type=Path)
    rh = sub.add_parser("rehearse", help="install the fetched wheels into a box-like CPython 3.12 venv (needs the index)")
    rh.add_argument("dir", type=Path)
    rh.add_argument("--python", default="python3.12", help="a CPython 3.12 interpreter")
    rh.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "segsft-box-like")
    sub.add_parser("plan", help="offline: the transfers, MiB and minutes, the modules, every check; exit 1 if it does not fit")
    ins = sub.add_parser("install", help="on the box: install wheel folders into the private target, check requirements")
    ins.add_argument("wheels", help="comma-separated folders of wheels (may be empty)")
    ins.add_argument("--target", default=TARGET)
    rn = sub.add_parser("run", help="on the box: every part under its limit, figures into --out")
    rn.add_argument("--wheels", action="append", default=[], type=lambda w: str(Path(w).resolve()),
                    help="a folder of wheels from fetch (repeatable)")
    rn.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check")
    rn.add_argument("--parts", default=",".join(x.name for x in PARTS), help="comma-separated, in the run's order")
    a = p.parse_args()
    if a.cmd == "lock":
        wheels = lock({norm(n) for n in a.carry.split(",") if n})
        for t in sorted({w.transfer for w in wheels}):
            ws = [w for w in wheels if w.transfer == t]
            print(f"transfer {t}: {len(ws)} wheels, {sum(w.size for w in ws) / 2**20:.1f} MiB")
        print(f"written: {LOCK}")
    elif a.cmd == "fetch":
        fetch(a.dir)
    elif a.cmd == "rehearse":
        if a.venv.exists():
            sys.exit(f"{a.venv} exists: remove it or pass another --venv (the rehearsal builds it afresh)")
        sys.exit(0 if rehearse(a.python, a.dir.resolve(), a.venv) else 1)
    elif a.cmd == "plan":
        sys.exit(0 if plan() else 1)
    elif a.cmd == "install":
        problems, later = install([w for w in a.wheels.split(",") if w], a.target)
        print("".join(f"later: {x}\n" for x in later) + "".join(f"problem: {x}\n" for x in problems), end="")
        sys.exit(1 if problems else 0)
    else:
        names = a.parts.split(",")
        if unknown := set(names) - {x.name for x in PARTS}:
            sys.exit(f"unknown parts {sorted(unknown)}; the parts are {[x.name for x in PARTS]}")
        sys.exit(0 if run(a.wheels, a.out, [x for x in PARTS if x.name in names]) else 1)


if __name__ == "__main__":
    main()
