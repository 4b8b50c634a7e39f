"""Selection -> the labels dataset the trainer consumes (paper eq. 8-9 supervision).

For each record: take its segments (from its attribution row when there is one), run the recipe's
selector, tokenize the training text (prompt + trace + completion + EOS) once with the trained model's
tokenizer, and set ``labels`` = ``input_ids`` on selected trace tokens and on the tail (the completion:
``</think>`` and the final answer, and EOS), IGNORE on the prompt and unselected segments. Selections
carry over as characters, so the attribution model may tokenize differently from the trained one.
``label_mode: prune`` removes unselected segments from the text instead. ``label_weights: strength``
(soft selection, beyond the paper) adds a per-token ``label_weights`` column: see strength_weights.

Every method drops the same records: with an attribution run, each record it skipped (over length,
no answer) is dropped for every selector, full CoT included; records with no trained token left after
truncation are dropped too (they would make the loss NaN). attribution.labels_dataset owns the files.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.config import SELECTORS, SelectionArguments, TracesArguments
from common.recipe import Recipe, attribution_model
from data.prompts import build_text, training_text
from data.records import LoadReport, Record
from data.synthetic import planted_mask

from .alignment import PROMPT, TAIL, align
from .attributions import ig_quality
from .labels_dataset import IGNORE, WEIGHTS, LabelSummary, load_labels, push, save_labels, tokenizer_signature
from .segments import segments_from_spans, split_segments
from .selection import select, selector_params, trace_view


def selected_chars(attribution: dict, token_selected: np.ndarray, trace_len: int) -> np.ndarray:
    """(trace_len,) bool: the trace characters covered by the selected tokens of an attribution row
    (a token spans from its first character to the next token's)."""
    seg = np.asarray(attribution["token_segment"])
    starts = np.asarray(attribution["token_start"]) - attribution["trace_start"]
    inside = np.flatnonzero(seg >= 0)
    ends = np.r_[starts[inside[1:]], trace_len]
    chars = np.zeros(trace_len, dtype=bool)
    for a, b in zip(starts[inside][token_selected[inside]], ends[token_selected[inside]]):
        chars[max(a, 0) : b] = True
    return chars


def _runs(text: str, chars: np.ndarray) -> list[tuple[str, bool]]:
    """``text`` cut where ``chars`` (a per-character train flag) changes: [(piece, train)]."""
    cuts = [0, *np.flatnonzero(np.diff(chars.astype(np.int8))) + 1, len(text)]
    return [(text[a:b], bool(chars[a])) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def strength_weights(trained: np.ndarray, token_segment: np.ndarray, segment_strength) -> list[float]:
    """Soft selection's per-token loss weights: a trained token inside a segment with a strength
    (``segment_strength``, eq. 4's normalised value; NaN for a part without one) weighs it over the mean
    of all such trained tokens, so they average 1; other trained tokens (the completion, EOS) weigh 1,
    untrained ones 0."""
    strength = np.full(len(trained), np.nan)
    inside = token_segment >= 0
    strength[inside] = np.asarray(segment_strength, dtype=np.float64)[token_segment[inside]]
    weights = trained.astype(np.float32)
    scored = trained & ~np.isnan(strength)
    mean = strength[scored].mean() if scored.any() else 0.0
    if mean > 0:
        weights[scored] = strength[scored] / mean
    return weights.tolist()


def to_messages(prompt_messages: list[dict], parts: list[tuple[str, bool, float | None]]) -> list[dict]:
    """The portable text form: the prompt's messages, then the assistant turn as its parts, each with
    its text, train flag and (soft selection) segment strength, and the same as axolotl's ``train_detail``
    character spans (inclusive ends)."""
    content, detail, at = "", [], 0
    for text, train, _ in parts:
        if text:
            detail.append({"begin_offset": at, "end_offset": at + len(text) - 1, "train": train})
            content, at = content + text, at + len(text)
    return [*prompt_messages, {"role": "assistant", "content": content, "train_detail": detail,
                               "parts": [{"text": t, "train": tr} | ({} if w is None else {"strength": w})
                                         for t, tr, w in parts if t]}]


def relabel(tokenizer, messages: list[dict], think_prefix: str = "") -> dict:
    """Token labels for ``tokenizer`` from the portable text form: a token is trained when its first
    character lies in a trained part; EOS is trained. The same tokenizer gives back the same labels
    (and label weights, when the parts carry strengths)."""
    *prompt, assistant = messages
    rendered = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) + think_prefix
    pt = build_text(rendered, assistant["content"], tokenizer.eos_token)
    spans = [[d["begin_offset"], d["end_offset"] + 1] for d in assistant["train_detail"]]
    al = align(tokenizer, pt, segments_from_spans(assistant["content"], spans))
    train = np.asarray([d["train"] for d in assistant["train_detail"]], dtype=bool)
    inside = al.token_segment >= 0
    trained = al.token_segment == TAIL
    trained[inside] = train[al.token_segment[inside]]
    row = {"input_ids": al.input_ids.tolist(), "attention_mask": [1] * len(al.input_ids),
           "labels": np.where(trained, al.input_ids, IGNORE).tolist(),
           "_trace_tokens": int(inside.sum()), "_trained_trace_tokens": int(trained[inside].sum())}
    if any("strength" in p for p in assistant["parts"]):
        part_strength = [p.get("strength", np.nan) for p in assistant["parts"]]
        row[WEIGHTS] = strength_weights(trained, al.token_segment, part_strength)
    return row


def label_record(tokenizer, rec: Record, spans: list[list[int]], attribution: dict | None, cfg: SelectionArguments,
                 system: str | None = None, think_prefix: str = "") -> dict:
    """One labelled example with its segment metadata (before truncation)."""
    segs = segments_from_spans(rec.trace, spans)
    view = trace_view(rec.id, rec.trace, rec.answer, spans, attribution, cfg.strength_aggregation,
                      planted_mask(rec.meta, spans))
    sel = select(view, cfg)
    seg_sel = sel.segment_selected
    soft = cfg.label_weights == "strength"
    if soft and (seg_sel is None or view.scores is None):
        raise ValueError(f"label_weights: strength weighs segments by their attribution strength: it needs a "
                         f"segment-level selector and the attribution run (selector {cfg.selector!r}, record {rec.id})")
    pt = training_text(tokenizer, rec.question, rec.trace, rec.completion, system, think_prefix)
    al = align(tokenizer, pt, segs)
    inside = al.token_segment >= 0
    n_trace = int(inside.sum())
    if cfg.label_mode == "prune":
        if seg_sel is None:
            raise ValueError(f"selector {cfg.selector!r} selects tokens, not segments: it cannot prune; use label_mode: mask")
        kept = "".join(s.text for s, keep in zip(segs, seg_sel) if keep)
        pt = training_text(tokenizer, rec.question, kept, rec.completion, system, think_prefix)
        # only prompt vs the rest matters here: everything after the prompt is trained
        al = align(tokenizer, pt, segments_from_spans(kept, [[0, len(kept)]]))
        trained = al.token_segment != PROMPT
        token_spans = []  # the pruned text has other segments; spans refer to the full text only in mask mode
    else:
        trained = al.token_segment == TAIL  # the completion and the final EOS are always learned
        if seg_sel is not None:
            trained[inside] = seg_sel[al.token_segment[inside]]
        else:  # token-level selection: a training token is trained when its first character was selected
            chars = selected_chars(attribution, sel.token_selected, len(rec.trace))
            trained[inside] = chars[al.offsets[inside, 0] - pt.trace_start]
        token_spans = [[int(a), int(b)] for a, b in al.segment_token_spans()]
    ids = al.input_ids
    labels = np.where(trained, ids, IGNORE)
    scores, k = view.scores, len(segs)
    zeros = [0.0] * k
    if cfg.label_mode == "prune":
        parts = [(kept, True, None)]
    elif seg_sel is not None:
        strengths = scores.norm_strength.tolist() if soft else [None] * k
        parts = [(s.text, bool(keep), w) for s, keep, w in zip(segs, seg_sel, strengths)]
    else:
        chars = selected_chars(attribution, sel.token_selected, len(rec.trace))
        parts = [(t, train, None) for t, train in _runs(rec.trace, chars)]
    weights = {WEIGHTS: strength_weights(trained, al.token_segment, scores.norm_strength)} if soft else {}
    return {
        "id": rec.id, "input_ids": ids.tolist(), "attention_mask": [1] * len(ids), "labels": labels.tolist(), **weights,
        "messages": to_messages(pt.prompt_messages, parts + [(rec.completion, True, None)]),
        "segment_char_spans": [[s.start, s.end] for s in segs], "segment_token_spans": token_spans,
        "strength": scores.strength.tolist() if scores else zeros,
        "norm_strength": scores.norm_strength.tolist() if scores else zeros,
        "consistency": scores.consistency.tolist() if scores else zeros,
        "selected": (seg_sel if seg_sel is not None else np.zeros(k, bool)).tolist(),
        "selector": cfg.selector, "selector_params": json.dumps(selector_params(cfg), sort_keys=True),
        "mode": cfg.label_mode, "note": sel.note,
        # counted in the summary, then removed: tokens of the full trace, and how many of them are trained
        "_trace_tokens": n_trace, "_trained_trace_tokens": int(trained[al.token_segment >= 0].sum()),
    }


def build_labels(tokenizer, records: list[Record], attributions: dict[str, dict] | None, cfg: SelectionArguments,
                 traces: TracesArguments, max_length: int | None = None, think_prefix: str = "",
                 load: LoadReport | None = None):
    """(rows, LabelSummary) for all records; see the module docstring for what is dropped and why.
    Without an attribution run (text-level selectors only) records are segmented with the traces' keywords.
    The summary accounts for every input row: records_in = out + dropped + skipped at load (``load``)."""
    summary = LabelSummary(cfg.selector, cfg.label_mode, records_in=load.rows if load else len(records),
                           tokenizer=tokenizer_signature(tokenizer), skipped_at_load=load.skipped_ids if load else {})
    if attributions is None and SELECTORS[cfg.selector] is not None:
        raise ValueError(f"selector {cfg.selector!r} needs the attribution run; run `python -m attribution ig` first")
    rows = []
    for rec in records:
        attr = None if attributions is None else attributions.get(rec.id)
        if attributions is not None and (attr is None or attr["status"] != "ok"):
            summary.drop(rec.id, f"no attribution ({attr['reason'] if attr else 'not in the attribution run'})")
            continue
        spans = attr["segments"] if attr else [[s.start, s.end] for s in split_segments(rec.trace, traces.keyword_list)]
        row = label_record(tokenizer, rec, spans, attr, cfg, traces.system_prompt, think_prefix)
        if _fits(row, summary, max_length):
            summary.trace_tokens += row.pop("_trace_tokens")
            summary.trace_tokens_selected += row.pop("_trained_trace_tokens")
            rows.append(row)
    return rows, summary


def _made_by(tokenizer, traces: TracesArguments, cfg: SelectionArguments, attributions: dict[str, dict] | None,
             recipe: Recipe) -> dict:
    """The facts a dataset card states about how these labels were made."""
    facts = {"selector": f"`{cfg.selector}` {json.dumps(selector_params(cfg), sort_keys=True)}",
             "traces": f"`{traces.traces}` (keywords: {traces.keywords})",
             "tokenizer": f"`{getattr(tokenizer, 'name_or_path', '')}` ({len(tokenizer)} tokens), chat template: "
                          f"{'`' + traces.chat_template + '`' if traces.chat_template else 'the tokenizer' + chr(39) + 's'}"}
    if cfg.label_weights == "strength":
        facts["label weights"] = ("`label_weights`: trained trace tokens weigh their segment's normalised strength "
                                  "(mean 1), the completion 1; train with this repo's loss (selective_sft.loss)")
    if attributions is not None:
        attribution = recipe.attribution
        model = attribution_model(attribution, recipe.model).model_name_or_path
        ok = [r for r in attributions.values() if r["status"] == "ok"]
        facts["attribution"] = (f"`{model}`, IG `{attribution.ig_rule}` J = {attribution.ig_steps}"
                                f"{f' (tolerance {attribution.ig_tolerance:g})' if attribution.ig_steps == 'auto' else ''}, "
                                f"baseline `{attribution.ig_baseline}` on `{attribution.ig_baseline_scope}` tokens")
        if ok:
            q = ig_quality(ok)
            g, n = q["completeness_gap"], q["points"]
            facts["completeness gap"] = (f"mean {g['mean']:.3f}, median {g['median']:.3f}, 90th percentile {g['p90']:.3f}, "
                                         f"max {g['max']:.3f} over {len(ok)} traces; {len(q['unconverged'])} unconverged; "
                                         f"points per trace median {n['median']:.0f}, max {n['max']:.0f}")
    return facts


def _fits(row: dict, summary: LabelSummary, max_length: int | None) -> bool:
    """Truncate ``row`` to max_length; False (dropped and counted) when no trained token is left."""
    if max_length is not None and len(row["labels"]) > max_length:
        summary.truncated += 1
        for key in ("input_ids", "attention_mask", "labels", WEIGHTS):
            if key in row:
                row[key] = row[key][:max_length]
    if not any(x != IGNORE for x in row["labels"]):
        summary.drop(row["id"], "no trained token (after truncation to max_length)")
        return False
    summary.records_out += 1
    summary.segments += len(row["selected"])
    summary.segments_selected += int(sum(row["selected"]))
    return True


def relabel_dataset(tokenizer, source_dir: str | Path, out_dir: str | Path, max_length: int | None = None,
                    think_prefix: str = "") -> LabelSummary:
    """A labels dataset for ``tokenizer`` rebuilt from another one's portable ``messages`` form (any
    tokenizer made it); its token shares count the assistant's parts (the completion with the trace)."""
    rows = list(load_labels(source_dir))
    summary = LabelSummary(rows[0]["selector"] if rows else "", rows[0]["mode"] if rows else "", records_in=len(rows),
                           tokenizer=tokenizer_signature(tokenizer))
    out = []
    for row in rows:
        row = {**row, **relabel(tokenizer, row["messages"], think_prefix), "segment_token_spans": []}
        if _fits(row, summary, max_length):
            summary.trace_tokens += row.pop("_trace_tokens")
            summary.trace_tokens_selected += row.pop("_trained_trace_tokens")
            out.append(row)
    save_labels(out, summary, out_dir)
    return summary


def write_labels(tokenizer, records: list[Record], attributions: dict[str, dict] | None, recipe: Recipe,
                 load: LoadReport | None = None, command: str = "") -> LabelSummary:
    """Labels as the recipe asks for them, saved to its ``labels_dir`` with their summary and dataset card
    (and uploaded to ``labels_hub_repo`` when set); ``command`` is what the card says made them."""
    traces, cfg = recipe.traces, recipe.selection
    rows, summary = build_labels(tokenizer, records, attributions, cfg, traces, recipe.sft.max_length,
                                 recipe.training.think_prefix, load)
    made_by = _made_by(tokenizer, traces, cfg, attributions, recipe) | {"command": f"`{command}`"}
    out = save_labels(rows, summary, cfg.labels_dir, made_by, traces.traces_license)
    if cfg.labels_hub_repo:
        push(out, cfg.labels_hub_repo)
    print(summary.table())
    print(f"labels dataset: {out} (datasets.load_dataset({str(out)!r}, split='train'))")
    return summary
