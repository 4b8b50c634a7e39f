"""Every recipe parses with TrlParser into SFTConfig / ModelConfig / this repo's keys, with the paper's values."""
from pathlib import Path

import pytest

from common.recipe import parse_recipe

RECIPES = sorted(p for p in (Path(__file__).resolve().parent.parent / "recipes").rglob("*.yaml")
                 if "accelerate_configs" not in p.parts)

PAPER = {  # recipe -> (model, lr, epochs, selector)
    "deepseek-r1-distill-qwen-1.5b/selective": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 3e-5, 10, "paper"),
    "deepseek-r1-distill-qwen-1.5b/full_cot": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 3e-5, 10, "all"),
    "deepseek-r1-distill-qwen-7b/selective": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 1.5e-5, 10, "paper"),
    "deepseek-r1-distill-qwen-7b/full_cot": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 1.5e-5, 10, "all"),
    "qwen2.5-7b-instruct/selective": ("Qwen/Qwen2.5-7B-Instruct", 8e-6, 4, "paper"),
    "qwen2.5-7b-instruct/full_cot": ("Qwen/Qwen2.5-7B-Instruct", 8e-6, 4, "all"),
    "llama-3.1-8b-instruct/selective": ("meta-llama/Llama-3.1-8B-Instruct", 8e-6, 4, "paper"),
    "llama-3.1-8b-instruct/full_cot": ("meta-llama/Llama-3.1-8B-Instruct", 8e-6, 4, "all"),
}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_parses(path):
    r = parse_recipe(["--config", str(path)])
    key = f"{path.parent.name}/{path.stem}"
    if key in PAPER:
        name, lr, epochs, selector = PAPER[key]
        assert (r.model.model_name_or_path, r.sft.learning_rate, r.sft.num_train_epochs, r.selection.selector) == (
            name, lr, epochs, selector)
        assert r.sft.max_length == 16384 and r.sft.lr_scheduler_type == "cosine"
        assert r.selection.tau == 0.7 and r.selection.beta == 0.8
        # as the paper and the authors' runs: attribution by the 7B, eq. 2 at J=50, eq. 9, 2 sequences a step
        assert r.attribution.attribution_model_name_or_path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
        assert (r.attribution.ig_rule, r.attribution.ig_steps, r.training.loss_normalization) == ("riemann_right", 50, "sequence")
        assert r.sft.per_device_train_batch_size * r.sft.gradient_accumulation_steps == 2
        assert (r.sft.optim, r.sft.seed, r.sft.warmup_steps, r.sft.max_grad_norm) == ("adamw_8bit", 3407, 0.05, 1.0)
    if path.parent.name.endswith("instruct"):
        assert r.training.first_stage_epochs == 7 and r.training.first_stage_learning_rate == 1.5e-5
        assert r.training.think_prefix == "<think>\n" and r.training.think_tokens
        # stage 1 trains the labels the same model's full_cot recipe writes, by the run-folder rule
        full_cot = parse_recipe(["--config", str(path.with_name("full_cot.yaml"))])
        assert r.training.first_stage_labels_dir == full_cot.selection.labels_dir
    # every folder derives from run_dir by one rule, but the one attribution run the LIMO recipes share
    p = r.paths
    limo = r.traces.traces == "GAIR/LIMO" and key in PAPER
    assert r.attribution.attribution_dir == ("runs/limo-r1-7b/attribution" if limo else str(p.attribution))
    assert r.eval.eval_dir == str(p.eval)
    assert r.selection.labels_dir == str(p.labels(r.selection.labels_name))
    assert r.sft.output_dir == str(p.model(r.selection.labels_name))


def test_explicit_folders_override_the_rule():
    tiny = next(p for p in RECIPES if p.parent.name == "tiny")
    r = parse_recipe(["--config", str(tiny), "--run_dir", "x", "--labels_dir", "elsewhere/l", "--output_dir", "m"])
    assert r.attribution.attribution_dir == "x/attribution" and r.selection.labels_dir == "elsewhere/l"
    assert r.sft.output_dir == "m" and r.for_selector("all").selection.labels_dir == "x/labels/all"
    assert r.for_selector("all").sft.output_dir == "x/models/all"
    assert r.analysis.analysis_dir == "x/analysis"
    soft = parse_recipe(["--config", str(tiny), "--run_dir", "x", "--label_weights", "strength"])
    assert soft.selection.labels_dir == "x/labels/paper_strength" and soft.sft.output_dir == "x/models/paper_strength"


def test_attribution_model_dtype():
    """The attribution model loads in attribution_dtype when set, else in the recipe's dtype; a run
    made in another dtype is another attribution run (its fingerprint differs)."""
    from common.config import fingerprint
    from common.recipe import attribution_model

    tiny = next(p for p in RECIPES if p.parent.name == "tiny")
    plain = parse_recipe(["--config", str(tiny)])
    bf16 = parse_recipe(["--config", str(tiny), "--attribution_dtype", "bfloat16"])
    assert attribution_model(plain.attribution, plain.model).dtype == "float32"
    assert attribution_model(bf16.attribution, bf16.model).dtype == "bfloat16" and bf16.model.dtype == "float32"
    assert fingerprint(plain.attribution) != fingerprint(bf16.attribution)


def test_sections_validate_their_keys(tmp_path):
    for key, value, message in [("selector", "best", "selector"), ("ig_rule", "boole", "ig_rule"),
                                ("ig_features", "[magic]", "ig_features"), ("keywords", "Wait,,Hmm", "keywords"),
                                ("label_mode", "drop", "label_mode"), ("label_weights", "gain", "label_weights"),
                                ("analysis_steps", "[vibes]", "analysis_steps")]:
        with pytest.raises(ValueError, match=message):
            parse_recipe(["--config", str(RECIPES[0]), f"--{key}", value])
    with pytest.raises(ValueError, match="riemann_linspace.*riemann_right, the default"):
        parse_recipe(["--config", str(RECIPES[0]), "--ig_rule", "riemann_paper"])
    with pytest.raises(ValueError, match="needs the attribution feature 'confidence_gain'"):
        parse_recipe(["--config", str(RECIPES[0]), "--selector", "confidence_gain"])


def test_unknown_key_named(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text(RECIPES[0].read_text() + "\nlearning_rat: 1.0\n")
    with pytest.raises(ValueError, match="learning_rat"):
        parse_recipe(["--config", str(bad)])


def test_ig_steps_number_or_auto():
    """ig_steps takes J or 'auto', from the YAML and from the command line; auto takes the nested rules only."""
    recipe = "recipes/deepseek-r1-distill-qwen-7b/selective.yaml"
    assert parse_recipe(["--config", recipe]).attribution.ig_steps == 50
    assert parse_recipe(["--config", recipe, "--ig_steps", "16"]).attribution.ig_steps == 16
    auto = parse_recipe(["--config", recipe, "--ig_steps", "auto", "--ig_tolerance", "0.02"]).attribution
    assert (auto.ig_steps, auto.ig_tolerance, auto.ig_max_steps) == ("auto", 0.02, 512)
    with pytest.raises(ValueError, match="neither a number of points"):
        parse_recipe(["--config", recipe, "--ig_steps", "many"])
    with pytest.raises(ValueError, match="ig_rule"):
        parse_recipe(["--config", recipe, "--ig_steps", "auto", "--ig_rule", "gauss_legendre"])
