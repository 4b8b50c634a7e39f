"""Two CPU processes (torchrun, gloo) give the same results as one: sharded attribution and data-parallel training."""
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch

from attribution.labels import build_labels
from attribution.labels_dataset import save_labels
from common.config import SelectionArguments, TracesArguments
from data import synthetic

ROOT = Path(__file__).resolve().parent.parent


def launch(n: int, *args) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    # torchrun: accelerate's `--cpu` launcher starts a single process; PartialState(cpu=True) joins these over gloo
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port", str(29500 + n),
           "-m", "tests.dist_worker", *map(str, args)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]


def test_two_process_attribution_equals_one(tmp_path, tiny_tok):
    traces = synthetic.write_jsonl(synthetic.generate(5, seed=31), tmp_path / "t.jsonl")
    launch(1, "ig", tmp_path / "one", traces)
    launch(2, "ig", tmp_path / "two", traces)
    assert len(list((tmp_path / "two" / "shards").glob("rank*-of-2.jsonl"))) == 2
    one = datasets.load_from_disk(str(tmp_path / "one" / "attributions"))
    two = datasets.load_from_disk(str(tmp_path / "two" / "attributions"))
    assert one["id"] == two["id"] == [f"synth-train-{i}" for i in range(5)]
    for a, b in zip(one["token_ig"], two["token_ig"]):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-5, atol=1e-7)


def test_two_process_training_equals_one(tmp_path, tiny_tok):
    rows, summary = build_labels(tiny_tok, synthetic.generate(4, seed=32), None,
                                 SelectionArguments(selector="first_correct_solution"), TracesArguments())
    save_labels(rows, summary, tmp_path / "labels")
    launch(1, "train", tmp_path / "one", tmp_path / "labels")
    launch(2, "train", tmp_path / "two", tmp_path / "labels")
    l1 = json.loads((tmp_path / "one" / "losses.json").read_text())
    l2 = json.loads((tmp_path / "two" / "losses.json").read_text())
    assert len(l1) == len(l2) == 2
    assert l1 == pytest.approx(l2, rel=1e-5)
    from safetensors.torch import load_file

    w1 = load_file(tmp_path / "one" / "model.safetensors")
    w2 = load_file(tmp_path / "two" / "model.safetensors")
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], rtol=1e-5, atol=1e-6, msg=name)
