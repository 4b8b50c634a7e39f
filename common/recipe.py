"""Parse a recipe (one flat YAML, CLI overrides) into its sections, and derive every run folder.

    recipe = parse_recipe(["--config", "recipes/<model>/<method>.yaml", "--tau", "0.6"])

One ``TrlParser`` reads this repo's sections (common.config) with TRL's ``SFTConfig`` and
``ModelConfig``, so unknown keys fail with their names and a recipe stays portable. Folders follow
one rule (:class:`RunPaths`) unless a recipe sets them explicitly.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from .config import (SECTIONS, SELECTORS, AnalysisArguments, AttributionArguments, EvalArguments, RunArguments,
                     SelectionArguments, StudyArguments, TracesArguments, TrainingArguments)

# transformers fills an unset output_dir with this name; the recipe then derives it from run_dir
TRANSFORMERS_DEFAULT_OUTPUT_DIR = "trainer_output"


@dataclass(frozen=True)
class RunPaths:
    """The one rule for run folders: <run_dir>/attribution, labels/<name>, models/<name>, eval, analysis."""

    run_dir: Path

    @property
    def attribution(self) -> Path:
        return self.run_dir / "attribution"

    def labels(self, name: str) -> Path:
        return self.run_dir / "labels" / name

    def model(self, name: str) -> Path:
        return self.run_dir / "models" / name

    @property
    def eval(self) -> Path:
        return self.run_dir / "eval"

    @property
    def analysis(self) -> Path:
        return self.run_dir / "analysis"


@dataclass
class Recipe:
    """Every section of one recipe, with its folders resolved."""

    run: RunArguments
    traces: TracesArguments
    attribution: AttributionArguments
    selection: SelectionArguments
    training: TrainingArguments
    eval: EvalArguments
    analysis: AnalysisArguments
    study: StudyArguments
    sft: object  # trl.SFTConfig
    model: object  # trl.ModelConfig

    @property
    def paths(self) -> RunPaths:
        return RunPaths(Path(self.run.run_dir))

    @property
    def trained_model_dir(self) -> Path:
        """Where training leaves the final model: output_dir, or output_dir/final after two stages."""
        out = Path(self.sft.output_dir)
        return out / "final" if self.training.two_stage else out

    def for_selector(self, selector: str) -> "Recipe":
        """The same recipe with another selector, its labels, model and eval names derived by the rule."""
        selection = replace(self.selection, selector=selector)
        selection.labels_dir = str(self.paths.labels(selection.labels_name))
        return replace(self, selection=selection, sft=replace(self.sft, output_dir=str(self.paths.model(selection.labels_name))))


def attribution_model(attribution: AttributionArguments, model_args):
    """The ModelConfig of the attribution model: the trained model, or ``attribution_model_name_or_path``
    loaded with the recipe's attention settings and dtype (``attribution_dtype`` when set)."""
    return replace(model_args, model_name_or_path=attribution.attribution_model_name_or_path or model_args.model_name_or_path,
                   dtype=attribution.attribution_dtype or model_args.dtype)


def make_recipe(sft, model, **sections) -> Recipe:
    """A recipe in code: TRL's configs plus any sections by name (run, traces, ...); the rest at defaults."""
    defaults = dict(zip(("run", "traces", "attribution", "selection", "training", "eval", "analysis", "study"), SECTIONS))
    unknown = set(sections) - set(defaults)
    if unknown:
        raise ValueError(f"unknown recipe sections {sorted(unknown)}; use {list(defaults)}")
    return resolve_paths(Recipe(**{k: sections.get(k) or cls() for k, cls in defaults.items()}, sft=sft, model=model))


def resolve_paths(recipe: Recipe) -> Recipe:
    """Fill every folder the recipe leaves unset from run_dir (explicit keys win); check cross-section keys."""
    p = recipe.paths
    name = recipe.selection.labels_name
    if recipe.attribution.attribution_dir is None:
        recipe.attribution.attribution_dir = str(p.attribution)
    if recipe.selection.labels_dir is None:
        recipe.selection.labels_dir = str(p.labels(name))
    if recipe.training.two_stage and recipe.training.first_stage_labels_dir is None:
        recipe.training.first_stage_labels_dir = str(p.labels("all"))
    if recipe.sft.output_dir == TRANSFORMERS_DEFAULT_OUTPUT_DIR:
        recipe.sft.output_dir = str(p.model(name))
    if recipe.eval.eval_dir is None:
        recipe.eval.eval_dir = str(p.eval)
    if recipe.analysis.analysis_dir is None:
        recipe.analysis.analysis_dir = str(p.analysis)
    needs = SELECTORS[recipe.selection.selector]
    if needs not in (None, "ig") and needs not in recipe.attribution.ig_features:
        raise ValueError(f"selector {recipe.selection.selector!r} needs the attribution feature {needs!r}: "
                         f"add it to ig_features (e.g. ig_features: [{needs}]) and run `python -m attribution ig`")
    return recipe


def _cpu_precision(args: list[str]) -> list[str]:
    """GPU recipes ask for bf16 mixed precision, which transformers refuses on a CPU: run them in fp32, and say so."""
    import torch

    if torch.cuda.is_available() or torch.backends.mps.is_available():
        return args
    print("recipe: no GPU here, so bf16/fp16 mixed precision is off (--bf16 false --fp16 false); the model's dtype "
          "key still applies", file=sys.stderr)
    return args + ["--bf16", "false", "--fp16", "false"]


def parse_recipe(args: list[str] | None = None) -> Recipe:
    """The recipe from ``--config recipe.yaml`` plus ``--key value`` overrides (default: sys.argv)."""
    from trl import ModelConfig, SFTConfig, TrlParser

    args = list(sys.argv[1:] if args is None else args)
    parsed = TrlParser((*SECTIONS, SFTConfig, ModelConfig)).parse_args_and_config(args=_cpu_precision(args))
    return resolve_paths(Recipe(*parsed))
