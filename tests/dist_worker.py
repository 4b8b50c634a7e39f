"""Worker for the multi-process tests: `accelerate launch --cpu --num_processes N tests/dist_worker.py MODE ...`."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    from trl import ModelConfig, SFTConfig

    from selective_sft.config import SelectiveArguments

    model_args = ModelConfig(model_name_or_path="tiny-qwen2")
    if mode == "ig":
        from attribution import runner

        runner.run(SelectiveArguments(traces=sys.argv[3], ig_steps=4, attribution_dir=str(out)), model_args)
        return
    from accelerate import PartialState

    from selective_sft.train import train

    world = PartialState().num_processes
    config = SFTConfig(output_dir=str(out), max_length=512, num_train_epochs=2, learning_rate=3e-3,
                       per_device_train_batch_size=4 // world, gradient_accumulation_steps=1, logging_steps=1,
                       save_strategy="no", report_to="none", seed=0, bf16=False, use_cpu=True, loss_type="nll",
                       train_sampling_strategy="sequential", shuffle_dataset=False, max_grad_norm=0.0)
    trainer = train(SelectiveArguments(labels_dir=sys.argv[3], use_unsloth="false"), config, model_args)
    if PartialState().is_main_process:
        (out / "losses.json").write_text(json.dumps([h["loss"] for h in trainer.state.log_history if "loss" in h]))


if __name__ == "__main__":
    main()
