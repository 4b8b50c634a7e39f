"""Worker for the GPU checks: `python -m tests.gpu_worker OUT --unsloth true|false --runs NORM:STEPS:LR ... [--qlora]`.

Trains a 2-layer random model of the R1-Distill-Qwen-1.5B architecture on selective labels, once per
run, in one process per path (importing Unsloth patches TRL for the whole process, so each path runs
alone; the runs of one path share the process to pay its start-up once), and writes
{run: logged losses} to OUT/losses.json.
"""
import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--unsloth", default="false")
    p.add_argument("--runs", nargs="+", default=["sequence:1:0"], help="loss normalization:steps:learning rate")
    p.add_argument("--qlora", action="store_true")
    a = p.parse_args()
    out = Path(a.out)
    if a.unsloth == "true":
        import unsloth  # noqa: F401  (before trl, as selective_sft.train does)
    import torch
    from trl import ModelConfig, SFTConfig

    from attribution.labels import build_labels
    from attribution.labels_dataset import save_labels
    from common.assets import random_checkpoint, tiny_tokenizer
    from common.config import SelectionArguments, TracesArguments, TrainingArguments
    from common.recipe import make_recipe
    from data import synthetic
    from selective_sft.train import train

    rows, summary = build_labels(tiny_tokenizer(), synthetic.generate(8, seed=21), None,
                                 SelectionArguments(selector="first_correct_solution"), TracesArguments())
    save_labels(rows, summary, out / "labels")
    model = ModelConfig(model_name_or_path=str(random_checkpoint("r1-distill-qwen-1.5b", layers=2)), dtype="bfloat16",
                        use_peft=a.qlora, load_in_4bit=a.qlora, lora_r=8, lora_alpha=16)
    losses = {}
    for run in a.runs:
        normalization, steps, lr = run.split(":")
        config = SFTConfig(output_dir=str(out / "model"), max_steps=int(steps), per_device_train_batch_size=2,
                           gradient_accumulation_steps=2, learning_rate=float(lr), lr_scheduler_type="constant",
                           logging_steps=1, save_strategy="no", report_to="none", seed=0, bf16=torch.cuda.is_available(),
                           loss_type="nll", max_length=512, gradient_checkpointing=True, shuffle_dataset=False)
        recipe = make_recipe(config, model, selection=SelectionArguments(labels_dir=str(out / "labels")),
                             training=TrainingArguments(use_unsloth=a.unsloth, loss_normalization=normalization))
        trainer = train(recipe)
        losses[run] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    (out / "losses.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    main()
