"""The GPU kit on CPU: the LIMO-hours fit and the FLOP bound by hand; the lock, the plan (the dry run),
the install's requirement check and the run's time limits on real files and processes."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.gpu_kit import checks, plan, wheels

from benchmarks.bench_gpu import LIMO_TRACES, cases, flop_bound_hours, limo_hours

ROOT = Path(__file__).resolve().parent.parent


def test_limo_hours_fits_linear_and_quadratic_cost():
    # s/point = 1e-4 L + 1e-9 L^2: 0.4256 s at 4096, 1.9068 s at 16384; at 6000: 0.636 s
    seconds = {4096: 1e-4 * 4096 + 1e-9 * 4096**2, 16384: 1e-4 * 16384 + 1e-9 * 16384**2}
    assert limo_hours(seconds, 6000) == pytest.approx(LIMO_TRACES * 50 * (0.6 + 0.036) / 3600)
    assert limo_hours(seconds, 6000, points=80) == pytest.approx(LIMO_TRACES * 80 * (0.6 + 0.036) / 3600)  # auto's mean


def test_flop_bound_by_hand():
    # 7B: d 3584, 28 layers, 28 heads (128 each), 4 KV heads (kv width 512), MLP 18944
    n = 28 * (2 * 3584**2 + 2 * 3584 * 512 + 3 * 3584 * 18944)
    per_point = 4 * n * 6000 + 8 * 28 * 3584 * 6000**2
    assert flop_bound_hours("r1-distill-qwen-7b", 6000, 989.0) == pytest.approx(817 * 50 * per_point / 989e12 / 3600)
    assert 6.5e9 < n < 7.0e9  # the matmul weights of a 7.6B model without its 1.1B embedding and output rows


def test_every_case_listed():
    c = cases([4096, 16384], [1, 4])
    assert len(c) == 2 * (2 * 2 + 1) and ("paper_loop", 16384, 1, False) in c and ("engine", 4096, 4, True) in c


# ------------------------------------------------------------------ the kit: lock, plan, install, run


def _kit(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.gpu_kit", *args], cwd=ROOT, capture_output=True, text=True, **kw)


def test_dry_run_prints_a_plan_that_fits_and_names_every_check():
    """The dry run (what `make test` prints): each transfer under the limit, a source for every module
    the checks import, and each check by name with what it proves and why it would skip here."""
    res = _kit("plan")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert out.count(" (fits); run <= ") == len({w.transfer for w in wheels.read_lock()}) and "OVER THE LIMIT" not in out
    assert "MISSING" not in out and "\nunsloth: lock" in out and "\ntorch: box" in out
    for test, proves, _ in plan.gpu_tests():
        line = next(x for x in out.splitlines() if x.strip().startswith(f"{test}:"))
        assert proves and f"{test}: {proves} -- here: " in line
        if not torch.cuda.is_available():
            assert "no CUDA GPU here" in line
    for p in checks.PARTS:
        assert f"{p.name} (<= {p.limit_s} s): {p.proves} -- here: " in out
    assert sum(p.limit_s for p in checks.PARTS) <= 8 * 60  # the whole run inside the 8 minutes


def test_transfers_add_the_repo_to_each_and_flag_the_one_over():
    mib = 2**20
    locked = [wheels.Wheel(1, "a", "1", 30 * mib, "0" * 64, "a.whl", "x"), wheels.Wheel(1, "b", "1", 25 * mib, "0" * 64, "b.whl", "x"),
              wheels.Wheel(2, "c", "1", 10 * mib, "0" * 64, "c.whl", "x")]
    got = plan.transfers(locked, 6 * mib)
    assert [(t, len(ws), mib_, fits) for t, ws, mib_, fits in got] == [(1, 2, 61.0, False), (2, 1, 16.0, True)]


def test_lock_agrees_with_the_pins_and_the_box():
    """Every locked wheel is this repo's pin where there is one; nothing the box has at a known version
    travels; a box package of unread version travels only with the carried package that bounds it."""
    box, _ = wheels.box_packages()
    pins = wheels._pins()
    locked = wheels.read_lock()
    names = {wheels.norm(w.name) for w in locked}
    assert {"trl", "datasets", "unsloth", "unsloth-zoo", "bitsandbytes", "math-verify"} <= names
    for w in locked:
        n = wheels.norm(w.name)
        assert re.fullmatch(r"[0-9a-f]{64}", w.sha256) and w.size > 0 and w.file.lower().startswith(n.replace("-", "_"))
        assert f"-{w.version}-" in w.file and pins.get(n, w.version) == w.version
        assert (w.transfer == 2) == (n in wheels.SECOND)
        if n in box:
            assert box[n] is None and w.why.startswith("the box's version is unread and ")
            assert wheels.norm(w.why.split(" needs ")[0].rsplit(" ", 1)[1]) in names


def test_imported_modules_follow_the_repo_imports(tmp_path, monkeypatch):
    (tmp_path / "pkgx").mkdir()
    (tmp_path / "pkgx" / "__init__.py").write_text("")
    (tmp_path / "pkgx" / "a.py").write_text("import numpy\nfrom . import b\n")
    (tmp_path / "pkgx" / "b.py").write_text("def f():\n    import requests\n    from .c import g\n")
    (tmp_path / "pkgx" / "c.py").write_text("import os, yaml.constructor\n_package_dir('datapkg', 'pip install datapkg')\n")
    (tmp_path / "entry.py").write_text("from pkgx.a import thing\nimport json\n")
    (tmp_path / "unused.py").write_text("import pandas\n")
    monkeypatch.setattr(plan, "ROOT", tmp_path)
    monkeypatch.setattr(plan, "REPO_PACKAGES", {"pkgx"})
    assert plan.imported_modules(["entry.py"]) == {"numpy": {"pkgx/a.py"}, "requests": {"pkgx/b.py"}, "yaml": {"pkgx/c.py"},
                                                     "datapkg": {"pkgx/c.py"}}


def test_install_checks_every_requirement_of_what_it_installed(tmp_path):
    """Wheels with a requirement the environment breaks, one nobody has, one another wheel meets and one
    transfer 2 meets: the two problems are named with what to do, the later one is noted, and the
    install itself went through."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    wheels.metadata_wheel(folder, "kitprobe-one", "1.0", ("numpy<1", "kitprobe-absent", "kitprobe-two>=1.5",
                                                          "bitsandbytes>=0.45"))
    wheels.metadata_wheel(folder, "kitprobe-two", "1.5")
    res = _kit("install", str(folder), "--target", str(tmp_path / "site"))
    problems = [x for x in res.stdout.splitlines() if x.startswith("problem: ")]
    assert res.returncode == 1 and len(problems) == 2, res.stdout + res.stderr
    assert f"kitprobe-one needs numpy<1, {np.__version__} is installed: add --carry numpy" in problems[0] + problems[1]
    assert any("kitprobe-one needs kitprobe-absent, which neither the box nor the wheels have: the lock misses it"
               in x for x in problems)
    if importlib.util.find_spec("bitsandbytes") is None:
        assert "later: kitprobe-one needs bitsandbytes>=0.45: transfer 2 carries it" in res.stdout
    assert sorted(p.name for p in (tmp_path / "site").glob("*.dist-info")) == ["kitprobe_one-1.0.dist-info",
                                                                                "kitprobe_two-1.5.dist-info"]


