"""The attribution dataset, handed from the IG stage to selection, labels and reports.

    <attribution_dir>/settings.json            the fingerprint of the run (resume refuses another)
    <attribution_dir>/shards/rankR-of-N.jsonl   rows as each process writes them (resumable)
    <attribution_dir>/attributions/            the merged Hugging Face dataset, in record order
    <attribution_dir>/summary.json             every input record accounted for, with reasons

A row: id, status ("ok" / "skipped"), reason, segments ([start, end) characters of the trace),
trace_start, answer, input_ids, token_start (first character of each token), token_segment
(segment index; -1 prompt, -2 tail), token_ig, f_input, f_baseline, completeness_gap, features
(per-segment lists), seconds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.config import fingerprint
from data.records import LoadReport, Record
from data.store import JsonlStore

SETTINGS = "settings.json"


def check_settings(out: str | Path, traces, attribution, model_name: str) -> None:
    """Record the run's fingerprint, or refuse to continue a run made with other settings."""
    out = Path(out)
    settings = fingerprint(traces, attribution) | {"model": model_name}
    path = out / SETTINGS
    if path.exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if diff:
            raise ValueError(f"{out} holds attributions made with other settings {diff} (stored, now); "
                             f"use another attribution_dir or delete this one")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=1))


def shard(out: str | Path, rank: int, world: int) -> JsonlStore:
    """The resumable row store of one process."""
    return JsonlStore(Path(out) / "shards" / f"rank{rank}-of-{world}.jsonl")


def merge(out: str | Path, records: list[Record], world: int, gap_warn: float, load: LoadReport | None = None) -> dict:
    """Join the shards in record order into ``out/attributions`` and ``out/summary.json``; the summary
    accounts for every input row: records_in = skipped at load + attributed + skipped here."""
    import datasets

    out = Path(out)
    rows = {}
    for path in sorted((out / "shards").glob(f"rank*-of-{world}.jsonl")):
        for row in JsonlStore(path).rows():
            rows[row["id"]] = row
    missing = [r.id for r in records if r.id not in rows]
    if missing:
        raise RuntimeError(f"{len(missing)} records have no attribution row (e.g. {missing[:3]}); rerun to resume")
    ordered = [rows[r.id] for r in records]
    ok = [r for r in ordered if r["status"] == "ok"]
    gaps = np.array([r["completeness_gap"] for r in ok], dtype=np.float64)
    skipped: dict[str, list[str]] = {}
    for r in ordered:
        if r["status"] != "ok":
            skipped.setdefault(r["reason"], []).append(r["id"])
    load = load or LoadReport("records given by the caller", kept=len(records))
    summary = {
        "records_in": load.rows, "skipped_at_load": load.skipped_ids,
        "records": len(ordered), "attributed": len(ok), "skipped": {k: len(v) for k, v in skipped.items()},
        "skipped_ids": skipped,
        "mean_completeness_gap": float(gaps.mean()) if len(gaps) else None,
        "median_completeness_gap": float(np.median(gaps)) if len(gaps) else None,
        f"gap_over_{gap_warn}": [r["id"] for r in ok if r["completeness_gap"] > gap_warn],
        "tokens": int(sum(len(r["input_ids"]) for r in ok)),
        "ig_seconds": float(sum(r["seconds"] for r in ok)),
    }
    datasets.Dataset.from_list([{**r, "features": json.dumps(r["features"])} for r in ordered]).save_to_disk(
        str(out / "attributions"))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    n_warn = len(summary[f"gap_over_{gap_warn}"])
    print(f"attributed {len(ok)} of {load.rows} input records; skipped at load {dict(load.skipped) or 'none'}; "
          f"skipped here {summary['skipped'] or 'none'}; "
          f"mean completeness gap {summary['mean_completeness_gap']}")
    if n_warn:
        print(f"WARNING: {n_warn} traces have a completeness gap > {gap_warn}: their attributions are not converged; "
              f"raise ig_steps (ids in summary.json; README: attribution benchmark)")
    return summary


def finished(out: str | Path | None) -> bool:
    """Whether ``out`` holds a merged attribution run."""
    return out is not None and (Path(out) / "attributions").exists()


def load_attributions(out: str | Path) -> dict[str, dict]:
    """id -> row of a finished run (features decoded)."""
    import datasets

    path = Path(out) / "attributions"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m attribution ig --config ...` first")
    ds = datasets.load_from_disk(str(path))
    return {r["id"]: {**r, "features": json.loads(r["features"])} for r in ds}


def load_summary(out: str | Path) -> dict:
    return json.loads((Path(out) / "summary.json").read_text())
