"""The recipe language: one dataclass per stage, each holding the only copy of its defaults.

A recipe is one flat YAML file; :func:`common.recipe.parse_recipe` reads it with one ``TrlParser``
into these sections plus TRL's ``SFTConfig`` and ``ModelConfig``. Each section checks its own keys
against the registries below (the names a recipe may use); the stages implement those names.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import ClassVar

# --- registries: the names a recipe may use -------------------------------------------------------

# Transition keywords that open a segment (paper Sec. 3.1); "fine" adds three frequent openers.
PAPER_KEYWORDS = (
    "Wait", "Alternatively", "But wait", "But alternatively", "But just to", "However", "Not sure",
    "Going back", "Backtrack", "Trace back", "Another",
)
KEYWORD_SETS = {"paper": PAPER_KEYWORDS, "fine": PAPER_KEYWORDS + ("But", "Hmm", "Hmmm")}

# riemann_right: paper eq. 2 (points j/J, j = 1..J, weights 1/J); riemann_linspace: the authors'
# released code (linspace(0, 1, J), weights 1/J); graded_trapezoid: points (j/J)^2, dense near the baseline
IG_RULES = ("riemann_right", "riemann_linspace", "riemann_midpoint", "riemann_trapezoid", "simpson", "graded_trapezoid",
            "gauss_legendre")
# the rules whose points nest when their intervals double: ig_steps: auto refines them without recomputing a point
AUTO_RULES = ("riemann_right", "riemann_trapezoid", "simpson", "graded_trapezoid")
RENAMED_RULES = {"riemann_paper": "ig_rule riemann_paper is gone: it named the released code's rule, now "
                                  "riemann_linspace (linspace(0, 1, J)); the paper's eq. 2 (points j/J, j = 1..J) is "
                                  "riemann_right, the default"}
IG_FEATURES = ("segment_perplexity", "segment_entropy", "confidence_gain")

# selector -> what it reads from the attribution run: "ig" (token IG and segment scores), the
# name of a per-segment feature (an ig_features entry), or None (the text alone). Each selector
# declares the SelectionArguments it takes in its own signature (attribution.selection).
SELECTORS: dict[str, str | None] = {
    "paper": "ig",
    "high_strength_segments": "ig",
    "random_segments": "ig",
    "high_abs_ig_tokens": "ig",
    "high_ig_tokens": "ig",
    "first_correct_solution": None,
    "segment_perplexity": "segment_perplexity",
    "segment_entropy": "segment_entropy",
    "confidence_gain": "confidence_gain",
    "oracle": None,
    "all": None,
}

# Segment strength from token IG (App. C.4): eq. 3 (sum |IG| / sqrt(N)), the plain sum, the mean of the top 20%
STRENGTH_AGGREGATIONS = ("sqrt_norm", "sum", "top20_mean")

# The paper's forced answer (Sec. 3.1): the model is made to state the gold answer after the trace.
ANSWER_SUFFIX = "</think> So, the final answer is \\boxed{{{answer}}}"


def _one_of(section: str, key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"recipe key {key} ({section}): {value!r} is not one of {list(allowed)}")


def fingerprint(*sections) -> dict:
    """The settings that decide a stage's results: every field of ``sections`` except the ones a
    section lists in ``RUN_ONLY`` (how a run goes, not what it computes). A resumed run must match
    the fingerprint of the run it continues; a new key is part of it unless declared otherwise."""
    return {f.name: getattr(s, f.name) for s in sections for f in fields(s) if f.name not in s.RUN_ONLY}


# --- sections -------------------------------------------------------------------------------------

@dataclass
class RunArguments:
    """Where a recipe's runs live; every stage folder derives from ``run_dir`` (common.recipe.RunPaths)."""

    run_dir: str = field(default="runs", metadata={"help": "root of attribution/, labels/<name>/, models/<name>/, eval/"})


