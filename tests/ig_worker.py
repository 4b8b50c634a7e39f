"""Worker for the kill -9 test: ``python -m tests.ig_worker OUT TRACES [KILL_AT]`` attributes TRACES (jsonl) into
OUT with ``ig_steps: auto`` on tiny-qwen2; with KILL_AT it SIGKILLs itself at that forward call of the second
record, in the middle of its integral."""
import os
import signal
import sys


def main() -> None:
    from trl import ModelConfig

    from attribution import runner
    from common.config import AttributionArguments, TracesArguments
    from common.modeling import load_model
    from data.loaders import load_trace_records
    from data.store import JsonlStore

    out, traces = sys.argv[1], sys.argv[2]
    kill_at = int(sys.argv[3]) if len(sys.argv) > 3 else None
    model_args = ModelConfig(model_name_or_path="tiny-qwen2")
    model = load_model(model_args, for_training=False)
    if kill_at is not None:
        stored, calls = [], []
        append = JsonlStore.append

        def counting_append(self, row):
            append(self, row)
            stored.append(row["id"])

        def forward_hook(*_):
            if len(stored) == 1:
                calls.append(1)
                if len(calls) == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

        JsonlStore.append = counting_append
        model.register_forward_pre_hook(forward_hook)
    cfg = TracesArguments(traces=traces)
    attribution = AttributionArguments(ig_steps="auto", ig_rule="graded_trapezoid", ig_tolerance=0.02, attribution_dir=out)
    runner.run(cfg, attribution, model_args, load_trace_records(cfg)[0], model=model)


if __name__ == "__main__":
    main()