def test_run_stops_a_hung_part_with_its_children_and_reports_every_part(tmp_path):
    pid_file = tmp_path / "child.pid"
    hang = ("-c", f"import subprocess, time; c = subprocess.Popen(['sleep', '60']); "
                  f"open({str(pid_file)!r}, 'w').write(str(c.pid)); time.sleep(60)")
    parts = [checks.Part("hang", 2, "hangs", (), hang),
             checks.Part("figures", 30, "prints a table", (), ("-c", "print('| figure | 1 |')")),
             checks.Part("broken", 30, "fails", (), ("-c", "print('the reason it broke'); raise SystemExit(3)"))]
    assert checks.run([], tmp_path / "out", parts) is False
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| hang | hangs | 2 |" in report and "STOPPED at its 2 s limit" in report
    assert "| figures | prints a table | 30 |" in report and "| passed |" in report and "\n| figure | 1 |" in report
    assert "| broken | fails | 30 |" in report and "FAILED (exit 3)" in report and "\nthe reason it broke\n" in report
    status = Path(f"/proc/{pid_file.read_text()}/status")
    assert not status.exists() or "\tZ" in status.read_text().split("State:")[1].split("\n")[0]  # gone, or a zombie
    assert (tmp_path / "out" / "box_packages.txt").read_text().count("==") > 10