@dataclass
class TracesArguments:
    """The traces the method learns from, and how they are segmented."""

    RUN_ONLY: ClassVar[tuple[str, ...]] = ("on_bad", "traces_license")

    traces: str = field(default="GAIR/LIMO", metadata={"help": "hub dataset name, or a .jsonl/.json/.parquet path"})
    traces_split: str = "train"
    traces_fields: dict | str | None = field(default=None, metadata={"help": "our key -> source column, e.g. {trace: solution}"})
    traces_chat: bool = field(default=False, metadata={"help": "responses are chat-formatted (<think>...</think>)"})
    traces_limit: int | None = None
    on_bad: str = field(default="raise", metadata={"help": "bad records: 'raise' (name them) or 'skip' (count them)"})
    chat_template: str | None = field(default=None, metadata={"help": "path of a .jinja template to use instead of the tokenizer's"})
    system_prompt: str | None = None
    keywords: str = field(default="paper", metadata={"help": "'paper', 'fine', or a comma-separated list"})
    traces_license: str | None = field(default=None, metadata={
        "help": "the traces' license, written into the labels' dataset card (hub id, e.g. apache-2.0); default: other"})

    def __post_init__(self):
        if isinstance(self.traces_fields, str):
            self.traces_fields = json.loads(self.traces_fields)
        _one_of("traces", "on_bad", self.on_bad, ("raise", "skip"))
        if self.keywords not in KEYWORD_SETS and not all(k.strip() for k in self.keywords.split(",")):
            raise ValueError(f"recipe key keywords: {self.keywords!r} holds an empty keyword; use "
                             f"{sorted(KEYWORD_SETS)} or a comma-separated list")

    @property
    def keyword_list(self) -> tuple[str, ...]:
        """The keywords themselves (a named set, or the comma-separated list)."""
        if self.keywords in KEYWORD_SETS:
            return KEYWORD_SETS[self.keywords]
        return tuple(k.strip().lstrip("\n") for k in self.keywords.split(","))


@dataclass
class AttributionArguments:
    """Integrated gradients (paper eq. 2) and the model features of the non-IG baselines."""

    RUN_ONLY: ClassVar[tuple[str, ...]] = ("ig_internal_batch", "ig_gradient_checkpointing", "attribution_dir")

    attribution_model_name_or_path: str | None = field(default=None, metadata={
        "help": "the model whose IG selects segments (paper: R1-Distill-Qwen-7B for every setting); default: the trained model"})
    attribution_dtype: str | None = field(default=None, metadata={
        "help": "dtype of the attribution model's forward and backward (products still add up in fp32); default: the "
                "recipe's dtype key"})
    # the paper's rule (eq. 2) and J; the trace-only path from benchmarks/bench_attribution.py (README)
    ig_rule: str = field(default="riemann_right", metadata={"help": " | ".join(IG_RULES)})
    # typed str for the parser (an int or "auto"); __post_init__ makes a number an int
    ig_steps: str = field(default=50, metadata={
        "help": "J, the number of points on the path (paper: 50), or 'auto': per trace, points doubled until the "
                "completeness gap and the change of token IG since the last doubling are <= ig_tolerance"})
    ig_tolerance: float = field(default=0.05, metadata={
        "help": "a trace converged: completeness gap <= this (and, for auto, relative L1 change of token IG between "
                "two levels <= this); the paper's 'within 5%%'"})
    ig_max_steps: int = field(default=512, metadata={"help": "auto: the most points a trace gets; one left unconverged "
                                                              "there is kept, flagged and named in the summary"})
    ig_baseline: str = field(default="pad", metadata={"help": "'pad' (pad-token embedding, paper) or 'zeros'"})
    ig_baseline_scope: str = field(default="trace", metadata={"help": "'trace' (trace tokens move) or 'all' (paper: every token)"})
    ig_internal_batch: int = field(default=1, metadata={"help": "alpha points per forward; 1 is fastest on CPU (benchmark)"})
    ig_gradient_checkpointing: bool = False
    ig_answer_suffix: str = ANSWER_SUFFIX
    ig_max_length: int = 16384
    ig_features: list[str] = field(default_factory=list, metadata={"help": "model features for baselines: " + ", ".join(IG_FEATURES)})
    confidence_samples: int = field(default=0, metadata={
        "help": "confidence_gain: 0 = forced-answer log-prob (deterministic, cheap); M = share of M answers sampled "
                "at t=0.6 that state the gold answer (paper Sec. 3.1: 32)"})
    attribution_dir: str | None = field(default=None, metadata={"help": "default: <run_dir>/attribution"})

    def __post_init__(self):
        if self.ig_rule in RENAMED_RULES:
            raise ValueError(RENAMED_RULES[self.ig_rule])
        _one_of("attribution", "ig_rule", self.ig_rule, IG_RULES)
        _one_of("attribution", "ig_baseline", self.ig_baseline, ("pad", "zeros"))
        _one_of("attribution", "ig_baseline_scope", self.ig_baseline_scope, ("trace", "all"))
        for name in self.ig_features:
            _one_of("attribution", "ig_features", name, IG_FEATURES)
        if str(self.ig_steps) == "auto":
            self.ig_steps = "auto"
            _one_of("attribution", "ig_rule (with ig_steps: auto)", self.ig_rule, AUTO_RULES)
        elif str(self.ig_steps).isdigit() and int(self.ig_steps) >= 1:
            self.ig_steps = int(self.ig_steps)
        else:
            raise ValueError(f"recipe key ig_steps: {self.ig_steps!r} is neither a number of points >= 1 nor 'auto'")
        if self.ig_internal_batch < 1 or not 0 < self.ig_tolerance:
            raise ValueError("recipe keys ig_internal_batch must be >= 1 and ig_tolerance > 0")


