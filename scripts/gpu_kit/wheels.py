"""What travels to the GPU box: its own package list, and the lock file of the wheels it lacks, resolved
at this repo's pins around the box's packages, with each wheel's size and sha256 (no download needed
to know them); ``fetch`` downloads exactly those."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOX_LIST = ROOT / "scripts" / "gpu_box_packages.txt"
LOCK = ROOT / "scripts" / "gpu_wheels.lock"
TRANSFER_MIB = 60  # one transfer, the repo's own files included (the box takes 64 MiB; 4 MiB of headroom)
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


def resolve(carry: set[str] = frozenset()) -> list[dict]:
    """pip's report of WANT resolved for the box at this repo's pins, the box's known versions standing
    in as metadata-only wheels (version ``X+box``), except the packages ``carry`` names."""
    box, _ = box_packages()
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
        return json.loads((work / "report.json").read_text())["install"]


def lock(carry: set[str], out: Path = LOCK) -> list[Wheel]:
    """Resolve (:func:`resolve`); keep what the box lacks, what --carry names, and each box package of
    unread version that a carried package asks for riskily (:func:`_risky`); write name, version, size,
    sha256 and why it travels."""
    box, read = box_packages()
    items = resolve(carry)
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
    a wheel already there and intact is kept, so a broken download resumes; one the lock no longer
    names is removed, so a transfer carries the lock and nothing else."""
    locked = read_lock()
    for stale in {f for t in {w.transfer for w in locked} for f in (folder / str(t)).glob("*.whl")} - {
            folder / str(w.transfer) / w.file for w in locked}:
        print(f"not in the lock, removed: {stale}")
        stale.unlink()
    for w in locked:
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
    for t in sorted({w.transfer for w in locked}):
        files = list((folder / str(t)).glob("*.whl"))
        print(f"{folder / str(t)}: {len(files)} wheels, {sum(f.stat().st_size for f in files) / 2**20:.1f} MiB")