def test_a_box_version_nobody_read_is_trusted_only_for_old_floors(monkeypatch):
    from packaging.requirements import Requirement

    files = [{"filename": "pkg-1.0-py3-none-any.whl", "upload-time": "2025-11-16T10:00:00Z"},
             {"filename": "pkg-2.0-py3-none-any.whl", "upload-time": "2025-11-17T10:00:00Z"},
             {"filename": "pkg-2.0.tar.gz", "upload-time": "2020-01-01T00:00:00Z"}]
    monkeypatch.setattr(wheels, "_index_files", lambda name: files)
    read = "2026-11-17"
    assert wheels._risky(Requirement("pkg<3"), read) == "needs pkg<3"  # a newer box version may break it
    assert wheels._risky(Requirement("pkg"), read) is None
    assert wheels._risky(Requirement("pkg>=1.0"), read) is None  # released a year and a day before the list
    assert wheels._risky(Requirement("pkg>=2.0,!=2.1"), read) == "needs pkg!=2.1,>=2.0 (released 2025-11-17)"
    assert "taken as recent" in wheels._risky(Requirement("pkg>=3.0"), read)


def test_a_part_needing_what_an_earlier_part_installed_runs(tmp_path, monkeypatch):
    """The run reads each part's needs after the parts before it: a package the install part put into
    the private target counts; a need nothing meets skips that part, naming it."""
    target = tmp_path / "site"
    monkeypatch.setattr(checks, "TARGET", str(target))
    fake = target / "unsloth" / "__init__.py"
    parts = [checks.Part("bnb", 30, "needs bitsandbytes", ("bitsandbytes",), ("-c", "pass")),
             checks.Part("put", 30, "installs", (), ("-c", f"import pathlib; p = pathlib.Path({str(fake)!r}); "
                                                       "p.parent.mkdir(parents=True); p.write_text('')")),
             checks.Part("fast", 30, "needs unsloth", ("unsloth",), ("-c", "import unsloth"))]
    try:
        checks.run([], tmp_path / "out", parts)
    finally:
        import shutil
        shutil.rmtree(target, ignore_errors=True)
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    have_bnb = importlib.util.find_spec("bitsandbytes") is not None
    assert have_bnb or "| bnb | needs bitsandbytes | 30 | 0 | SKIPPED: bitsandbytes is not installed here" in report
    assert "| put | installs | 30 |" in report and "| fast | needs unsloth | 30 |" in report
    assert report.count("| passed |") == 2 + have_bnb and str(target) not in sys.path


def test_a_module_from_nowhere_is_flagged_with_what_to_do(monkeypatch):
    monkeypatch.setattr(plan, "imported_modules", lambda: {m: {"x.py"} for m in ("torch", "trl", "vllm", "kitprobe_nowhere")})
    box, _ = wheels.box_packages()
    got = plan.module_sources(box, wheels.read_lock())
    assert got["torch"] == "box" and got["trl"] == "lock" and got["vllm"].startswith("not needed: ")
    assert got["kitprobe_nowhere"].startswith("MISSING: neither on the box nor in the lock; add its package to WANT")
