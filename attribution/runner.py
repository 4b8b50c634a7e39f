"""Stream records through IG and write per-record attribution rows, resumable and sharded.

Each process (``accelerate launch`` starts N; a plain run is one) takes every N-th record and
appends rows to its own shard; a rerun skips ids already stored. When all shards are done the main
process merges them (attribution.attributions owns the files). Records that cannot be attributed
(over-length, no answer) get a row with their reason: never a crash mid-run, never a silent drop.
"""
from __future__ import annotations

import time
import zlib

from common.config import AttributionArguments, TracesArguments
from common.recipe import attribution_model
from data.prompts import attribution_text
from data.records import LoadReport, Record

from . import attributions
from .alignment import align
from .features import segment_features
from .integrated_gradients import integrated_gradients, open_path
from .segments import split_segments


def _ig_text(tokenizer, rec: Record, segs, traces: TracesArguments, cfg: AttributionArguments):
    """The text IG explains (prompt + trace + forced answer suffix) and its tokens aligned to ``segs``."""
    pt = attribution_text(tokenizer, rec.question, rec.trace, rec.answer, cfg.ig_answer_suffix, traces.system_prompt)
    return pt, align(tokenizer, pt, segs)


def target_logprob(model, tokenizer, rec: Record, traces: TracesArguments, cfg: AttributionArguments) -> float:
    """F(x) of IG on ``rec`` without integrating: the gold answer's summed log-prob at the IG target
    (one forward; how well the attribution model knows the answer it is asked to explain)."""
    segs = split_segments(rec.trace, traces.keyword_list)
    _, al = _ig_text(tokenizer, rec, segs, traces, cfg)
    with open_path(model, al.input_ids, al.answer_positions) as path:
        return path.ends({})[1]


def attribute_record(model, tokenizer, rec: Record, traces: TracesArguments, cfg: AttributionArguments) -> dict:
    """One output row: token IG, token -> segment map, segment spans, target values and gap."""
    segs = split_segments(rec.trace, traces.keyword_list)
    row = {"id": rec.id, "status": "ok", "reason": "", "segments": [[s.start, s.end] for s in segs], "trace_start": 0,
           "answer": rec.answer, "input_ids": [], "token_start": [], "token_segment": [], "token_ig": [],
           "f_input": None, "f_baseline": None, "completeness_gap": None, "ig_steps_used": None, "ig_converged": None,
           "ig_change": None, "features": {}, "seconds": 0.0}
    if not rec.answer:
        why = "trace cut off before </think>" if rec.meta.get("truncated") else "no gold answer"
        return {**row, "status": "skipped", "reason": f"answer missing ({why})"}
    pt, al = _ig_text(tokenizer, rec, segs, traces, cfg)
    if len(al.input_ids) > cfg.ig_max_length:
        return {**row, "status": "skipped", "reason": f"over length ({len(al.input_ids)} > ig_max_length {cfg.ig_max_length})"}
    t0 = time.perf_counter()
    mask = al.token_segment >= 0 if cfg.ig_baseline_scope == "trace" else None
    baseline_id = tokenizer.pad_token_id if cfg.ig_baseline == "pad" else None
    res = integrated_gradients(model, al.input_ids, al.answer_positions, mask, baseline_id, rule=cfg.ig_rule,
                               steps=cfg.ig_steps, tolerance=cfg.ig_tolerance, max_steps=cfg.ig_max_steps,
                               internal_batch=cfg.ig_internal_batch,
                               gradient_checkpointing=cfg.ig_gradient_checkpointing)
    if cfg.ig_features:
        feats = segment_features(model, tokenizer, pt.prompt, [s.text for s in segs], rec.answer, cfg.ig_features,
                                 cfg.ig_answer_suffix, cfg.confidence_samples, zlib.crc32(rec.id.encode()))
        row["features"] = {k: v.tolist() for k, v in feats.items()}
    return {**row, "trace_start": pt.trace_start, "input_ids": al.input_ids.tolist(), "token_start": al.offsets[:, 0].tolist(),
            "token_segment": al.token_segment.tolist(), "token_ig": res.token_ig.tolist(),
            "f_input": res.f_input, "f_baseline": res.f_baseline, "completeness_gap": res.completeness_gap,
            "ig_steps_used": res.steps, "ig_converged": res.converged, "ig_change": res.change, "seconds": time.perf_counter() - t0}


def run(traces: TracesArguments, cfg: AttributionArguments, model_args, records: list[Record],
        model=None, tokenizer=None, load: LoadReport | None = None) -> dict:
    """Attribute every record into ``cfg.attribution_dir``; returns the summary (main process), which
    also counts the rows ``load`` (the loader's report) skipped."""
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from common.modeling import load_model, load_tokenizer

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu: several CPU processes join over gloo
    out = cfg.attribution_dir
    attr_args = attribution_model(cfg, model_args)
    # the recipe's chat template belongs to the trained model; another attribution model keeps its own
    template = traces.chat_template if attr_args.model_name_or_path == model_args.model_name_or_path else None
    if state.is_main_process:
        attributions.check_settings(out, traces, cfg, attr_args.model_name_or_path)
    state.wait_for_everyone()
    store = attributions.shard(out, state.process_index, state.num_processes)
    mine = [r for i, r in enumerate(records) if i % state.num_processes == state.process_index]
    todo = [r for r in mine if r.id not in store.done]
    if todo:
        tokenizer = tokenizer or load_tokenizer(attr_args.model_name_or_path, template)
        if model is None:
            model = load_model(attr_args, for_training=False).to(state.device)
    tokens, t0 = 0, time.perf_counter()
    bar = tqdm(todo, desc=f"IG rank {state.process_index}", disable=not todo, initial=len(mine) - len(todo),
               total=len(mine))
    for done, rec in enumerate(bar, 1):
        row = attribute_record(model, tokenizer, rec, traces, cfg)
        store.append(row)
        tokens += len(row["input_ids"])
        dt = time.perf_counter() - t0
        bar.set_postfix(traces_s=f"{done / dt:.2f}", tokens_s=f"{tokens / dt:.0f}")
    state.wait_for_everyone()
    summary = {}
    if state.is_main_process:
        summary = attributions.merge(out, records, state.num_processes, load)
    state.wait_for_everyone()
    return summary
