"""Selective SFT: ``python -m selective_sft.train --config recipes/<model>/<method>.yaml [--key value ...]``.

Trains with TRL's ``SFTTrainer`` on the labels dataset as it is: no re-tokenization, and the
collator keeps the ``labels`` column. The loss is eq. 9 (``loss_normalization: sequence``, a loss
function passed to the trainer: selective_sft.loss) or TRL's token mean (``token``); a labels dataset
with a ``label_weights`` column (soft selection) weights each token's NLL in either. Unsloth loads
the model on CUDA when installed; plain transformers otherwise.
Two-stage recipes (instruct models) first train on full-CoT labels, then on the selective ones.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from attribution.labels_dataset import TRAIN_COLUMNS, WEIGHTS, load_labels
from common.dist import close_process_group
from common.modeling import load_model, load_tokenizer, wants_unsloth
from common.recipe import Recipe, parse_recipe

from .loss import LabelWeights, SelectedNLL


def load_labels_dataset(labels_dir: str | Path, tokenizer, model):
    """A labels dataset, checked against the tokenizer and the model."""
    ds = load_labels(labels_dir, tokenizer)
    n_embed = model.get_input_embeddings().num_embeddings
    top = max(max(ids) for ids in ds["input_ids"])
    if top >= n_embed:
        raise ValueError(f"{labels_dir}: token id {top} is outside the model's {n_embed} embeddings; the labels "
                         f"were built with another tokenizer")
    return ds


def _stop_after(epoch: float):
    """A callback that ends training at the end of ``epoch`` (the learning-rate schedule is unchanged)."""
    from transformers import TrainerCallback

    class StopAfterEpoch(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            if state.epoch >= epoch - 1e-9:
                control.should_training_stop = True

    return StopAfterEpoch()


def _loss(cfg, sft, dataset):
    """The loss function for SFTTrainer: eq. 9 (sequence) or the token mean, weighted when the dataset
    has label weights; None for TRL's own token mean."""
    weights = None
    if WEIGHTS in dataset.column_names:
        if sft.packing or sft.padding_free:
            raise ValueError(f"the labels have {WEIGHTS} (soft selection): train with packing: false and padding_free: false")
        weights = LabelWeights(dataset, sft.max_length)
    if cfg.loss_normalization == "token" and weights is None:
        return None
    if sft.loss_type != "nll":  # e.g. TRL's chunked_nll computes the loss inside the model's forward
        raise ValueError(f"loss_type: {sft.loss_type} is TRL's own loss; eq. 9 (loss_normalization: sequence) and "
                         f"label weights are a loss function over the logits: set loss_type: nll")
    from accelerate import PartialState

    per_step = sft.per_device_train_batch_size * sft.gradient_accumulation_steps * PartialState().num_processes
    return SelectedNLL(cfg.loss_normalization, per_step, weights)


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

    tokenizer = load_tokenizer(model_args.model_name_or_path, recipe.traces.chat_template, cfg.think_tokens)
    model = load_model(model_args, use_unsloth, sft.max_length)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # added <think> tokens need rows
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
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
        stop = [_stop_after(cfg.stop_after_epoch)] if name == "final" and cfg.stop_after_epoch else []
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset.select_columns(TRAIN_COLUMNS),
                             processing_class=tokenizer, peft_config=peft, callbacks=[*(callbacks or []), *stop],
                             compute_loss_func=_loss(cfg, config, dataset))
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
