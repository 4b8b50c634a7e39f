"""Stream records through IG and write per-record attributions, resumable and sharded.

Each process (``accelerate launch`` starts N; a plain run is one) takes every N-th record and
appends rows to its own shard jsonl; a rerun skips ids already stored. When all shards are done
the main process merges them, in record order, into one Hugging Face dataset plus a summary.
Records that cannot be attributed (over-length, no answer) get a row with their reason: never a
crash mid-run, never a silent drop.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from data.loaders import load_records
from data.prompts import attribution_text
from data.records import Record
from data.store import JsonlStore

from .alignment import align
from .features import segment_features
from .integrated_gradients import integrated_gradients
from .segments import split_segments

CONFIG_KEYS = ("traces", "traces_split", "traces_fields", "traces_chat", "traces_limit", "chat_template", "system_prompt",
               "keywords", "ig_rule", "ig_steps", "ig_baseline", "ig_baseline_scope", "ig_answer_suffix",
               "ig_max_length", "ig_features")


def load_trace_records(args) -> list[Record]:
    records, report = load_records(args.traces, fields=args.traces_fields, split=args.traces_split,
                                   chat=args.traces_chat, on_bad=args.on_bad, limit=args.traces_limit)
    print(report.summary())
    return records


def attribute_record(model, tokenizer, rec: Record, args) -> dict:
    """One output row: token IG, token -> segment map, segment spans, target values and gap."""
    segs = split_segments(rec.trace, args.keyword_spec)
    row = {"id": rec.id, "status": "ok", "reason": "", "segments": [[s.start, s.end] for s in segs], "trace_start": 0,
           "answer": rec.answer, "input_ids": [], "token_start": [], "token_segment": [], "token_ig": [],
           "f_input": None, "f_baseline": None, "completeness_gap": None, "features": {}, "seconds": 0.0}
    if not rec.answer:
        why = "trace cut off before </think>" if rec.meta.get("truncated") else "no gold answer"
        return {**row, "status": "skipped", "reason": f"answer missing ({why})"}
    pt = attribution_text(tokenizer, rec.question, rec.trace, rec.answer, args.ig_answer_suffix, args.system_prompt)
    al = align(tokenizer, pt, segs)
    if len(al.input_ids) > args.ig_max_length:
        return {**row, "status": "skipped", "reason": f"over length ({len(al.input_ids)} > ig_max_length {args.ig_max_length})"}
    t0 = time.perf_counter()
    mask = al.token_segment >= 0 if args.ig_baseline_scope == "trace" else None
    baseline_id = tokenizer.pad_token_id if args.ig_baseline == "pad" else None
    res = integrated_gradients(model, al.input_ids, al.answer_positions, mask, baseline_id, args.ig_rule, args.ig_steps,
                               args.ig_internal_batch, args.ig_gradient_checkpointing)
    if args.ig_features:
        feats = segment_features(model, tokenizer, pt.prompt, [s.text for s in segs], rec.answer, args.ig_features,
                                 args.ig_answer_suffix)
        row["features"] = {k: v.tolist() for k, v in feats.items()}
    return {**row, "trace_start": pt.trace_start, "input_ids": al.input_ids.tolist(), "token_start": al.offsets[:, 0].tolist(),
            "token_segment": al.token_segment.tolist(), "token_ig": res.token_ig.tolist(),
            "f_input": res.f_input, "f_baseline": res.f_baseline, "completeness_gap": res.completeness_gap,
            "seconds": time.perf_counter() - t0}


def _check_config(out: Path, args, model_name: str) -> None:
    """A resumed run must use the settings of the run it continues."""
    config = {k: getattr(args, k) for k in CONFIG_KEYS} | {"model": model_name}
    path = out / "config.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
        if diff:
            raise ValueError(f"{out} holds attributions made with other settings {diff} (stored, now); "
                             f"use another attribution_dir or delete this one")
    else:
        path.write_text(json.dumps(config, indent=1))


def run(args, model_args, model=None, tokenizer=None, records: list[Record] | None = None) -> dict:
    """Attribute every record of the recipe's traces (or ``records``, already loaded); returns the
    summary (main process)."""
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from selective_sft.modeling import load_model, load_tokenizer

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu: several CPU processes join over gloo
    out = Path(args.attribution_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = load_trace_records(args) if records is None else records
    if state.is_main_process:
        _check_config(out, args, model_args.model_name_or_path)
    state.wait_for_everyone()
    store = JsonlStore(out / "shards" / f"rank{state.process_index}-of-{state.num_processes}.jsonl")
    mine = [r for i, r in enumerate(records) if i % state.num_processes == state.process_index]
    todo = [r for r in mine if r.id not in store.done]
    if todo:
        tokenizer = tokenizer or load_tokenizer(model_args.model_name_or_path, args.chat_template)
        if model is None:
            model = load_model(model_args, for_training=False)
            if state.device.type != "cpu":
                model = model.to(state.device)
    tokens, t0 = 0, time.perf_counter()
    bar = tqdm(todo, desc=f"IG rank {state.process_index}", disable=not todo, initial=len(mine) - len(todo),
               total=len(mine))
    for done, rec in enumerate(bar, 1):
        row = attribute_record(model, tokenizer, rec, args)
        store.append(row)
        tokens += len(row["input_ids"])
        dt = time.perf_counter() - t0
        bar.set_postfix(traces_s=f"{done / dt:.2f}", tokens_s=f"{tokens / dt:.0f}")
    state.wait_for_everyone()
    summary = {}
    if state.is_main_process:
        summary = merge(out, records, state.num_processes, args.ig_gap_warn)
    state.wait_for_everyone()
    return summary


def merge(out: Path, records: list[Record], num_shards: int, gap_warn: float = 0.1) -> dict:
    """Join the shards in record order into ``out/attributions`` (HF dataset) and ``out/summary.json``."""
    import datasets

    rows = {}
    for path in sorted((out / "shards").glob(f"rank*-of-{num_shards}.jsonl")):
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
    summary = {
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
    print(f"attributed {len(ok)}/{len(ordered)} records; skipped {summary['skipped'] or 'none'}; "
          f"mean completeness gap {summary['mean_completeness_gap']}")
    if n_warn:
        print(f"WARNING: {n_warn} traces have a completeness gap > {gap_warn}: their attributions are not converged; "
              f"raise ig_steps (ids in summary.json; README: attribution benchmark)")
    return summary


def load_attributions(out_dir: str | Path) -> dict[str, dict]:
    """id -> attribution row, from a finished run's dataset."""
    import datasets

    ds = datasets.load_from_disk(str(Path(out_dir) / "attributions"))
    return {r["id"]: {**r, "features": json.loads(r["features"])} for r in ds}
