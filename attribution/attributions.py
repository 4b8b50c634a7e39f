"""The attribution dataset, handed from the IG stage to selection, labels and reports.

    <attribution_dir>/settings.json            the fingerprint of the run (resume refuses another)
    <attribution_dir>/shards/rankR-of-N.jsonl   rows as each process writes them (resumable)
    <attribution_dir>/attributions/            the merged Hugging Face dataset, in record order
    <attribution_dir>/summary.json             every input record accounted for, with reasons

A row: id, status ("ok" / "skipped"), reason, segments ([start, end) characters of the trace),
trace_start, answer, input_ids, token_start (first character of each token), token_segment
(segment index; -1 prompt, -2 tail), token_ig, f_input, f_baseline, completeness_gap, ig_steps_used (points
with a gradient), ig_converged, ig_change (auto: relative L1 change of token IG at the last doubling), features
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


def _spread(values) -> dict:
    x = np.asarray(values, dtype=np.float64)
    return {"mean": float(x.mean()), "median": float(np.median(x)), "p90": float(np.quantile(x, 0.9)), "max": float(x.max())}


def ig_quality(ok: list[dict]) -> dict:
    """How exact the attributions are (gap and points per trace, the unconverged by id) and how likely the
    attribution model finds the gold answer at the IG target, exp F(x): IG explains F only as far as the model
    would produce it."""
    if not ok:
        return {"completeness_gap": None, "points": None, "unconverged": [], "answer_probability": None}
    p = np.exp([r["f_input"] for r in ok])
    return {"completeness_gap": _spread([r["completeness_gap"] for r in ok]),
            "points": {**_spread([r["ig_steps_used"] for r in ok]), "total": int(sum(r["ig_steps_used"] for r in ok))},
            "unconverged": [r["id"] for r in ok if not r["ig_converged"]],
            "answer_probability": {"median": float(np.median(p)), "p10": float(np.quantile(p, 0.1)),
                                   "below_0.5": float(np.mean(p < 0.5))}}


def ig_quality_lines(q: dict) -> list[str]:
    """The summary's IG figures in words, and a warning per problem (the runner prints them; reports reuse them)."""
    if q["completeness_gap"] is None:
        return []
    g, n, p = q["completeness_gap"], q["points"], q["answer_probability"]
    lines = [f"IG completeness gap: median {g['median']:.3f}, 90th percentile {g['p90']:.3f}, max {g['max']:.3f}; "
             f"points per trace: median {n['median']:.0f}, 90th percentile {n['p90']:.0f}, max {n['max']:.0f} "
             f"({n['total']} in all); P(gold answer) at the IG target: median {p['median']:.2f}, 10th percentile "
             f"{p['p10']:.2f}, {100 * p['below_0.5']:.0f}% below 0.5"]
    if q["unconverged"]:
        lines.append(f"WARNING: {len(q['unconverged'])} traces are not converged (kept, flagged ig_converged: false): "
                     f"{', '.join(q['unconverged'][:10])}{' ...' if len(q['unconverged']) > 10 else ''}; raise ig_steps, "
                     f"or use ig_steps: auto with a larger ig_max_steps (docs/measurements.md: IG points)")
    if p["median"] < 0.5:
        lines.append(f"WARNING: the attribution model gives the gold answer a median probability of {p['median']:.2f} at "
                     f"the IG target: the forced tail (ig_answer_suffix) is probably not the model's own format")
    return lines


def merge(out: str | Path, records: list[Record], world: int, load: LoadReport | None = None) -> dict:
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
    skipped: dict[str, list[str]] = {}
    for r in ordered:
        if r["status"] != "ok":
            skipped.setdefault(r["reason"], []).append(r["id"])
    load = load or LoadReport("records given by the caller", kept=len(records))
    summary = {
        "records_in": load.rows, "skipped_at_load": load.skipped_ids,
        "records": len(ordered), "attributed": len(ok), "skipped": {k: len(v) for k, v in skipped.items()},
        "skipped_ids": skipped, **ig_quality(ok),
        "tokens": int(sum(len(r["input_ids"]) for r in ok)),
        "ig_seconds": float(sum(r["seconds"] for r in ok)),
    }
    datasets.Dataset.from_list([{**r, "features": json.dumps(r["features"])} for r in ordered]).save_to_disk(
        str(out / "attributions"))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"attributed {len(ok)} of {load.rows} input records; skipped at load {dict(load.skipped) or 'none'}; "
          f"skipped here {summary['skipped'] or 'none'}")
    print("\n".join(ig_quality_lines(summary)))
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
