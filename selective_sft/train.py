"""Selective SFT: ``python -m selective_sft.train --config recipes/<model>/<method>.yaml [--key value ...]``.

Trains with TRL's ``SFTTrainer`` on the labels dataset as it is: no re-tokenization, and the
collator keeps the ``labels`` column, so the loss is the mean NLL over selected tokens across the
whole optimizer step (eq. 9; TRL divides by the selected-token count of all micro-batches and
processes). Unsloth loads the model on CUDA when installed; plain transformers otherwise.
Two-stage recipes (instruct models) first train on full-CoT labels, then on the selective ones.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from attribution.labels_dataset import TRAIN_COLUMNS, load_labels
from common.dist import close_process_group
from common.modeling import load_model, load_tokenizer, wants_unsloth
from common.recipe import Recipe, parse_recipe


def load_labels_dataset(labels_dir: str | Path, tokenizer, model):
    """The training columns of a labels dataset, checked against the tokenizer and the model first."""
    ds = load_labels(labels_dir, tokenizer)
    n_embed = model.get_input_embeddings().num_embeddings
    top = max(max(ids) for ids in ds["input_ids"])
    if top >= n_embed:
        raise ValueError(f"{labels_dir}: token id {top} is outside the model's {n_embed} embeddings; the labels "
                         f"were built with another tokenizer")
    return ds.select_columns(TRAIN_COLUMNS)


def _resume_arg(value):
    if isinstance(value, str) and value.lower() in ("true", "last"):
        return True
    return value


def train(recipe: Recipe, callbacks=None):
    """Run the recipe's training stages; returns the last trainer (its model holds the final weights)."""
    cfg, sft, model_args = recipe.training, recipe.sft, recipe.model
    use_unsloth = wants_unsloth(cfg.use_unsloth)
    if use_unsloth:
        import unsloth  # noqa: F401  (must be imported before trl to patch it)
    from trl import SFTTrainer, get_peft_config

    tokenizer = load_tokenizer(model_args.model_name_or_path, recipe.traces.chat_template)
    model = load_model(model_args, use_unsloth, sft.max_length)
    stages = []
    if cfg.two_stage:
        stages.append(("stage1_full_cot", cfg.first_stage_labels_dir, cfg.first_stage_epochs,
                       cfg.first_stage_learning_rate or sft.learning_rate))
    stages.append(("final", recipe.selection.labels_dir, sft.num_train_epochs, sft.learning_rate))
    trainer = None
    for name, labels_dir, epochs, lr in stages:
        dataset = load_labels_dataset(labels_dir, tokenizer, model)
        out = str(recipe.trained_model_dir) if name == "final" else str(Path(sft.output_dir) / name)
        config = dataclasses.replace(sft, num_train_epochs=epochs, learning_rate=lr, output_dir=out)
        peft = None if use_unsloth or trainer is not None else get_peft_config(model_args)
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft, callbacks=callbacks)
        print(f"[{name}] {labels_dir}: {len(dataset)} examples, {epochs} epochs at lr {lr} -> {out}")
        trainer.train(resume_from_checkpoint=_resume_arg(config.resume_from_checkpoint))
        trainer.save_model(out)
        tokenizer.save_pretrained(out)
        model = trainer.model
    return trainer


def main(argv: list[str] | None = None) -> None:
    train(parse_recipe(argv))
    close_process_group()


if __name__ == "__main__":
    main()
