"""GPU checks (`pytest -m gpu`, run by scripts/gpu_check.sh): every CUDA path, on random models built
from configs (nothing from the hub). Each skips with its reason on a machine without what it needs."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="needs a CUDA GPU: scripts/gpu_check.sh runs these on a GPU box")]
needs_unsloth = pytest.mark.skipif(importlib.util.find_spec("unsloth") is None,
                                   reason="needs unsloth (carried by scripts/wheelhouse.sh)")
needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes for QLoRA")


def _train(out: Path, unsloth: str, normalization: str = "sequence", steps: int = 1, lr: float = 0.0, *extra) -> list:
    cmd = [sys.executable, "-m", "tests.gpu_worker", str(out), "--unsloth", unsloth, "--normalization", normalization,
           "--steps", str(steps), "--lr", str(lr), *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((out / "losses.json").read_text())


@needs_unsloth
@pytest.mark.parametrize("normalization", ["sequence", "token"])
def test_unsloth_first_step_loss_equals_plain_trl(tmp_path, normalization):
    """Same batch, same initial weights: Unsloth's full fine-tuning computes the loss the plain TRL path
    does (whose masking and eq. 9 are checked by hand on CPU), so masked tokens count for nothing there too."""
    plain = _train(tmp_path / "plain", "false", normalization)
    fast = _train(tmp_path / "unsloth", "true", normalization)
    assert fast[0] == pytest.approx(plain[0], rel=2e-2)  # bf16 kernels round differently


@needs_unsloth
def test_unsloth_twenty_steps_lower_the_loss(tmp_path):
    losses = _train(tmp_path, "true", "sequence", 20, 3e-4)
    assert len(losses) == 20 and np.mean(losses[-5:]) < np.mean(losses[:5])


@needs_bnb
def test_qlora_quick_steps(tmp_path):
    losses = _train(tmp_path, "false", "sequence", 3, 1e-4, "--qlora")
    assert len(losses) == 3 and all(np.isfinite(losses))


def test_ig_bf16_on_cuda_agrees_with_fp32(tiny_tok, tiny_qwen2):
    import copy

    from attribution.integrated_gradients import integrated_gradients
    from tests.test_integrated_gradients import _example

    al = _example(tiny_tok)
    args = (al.input_ids, al.answer_positions, al.token_segment >= 0, tiny_tok.pad_token_id)
    ref = integrated_gradients(copy.deepcopy(tiny_qwen2).cuda(), *args, rule="riemann_right", steps=16)
    bf = integrated_gradients(copy.deepcopy(tiny_qwen2).cuda().to(torch.bfloat16), *args, rule="riemann_right", steps=16)
    inside = al.token_segment >= 0
    assert bf.token_ig.dtype == np.float32 and np.corrcoef(ref.token_ig[inside], bf.token_ig[inside])[0, 1] > 0.95


def test_captum_parity_on_cuda(tiny_tok, tiny_qwen2):
    import copy

    from attribution.integrated_gradients import integrated_gradients
    from tests.test_integrated_gradients import _captum, _example

    model = copy.deepcopy(tiny_qwen2).cuda()
    al = _example(tiny_tok)
    ours = integrated_gradients(model, al.input_ids, al.answer_positions, None, tiny_tok.pad_token_id,
                                rule="gauss_legendre", steps=12, internal_batch=4)
    ref = _captum(model, al, torch.full((len(al.input_ids),), tiny_tok.pad_token_id), "gausslegendre", 12)
    np.testing.assert_allclose(ours.token_ig, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


def test_hf_generation_on_cuda_resumes(tmp_path):
    from common.config import EvalArguments
    from common.modeling import inference_model
    from eval.run import evaluate

    assert inference_model("tiny-qwen2").device.type == "cuda"
    cfg = EvalArguments(eval_benchmarks=["math500"], eval_data_dir=str(shared_path("benchmarks")), eval_samples=2,
                        eval_max_new_tokens=16, eval_backend="hf", eval_limit=3, eval_dir=str(tmp_path))
    first = evaluate("tiny-qwen2", "tiny", cfg)
    path = tmp_path / "tiny" / "samples.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 3 * 3 and first["math500"]["questions"] == 3
    path.write_text("".join(lines[:4]))  # killed after one question and a half
    again = evaluate("tiny-qwen2", "tiny", cfg)
    keys = [json.loads(x)["key"] for x in path.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 9 and again.keys() == first.keys()