@dataclass
class SelectionArguments:
    """Which segments are trained (paper eqs. 5-7, or a baseline) and how the labels are written."""

    selector: str = field(default="paper", metadata={"help": " | ".join(SELECTORS)})
    tau: float = 0.7
    beta: float = 0.8
    keep_second_last: bool = field(default=False, metadata={"help": "also keep the second-to-last segment (authors' code)"})
    token_ratio: float = field(default=0.45, metadata={"help": "target token ratio of threshold-free baselines"})
    segment_ratio: float | None = field(default=0.33, metadata={
        "help": "random_segments: share of the segments besides the always-kept ends that is drawn (App. C.4: ~33%%); "
                "null: as many segments in all as the paper's selector keeps on that trace"})
    strength_aggregation: str = field(default="sqrt_norm", metadata={"help": " | ".join(STRENGTH_AGGREGATIONS) + " (eq. 3: sqrt_norm)"})
    selection_seed: int = 0
    label_mode: str = field(default="mask", metadata={"help": "'mask' unselected segments, or 'prune' them from the text"})
    label_weights: str = field(default="none", metadata={
        "help": "'none': every trained token weighs 1 (the paper); 'strength' (soft selection, beyond the paper): a "
                "label_weights column weighting trained trace tokens by their segment's normalised strength, mean 1"})
    labels_dir: str | None = field(default=None, metadata={"help": "default: <run_dir>/labels/<labels name>"})
    labels_hub_repo: str | None = field(default=None, metadata={
        "help": "upload the labels with their dataset card to this hub dataset repo (TRL's push_to_hub is the model's)"})

    def __post_init__(self):
        _one_of("selection", "selector", self.selector, SELECTORS)
        _one_of("selection", "label_mode", self.label_mode, ("mask", "prune"))
        _one_of("selection", "strength_aggregation", self.strength_aggregation, STRENGTH_AGGREGATIONS)
        _one_of("selection", "label_weights", self.label_weights, ("none", "strength"))
        if self.label_weights == "strength" and self.label_mode == "prune":
            raise ValueError("selection: label_weights: strength weighs the segments of the full text; use label_mode: mask")

    @property
    def labels_name(self) -> str:
        """The name of these labels under <run_dir>/labels/ and of the model trained on them."""
        return (self.selector + ("_prune" if self.label_mode == "prune" else "")
                + ("_strength" if self.label_weights == "strength" else ""))


