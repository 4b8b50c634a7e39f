"""The labels dataset, handed from selection to any trainer: its columns, summary and checks.

    <labels_dir>/data/train-00000-of-00001.parquet   one row per trained record, in the hub's layout:
                                                     datasets.load_dataset(<labels_dir>, split="train")
                                                     (and so `trl sft --dataset_name <labels_dir>`) takes it
    <labels_dir>/summary.json    records in/out with drops by reason, shares trained, tokenizer signature
    <labels_dir>/README.md       the dataset card: YAML metadata (features, license, size) and how it was made

Training columns: ``input_ids``, ``attention_mask``, ``labels`` (IGNORE on the prompt and on
unselected segments), and with soft selection ``label_weights`` (a float per token, 0 where IGNORE).
Segment metadata: id, segment_char_spans, segment_token_spans, strength,
norm_strength, consistency, selected, selector, selector_params, mode, note.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

IGNORE = -100
TRAIN_COLUMNS = ["input_ids", "attention_mask", "labels"]
WEIGHTS = "label_weights"


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
    skipped_at_load: dict = field(default_factory=dict)  # reason -> where, from the loader's report
    tokenizer: dict = field(default_factory=dict)  # the signature training checks against the model's

    def drop(self, rid: str, reason: str) -> None:
        self.dropped[reason] += 1
        self.dropped_ids.setdefault(reason, []).append(rid)

    def to_dict(self) -> dict:
        n = max(self.records_out, 1)
        return {"selector": self.selector, "mode": self.mode, "records_in": self.records_in,
                "records_out": self.records_out, "skipped_at_load": self.skipped_at_load,
                "segments_per_trace": self.segments / n,
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
        rows += [(f"skipped at load: {why}", str(len(ids))) for why, ids in sorted(self.skipped_at_load.items())]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def tokenizer_signature(tokenizer) -> dict:
    """What a labels dataset must share with the model's tokenizer to be trained on."""
    return {"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id}


SHARD = Path("data") / "train-00000-of-00001.parquet"


def save_labels(rows: list[dict], summary: LabelSummary, out_dir: str | Path, made_by: dict | None = None,
                license: str | None = None) -> Path:
    """The rows as ``out_dir/data/train-00000-of-00001.parquet``, ``summary.json``, and with ``made_by``
    (how the labels were made) the dataset card."""
    import datasets

    out = Path(out_dir)
    (out / SHARD).parent.mkdir(parents=True, exist_ok=True)
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(out / SHARD))
    (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1))
    if made_by is not None:
        _write_card(out, ds, summary, made_by, license)
    return out


def _write_card(labels_dir: Path, ds, summary: LabelSummary, made_by: dict, license: str | None) -> Path:
    """``labels_dir/README.md``: hub metadata (features, license, size) and what made these labels
    (``made_by``: selector, attribution and tokenizer facts, the command). No ``configs`` block: the
    data/ layout already says where the split is, and with one datasets 4.x caches a local folder
    under its relative file patterns, so a rebuilt folder (or another of the same name) would load
    the old rows."""
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard, DatasetCardData

    n = len(ds)
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "n>100K"
    data = DatasetCardData(license=license or "other", size_categories=[size], task_categories=["text-generation"],
                           tags=["reasoning", "selective-sft"])
    DatasetInfosDict({"default": ds.info}).to_dataset_card_data(data)
    s = summary.to_dict()
    facts = "\n".join(f"| {k} | {v} |" for k, v in made_by.items())
    body = f"""# Segment-selective SFT labels: {summary.selector} ({summary.mode})

Token labels for supervised fine-tuning on long reasoning traces (Wang, Liu & Ren, ICLR 2026): `labels`
is `input_ids` on the trained segments and the final answer, -100 on the prompt and masked segments.
Load with `datasets.load_dataset(...)`; each row also carries a portable `messages` form.

| | |
|---|---|
| records | {s['records_out']} of {s['records_in']} in (dropped: {sum(s['dropped'].values())}, skipped at load: {sum(len(v) for v in s['skipped_at_load'].values())}) |
| segments per trace | {s['segments_per_trace']:.1f} |
| segments trained | {s['pct_segments_selected']:.1f}% |
| tokens trained | {s['pct_tokens_selected']:.1f}% |
{facts}
"""
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    card.save(labels_dir / "README.md")
    return labels_dir / "README.md"


def push(labels_dir: str | Path, repo: str) -> None:
    """Upload the labels folder (data and card) to the hub dataset ``repo``."""
    from huggingface_hub import HfApi

    HfApi().create_repo(repo, repo_type="dataset", exist_ok=True)
    HfApi().upload_folder(folder_path=str(labels_dir), repo_id=repo, repo_type="dataset")


def load_labels(labels_dir: str | Path, tokenizer=None):
    """The labels dataset; with ``tokenizer``, refused when it was built with another tokenizer."""
    import datasets

    labels_dir = Path(labels_dir)
    if not (labels_dir / SHARD).exists():
        raise FileNotFoundError(f"{labels_dir / SHARD} not found: build it with `python -m attribution labels --config ...`")
    ds = datasets.load_dataset(str(labels_dir), split="train")
    missing = [c for c in TRAIN_COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(f"{labels_dir}: labels dataset lacks columns {missing}")
    summary_path = labels_dir / "summary.json"
    stored = json.loads(summary_path.read_text()).get("tokenizer") if summary_path.exists() else None
    if tokenizer is not None and stored is not None and stored != tokenizer_signature(tokenizer):
        raise ValueError(f"{labels_dir} was tokenized with another tokenizer ({stored}) than this model's "
                         f"({tokenizer_signature(tokenizer)}); rebuild the labels with this model's tokenizer")
    return ds
