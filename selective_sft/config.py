"""The recipe: TRL's ``SFTConfig`` and ``ModelConfig`` keys plus this repo's own block.

One YAML file drives every stage (attribution, labels, training, evaluation). It is parsed with
``trl.TrlParser``, so unknown keys fail with their names, and any key can be overridden on the
command line (``--tau 0.6``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from attribution.integrated_gradients import RULES
from data.prompts import ANSWER_SUFFIX


@dataclass
class SelectiveArguments:
    """This repo's recipe keys (everything that is not a TRL SFTConfig / ModelConfig key)."""

    # --- traces (the data the method learns from) ---
    traces: str = field(default="GAIR/LIMO", metadata={"help": "hub dataset name, or a .jsonl/.json/.parquet path"})
    traces_split: str = "train"
    traces_fields: dict | str | None = field(default=None, metadata={"help": "our key -> source column, e.g. {trace: solution}"})
    traces_chat: bool = field(default=False, metadata={"help": "responses are chat-formatted (<think>...</think>)"})
    traces_limit: int | None = None
    on_bad: str = field(default="raise", metadata={"help": "bad records: 'raise' (name them) or 'skip' (count them)"})
    chat_template: str | None = field(default=None, metadata={"help": "path of a .jinja template to use instead of the tokenizer's"})
    system_prompt: str | None = None
    # --- segmentation ---
    keywords: str = field(default="paper", metadata={"help": "'paper', 'fine', or a comma-separated list"})
    # --- attribution (integrated gradients) ---
    # defaults from benchmarks/bench_attribution.py (README): the trace-only path, the paper's rule and J
    ig_rule: str = field(default="riemann_paper", metadata={"help": " | ".join(RULES)})
    ig_steps: int = field(default=50, metadata={"help": "J, the number of points on the path (paper: 50)"})
    ig_baseline: str = field(default="pad", metadata={"help": "'pad' (pad-token embedding, paper) or 'zeros'"})
    ig_baseline_scope: str = field(default="trace", metadata={"help": "'trace' (trace tokens move) or 'all' (paper: every token)"})
    ig_internal_batch: int = field(default=1, metadata={"help": "alpha points per forward; 1 is fastest on CPU (benchmark)"})
    ig_gradient_checkpointing: bool = False
    ig_answer_suffix: str = ANSWER_SUFFIX
    ig_max_length: int = 16384
    ig_gap_warn: float = field(default=0.1, metadata={"help": "warn for traces whose completeness gap exceeds this"})
    ig_features: list[str] = field(default_factory=list, metadata={"help": "model features for baselines: segment_perplexity, segment_entropy, confidence_gain"})
    attribution_dir: str = "runs/attribution"
    # --- selection and labels ---
    selector: str = field(default="paper", metadata={"help": "paper, all, random_segments, high_abs_ig_tokens, ..."})
    tau: float = 0.7
    beta: float = 0.8
    keep_second_last: bool = field(default=False, metadata={"help": "also keep the second-to-last segment (authors' code)"})
    token_ratio: float = field(default=0.45, metadata={"help": "target token ratio of threshold-free baselines"})
    segment_ratio: float | None = None
    selection_seed: int = 0
    label_mode: str = field(default="mask", metadata={"help": "'mask' unselected segments, or 'prune' them from the text"})
    labels_dir: str = "runs/labels"
    # --- training ---
    use_unsloth: str = field(default="auto", metadata={"help": "'auto' (on CUDA when installed), 'true', 'false'"})
    first_stage_labels_dir: str | None = field(default=None, metadata={"help": "two-stage: full-CoT labels trained first"})
    first_stage_epochs: float = 0.0
    first_stage_learning_rate: float | None = None
    # --- evaluation (quickstart / pipeline) ---
    eval_benchmarks: list[str] = field(default_factory=lambda: ["math500", "aime24", "amc23", "gpqa_diamond",
                                                                "minerva_math", "olympiadbench"])
    eval_data_dir: str | None = field(default=None, metadata={"help": "local root with <benchmark>/test.jsonl; default: the hub"})
    eval_max_new_tokens: int = 32768
    eval_samples: int = field(default=0, metadata={"help": "sampled answers per question at t=0.6 (-1: the paper's n)"})
    eval_limit: int | None = None
    eval_batch_size: int = 8
    eval_backend: str = "auto"

    def __post_init__(self):
        if isinstance(self.traces_fields, str):
            self.traces_fields = json.loads(self.traces_fields)
        checks = {"on_bad": ("raise", "skip"), "ig_baseline": ("pad", "zeros"), "ig_baseline_scope": ("trace", "all"),
                  "ig_rule": RULES,
                  "label_mode": ("mask", "prune"), "use_unsloth": ("auto", "true", "false")}
        for key, allowed in checks.items():
            if str(getattr(self, key)).lower() not in allowed:
                raise ValueError(f"recipe key {key}: {getattr(self, key)!r} is not one of {allowed}")
        self.use_unsloth = str(self.use_unsloth).lower()

    @property
    def keyword_spec(self) -> str | list[str]:
        return self.keywords if self.keywords in ("paper", "fine") else [k.strip() for k in self.keywords.split(",")]

    def selector_params(self) -> dict:
        return {"tau": self.tau, "beta": self.beta, "keep_second_last": self.keep_second_last,
                "token_ratio": self.token_ratio, "segment_ratio": self.segment_ratio, "seed": self.selection_seed}


def parse_recipe(args: list[str] | None = None):
    """(SelectiveArguments, SFTConfig, ModelConfig) from ``--config recipe.yaml`` plus overrides."""
    import sys

    import torch
    from trl import ModelConfig, SFTConfig, TrlParser

    args = list(sys.argv[1:] if args is None else args)
    if not torch.cuda.is_available() and not (torch.backends.mps.is_available()):
        # GPU recipes ask for bf16 mixed precision, which transformers refuses on a CPU: run them in fp32
        args += ["--bf16", "false", "--fp16", "false"]
    parser = TrlParser((SelectiveArguments, SFTConfig, ModelConfig))
    return parser.parse_args_and_config(args=args)
