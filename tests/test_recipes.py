"""Every recipe parses with TrlParser into SFTConfig / ModelConfig / this repo's keys, with the paper's values."""
from pathlib import Path

import pytest

from selective_sft.config import parse_recipe

RECIPES = sorted(p for p in (Path(__file__).resolve().parent.parent / "recipes").rglob("*.yaml")
                 if "accelerate_configs" not in p.parts)

PAPER = {  # recipe -> (model, lr, epochs, selector)
    "deepseek-r1-distill-qwen-1.5b/selective": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 3e-5, 10, "paper"),
    "deepseek-r1-distill-qwen-1.5b/full_cot": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 3e-5, 10, "all"),
    "deepseek-r1-distill-qwen-7b/selective": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 1.5e-5, 10, "paper"),
    "deepseek-r1-distill-qwen-7b/full_cot": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 1.5e-5, 10, "all"),
    "qwen2.5-7b-instruct/selective": ("Qwen/Qwen2.5-7B-Instruct", 8e-6, 4, "paper"),
    "qwen2.5-7b-instruct/full_cot": ("Qwen/Qwen2.5-7B-Instruct", 8e-6, 4, "all"),
}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_parses(path):
    args, sft, model = parse_recipe(["--config", str(path)])
    key = f"{path.parent.name}/{path.stem}"
    if key in PAPER:
        name, lr, epochs, selector = PAPER[key]
        assert (model.model_name_or_path, sft.learning_rate, sft.num_train_epochs, args.selector) == (name, lr, epochs, selector)
        assert sft.max_length == 16384 and sft.lr_scheduler_type == "cosine" and args.tau == 0.7 and args.beta == 0.8
    if path.parent.name.endswith("instruct"):
        assert args.first_stage_epochs == 7 and args.first_stage_learning_rate == 1.5e-5


def test_unknown_key_named(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text(RECIPES[0].read_text() + "\nlearning_rat: 1.0\n")
    with pytest.raises(ValueError, match="learning_rat"):
        parse_recipe(["--config", str(bad)])
