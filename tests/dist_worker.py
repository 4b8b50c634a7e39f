"""Worker for the multi-process tests: `torchrun --nproc_per_node N -m tests.dist_worker {ig,train} OUT INPUT`."""
import json
import sys
from pathlib import Path


def attribute(out: Path, traces: str, model_args) -> None:
    from attribution import runner
    from common.config import AttributionArguments, TracesArguments
    from data.loaders import load_trace_records

    cfg = TracesArguments(traces=traces)
    runner.run(cfg, AttributionArguments(ig_steps=4, attribution_dir=str(out)), model_args, load_trace_records(cfg)[0])


def train(out: Path, labels_dir: str, model_args) -> None:
    from accelerate import PartialState
    from trl import SFTConfig

    from common.config import SelectionArguments, TrainingArguments
    from common.recipe import make_recipe
    from selective_sft.train import train as run_train

    world = PartialState().num_processes
    config = SFTConfig(output_dir=str(out), max_length=512, num_train_epochs=2, learning_rate=3e-3,
                       per_device_train_batch_size=4 // world, gradient_accumulation_steps=1, logging_steps=1,
                       save_strategy="no", report_to="none", seed=0, bf16=False, use_cpu=True, loss_type="nll",
                       train_sampling_strategy="sequential", shuffle_dataset=False, max_grad_norm=0.0)
    recipe = make_recipe(config, model_args, selection=SelectionArguments(labels_dir=labels_dir),
                         training=TrainingArguments(use_unsloth="false"))
    trainer = run_train(recipe)
    if PartialState().is_main_process:
        (out / "losses.json").write_text(json.dumps([h["loss"] for h in trainer.state.log_history if "loss" in h]))


def main() -> None:
    from trl import ModelConfig

    from common.dist import close_process_group

    mode, out, source = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    {"ig": attribute, "train": train}[mode](out, source, ModelConfig(model_name_or_path="tiny-qwen2"))
    close_process_group()


if __name__ == "__main__":
    main()