@dataclass
class TrainingArguments:
    """This repo's training keys beside TRL's SFTConfig: the backend and the two-stage schedule."""

    use_unsloth: str = field(default="auto", metadata={"help": "'auto' (on CUDA when installed), 'true', 'false'"})
    think_prefix: str = field(default="", metadata={
        "help": "text after the generation prompt that opens the thinking in training and eval prompts ('<think>\\n' "
                "for instruct models; R1-Distill templates end with it already)"})
    stop_after_epoch: float | None = field(default=None, metadata={
        "help": "end training after this epoch, the schedule (cosine) still that of num_train_epochs (the authors' "
                "code stops its 10-epoch runs after 9)"})
    loss_normalization: str = field(default="sequence", metadata={
        "help": "'sequence': eq. 9, the mean over sequences of each one's mean NLL over selected tokens; "
                "'token': TRL's, the step's summed NLL over its selected-token count"})
    think_tokens: bool = field(default=False, metadata={
        "help": "add <think> and </think> to the trained model's tokenizer as special tokens (embeddings resized when needed)"})
    first_stage_epochs: float = field(default=0.0, metadata={"help": "two-stage: epochs of full-CoT SFT before the selective stage"})
    first_stage_learning_rate: float | None = None
    first_stage_labels_dir: str | None = field(default=None, metadata={"help": "default: <run_dir>/labels/all"})

    def __post_init__(self):
        self.use_unsloth = str(self.use_unsloth).lower()
        _one_of("training", "use_unsloth", self.use_unsloth, ("auto", "true", "false"))
        _one_of("training", "loss_normalization", self.loss_normalization, ("sequence", "token"))

    @property
    def two_stage(self) -> bool:
        return self.first_stage_epochs > 0


@dataclass
class EvalArguments:
    """Benchmarks and decoding for ``python -m eval --config`` and the quickstart."""

    eval_benchmarks: list[str] = field(default_factory=lambda: ["math500", "aime24", "amc23", "gpqa_diamond",
                                                                "minerva_math", "olympiadbench"])
    eval_data_dir: str | None = field(default=None, metadata={"help": "local root with <benchmark>/test.jsonl; default: the hub"})
    eval_max_new_tokens: int = 32768
    eval_greedy: bool = field(default=True, metadata={"help": "greedy decoding (accuracy)"})
    eval_samples: int = field(default=0, metadata={"help": "sampled answers per question at t=0.6 (-1: the paper's n)"})
    eval_pass_k: list[int] = field(default_factory=lambda: [1, 6], metadata={
        "help": "the k of pass@k (paper: 1 and 6), each reported where a benchmark has at least k samples"})
    eval_limit: int | None = None
    eval_batch_size: int = 8
    eval_backend: str = "auto"
    eval_seed: int = 0
    eval_dir: str | None = field(default=None, metadata={"help": "default: <run_dir>/eval"})

    def __post_init__(self):
        if isinstance(self.eval_benchmarks, str):
            self.eval_benchmarks = self.eval_benchmarks.split(",")
        _one_of("eval", "eval_backend", self.eval_backend, ("auto", "hf", "vllm"))

    @property
    def modes(self) -> tuple[str, ...]:
        return (("greedy",) if self.eval_greedy else ()) + (("sample",) if self.eval_samples else ())

    @property
    def n_samples(self) -> int | None:
        """Samples per question; None: the paper's n for each benchmark."""
        return None if self.eval_samples == -1 else self.eval_samples

    def benchmark_files(self) -> dict[str, str | None]:
        """benchmark -> local jsonl (under eval_data_dir), or None to load it from the hub."""
        from pathlib import Path

        return {b: str(Path(self.eval_data_dir) / b / "test.jsonl") if self.eval_data_dir else None
                for b in self.eval_benchmarks}


ANALYSIS_STEPS = ("redundancy", "confidence", "search", "linguistic", "judge", "position")


