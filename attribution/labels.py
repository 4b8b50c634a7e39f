"""Selection -> the labels dataset the trainer consumes (paper eq. 8-9 supervision).

For each record: score its segments, run the recipe's selector, tokenize the training text
(prompt + trace + EOS) once, and set ``labels`` = ``input_ids`` on selected trace tokens and the
final EOS, -100 on the prompt and unselected segments. ``label_mode: prune`` removes unselected
segments from the text instead. Records with no trained token left after truncation are dropped and
counted (they would make the loss NaN), never passed on.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.prompts import training_text
from data.records import Record

from .alignment import PROMPT, TAIL, align
from .scores import segment_scores
from .segments import split_segments
from .selection import NEEDS_FEATURE, NEEDS_IG, TraceView, select

IGNORE = -100


@dataclass
class LabelSummary:
    selector: str
    mode: str
    records_in: int = 0
    records_out: int = 0
    segments: int = 0
    segments_selected: int = 0
    trace_tokens: int = 0
    trace_tokens_selected: int = 0
    truncated: int = 0
    dropped: Counter = field(default_factory=Counter)
    dropped_ids: dict = field(default_factory=dict)
    tokenizer: dict = field(default_factory=dict)  # the signature training checks against the model's

    def drop(self, rid: str, reason: str) -> None:
        self.dropped[reason] += 1
        self.dropped_ids.setdefault(reason, []).append(rid)

    def to_dict(self) -> dict:
        n = max(self.records_out, 1)
        return {"selector": self.selector, "mode": self.mode, "records_in": self.records_in,
                "records_out": self.records_out, "segments_per_trace": self.segments / n,
                "pct_segments_selected": 100 * self.segments_selected / max(self.segments, 1),
                "pct_tokens_selected": 100 * self.trace_tokens_selected / max(self.trace_tokens, 1),
                "truncated": self.truncated, "dropped": dict(self.dropped), "dropped_ids": self.dropped_ids,
                "tokenizer": self.tokenizer}

    def table(self) -> str:
        d = self.to_dict()
        rows = [("selector", f"{self.selector} ({self.mode})"), ("records", f"{d['records_out']} of {d['records_in']}"),
                ("segments per trace", f"{d['segments_per_trace']:.1f}"),
                ("segments selected", f"{d['pct_segments_selected']:.1f}%"),
                ("tokens selected", f"{d['pct_tokens_selected']:.1f}%"), ("truncated", str(self.truncated))]
        rows += [(f"dropped: {why}", str(n)) for why, n in sorted(self.dropped.items())]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def tokenizer_signature(tokenizer) -> dict:
    """What a labels dataset must share with the model's tokenizer to be trained on."""
    return {"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id}


def trace_view(rec: Record, segs, attribution: dict | None) -> TraceView:
    """Arrays a selector looks at; without an attribution row only text-level selectors can run."""
    texts = [s.text for s in segs]
    if attribution is None:
        return TraceView(np.zeros(0, dtype=np.int64), len(segs), segment_texts=texts, answer=rec.answer, record_id=rec.id)
    if attribution["segments"] != [[s.start, s.end] for s in segs]:
        raise ValueError(f"record {rec.id}: segments differ from those of its attribution; the recipe's keywords "
                         f"must match the attribution run's")
    token_segment = np.asarray(attribution["token_segment"], dtype=np.int64)
    token_ig = np.asarray(attribution["token_ig"], dtype=np.float64)
    return TraceView(token_segment, len(segs), token_ig, segment_scores(token_ig, token_segment, len(segs)), texts,
                     rec.answer, {k: np.asarray(v) for k, v in attribution.get("features", {}).items()}, rec.id)


def label_record(tokenizer, rec: Record, attribution: dict | None, selector: str, params: dict, mode: str = "mask",
                 keywords="paper", system: str | None = None) -> dict:
    """One labelled example with its segment metadata (before truncation)."""
    segs = split_segments(rec.trace, keywords)
    view = trace_view(rec, segs, attribution)
    sel = select(selector, view, **params)
    seg_sel = sel.segment_selected
    pt = training_text(tokenizer, rec.question, rec.trace, system)
    al = align(tokenizer, pt, segs)
    inside = al.token_segment >= 0
    n_trace = int(inside.sum())
    if mode == "prune":
        if seg_sel is None:
            raise ValueError(f"selector {selector!r} selects tokens, not segments: it cannot prune; use label_mode: mask")
        kept = "".join(s.text for s, keep in zip(segs, seg_sel) if keep)
        pt = training_text(tokenizer, rec.question, kept, system)
        al = align(tokenizer, pt, split_segments(kept, keywords))
        trained = al.token_segment != PROMPT
        spans = []  # the pruned text has other segments; spans refer to the full text only in mask mode
    else:
        trained = al.token_segment == TAIL  # the final EOS is always learned
        if seg_sel is not None:
            trained[inside] = seg_sel[al.token_segment[inside]]
        else:  # token-level selection: same prompt, so tokens match by their first character
            starts = np.asarray(attribution["token_start"])[sel.token_selected]
            trained[inside] = np.isin(al.offsets[inside, 0], starts)
        spans = [[int(a), int(b)] for a, b in al.segment_token_spans()]
    ids = al.input_ids
    labels = np.where(trained, ids, IGNORE)
    scores, k = view.scores, len(segs)
    zeros = [0.0] * k
    return {
        "id": rec.id, "input_ids": ids.tolist(), "attention_mask": [1] * len(ids), "labels": labels.tolist(),
        "segment_char_spans": [[s.start, s.end] for s in segs], "segment_token_spans": spans,
        "strength": scores.strength.tolist() if scores else zeros,
        "norm_strength": scores.norm_strength.tolist() if scores else zeros,
        "consistency": scores.consistency.tolist() if scores else zeros,
        "selected": (seg_sel if seg_sel is not None else np.zeros(k, bool)).tolist(),
        "selector": selector, "selector_params": json.dumps(params, sort_keys=True), "mode": mode, "note": sel.note,
        # counted in the summary, then removed: tokens of the full trace, and how many of them are trained
        "_trace_tokens": n_trace, "_trained_trace_tokens": int(trained[al.token_segment >= 0].sum()),
    }


def build_labels(tokenizer, records: list[Record], attributions: dict[str, dict] | None, selector: str, params: dict,
                 mode: str = "mask", max_length: int | None = None, keywords="paper", system: str | None = None):
    """(rows, LabelSummary) for all records; see the module docstring for what is dropped and why."""
    summary = LabelSummary(selector, mode, records_in=len(records), tokenizer=tokenizer_signature(tokenizer))
    needs_attr = selector in NEEDS_IG or selector in NEEDS_FEATURE
    rows = []
    for rec in records:
        attr = (attributions or {}).get(rec.id)
        if needs_attr and (attr is None or attr["status"] != "ok"):
            summary.drop(rec.id, f"no attribution ({attr['reason'] if attr else 'not in the attribution run'})")
            continue
        row = label_record(tokenizer, rec, attr if attr and attr["status"] == "ok" else None, selector, params, mode,
                           keywords, system)
        if max_length is not None and len(row["labels"]) > max_length:
            summary.truncated += 1
            for key in ("input_ids", "attention_mask", "labels"):
                row[key] = row[key][:max_length]
        if not any(x != IGNORE for x in row["labels"]):
            summary.drop(rec.id, "no trained token (after truncation to max_length)")
            continue
        summary.records_out += 1
        summary.segments += len(row["selected"])
        summary.segments_selected += int(sum(row["selected"]))
        summary.trace_tokens += row.pop("_trace_tokens")
        summary.trace_tokens_selected += row.pop("_trained_trace_tokens")
        rows.append(row)
    return rows, summary


def save_labels(rows: list[dict], summary: LabelSummary, out_dir: str | Path, parquet: bool = False) -> Path:
    """``out_dir/dataset`` (save_to_disk), ``summary.json``, optionally ``labels.parquet``."""
    import datasets

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(out / "dataset"))
    if parquet:
        ds.to_parquet(str(out / "labels.parquet"))
    (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1))
    return out


def write_recipe_labels(args, tokenizer, records: list[Record], attributions: dict[str, dict] | None,
                        max_length: int | None, selector: str | None = None, out_dir: str | Path | None = None) -> LabelSummary:
    """Labels as a recipe (``SelectiveArguments``) asks for them, saved and summarised; ``selector`` and
    ``out_dir`` override the recipe's (the quickstart builds its full-CoT baseline this way)."""
    rows, summary = build_labels(tokenizer, records, attributions, selector or args.selector, args.selector_params(),
                                 args.label_mode, max_length, args.keyword_spec, args.system_prompt)
    out = save_labels(rows, summary, out_dir or args.labels_dir, parquet=True)
    print(summary.table())
    print(f"labels dataset: {out / 'dataset'}")
    return summary