@dataclass
class AnalysisArguments:
    """Sec. 3's analyses (``python -m attribution analyze``): why the selection is right on this model and data."""

    RUN_ONLY: ClassVar[tuple[str, ...]] = ("analysis_dir",)

    analysis_steps: list[str] = field(default_factory=lambda: list(ANALYSIS_STEPS), metadata={
        "help": "any of " + ", ".join(ANALYSIS_STEPS)})
    analysis_tau: float = field(default=0.8, metadata={"help": "tau of the important/unimportant split (Sec. 3.1: 0.8)"})
    analysis_beta: float = field(default=0.95, metadata={"help": "beta of that split (Sec. 3.1: 0.95)"})
    analysis_taus: list[float] = field(default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.9], metadata={
        "help": "the tau grid of the search step"})
    analysis_betas: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.8, 0.9, 0.95, 1.0], metadata={
        "help": "the beta grid of the search step"})
    analysis_exclude_ends: bool = field(default=True, metadata={
        "help": "leave the first and last segments (kept by every selector) out of the important/unimportant "
                "comparisons and the tau/beta search, as Sec. 3 measures"})
    analysis_confidence_samples: int = field(default=0, metadata={
        "help": "confidence of the answer after each segment: 0 = forced-answer log-prob (cheap, deterministic); "
                "M = share of M answers sampled at t=0.6 that state it (Sec. 3.1: 32)"})
    judge_model_name_or_path: str = field(default="Qwen/Qwen3-8B", metadata={
        "help": "the model that says whether a segment is cut off (App. B: Qwen3-8B)"})
    judge_max_new_tokens: int = 512
    analysis_dir: str | None = field(default=None, metadata={"help": "default: <run_dir>/analysis"})

    def __post_init__(self):
        for step in self.analysis_steps:
            _one_of("analysis", "analysis_steps", step, ANALYSIS_STEPS)


@dataclass
class StudyArguments:
    """The controlled study on synthetic traces (``python -m pipelines.study``): its sizes and seeds.
    The recipe says why each value was chosen; ``--quick`` runs the same design at tiny sizes."""

    # which seeds train decides which students exist, not what any stage computes: a run folder may add or
    # drop seeds after the benchmark (the pre-registered rule: one seed per row when the scores are at chance)
    RUN_ONLY: ClassVar[tuple[str, ...]] = ("study_seeds", "study_other_seeds")

    study_n_train: int = field(default=40, metadata={"help": "students' training traces: the first of the short benchmark traces"})
    study_n_bench: int = field(default=48, metadata={
        "help": "short-regime benchmark traces (planted redundancy); those after study_n_train are the held-out "
                "traces of the tau/beta search, which no student trains or is tested on"})
    study_n_verbose: int = field(default=16, metadata={
        "help": "verbose-regime benchmark traces: the first short ones' questions and planted segments, with prose"})
    study_n_reflective: int = field(default=24, metadata={
        "help": "reflective-regime benchmark traces: the first short ones, each genuine step catching and correcting a slip"})
    study_n_base: int = field(default=16, metadata={"help": "short benchmark traces the base model attributes too"})
    study_n_eval: int = field(default=80, metadata={"help": "held-out questions every model answers"})
    study_n_gate: int = field(default=24, metadata={
        "help": "held-out clean traces per verbosity on which gate a measures P(gold answer) at the IG target"})
    study_n_attributor: int = field(default=128, metadata={
        "help": "clean traces (questions disjoint from the students') the attribution model is fine-tuned on"})
    study_attributor_epochs: float = 3.0
    study_max_planted: int = field(default=6, metadata={"help": "planted segments per trace are drawn from 0..this"})
    study_min_probability: float = field(default=0.5, metadata={
        "help": "gate a: the attribution model's mean P(gold answer) at the IG target on held-out clean traces"})
    study_min_accuracy: float = field(default=0.8, metadata={
        "help": "gate c: the attribution model's greedy accuracy on the held-out questions"})
    study_max_unconverged: float = field(default=0.2, metadata={
        "help": "gate b: the most a benchmark run may leave unconverged (those are named and left out of it)"})
    study_seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "training seeds of the main rows (full CoT, oracle, paper, random)"})
    study_other_seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "training seeds of the other rows"})


SECTIONS = (RunArguments, TracesArguments, AttributionArguments, SelectionArguments, TrainingArguments, EvalArguments,
            AnalysisArguments, StudyArguments)
