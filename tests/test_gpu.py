"""GPU checks (`pytest -m gpu`, run by scripts/gpu_check.sh): every CUDA path, on random models built
from configs (nothing from the hub, nothing from ../shared). Each test's first docstring line says what
it proves; each skips naming what this machine lacks (`python -m scripts.gpu_kit plan` lists them)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scripts.gpu_kit.checks import lacking

ROOT = Path(__file__).resolve().parent.parent


def needs(*what: str):
    reasons = lacking(*what)
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons))


pytestmark = [pytest.mark.gpu, needs("cuda")]
ONE_STEP = ["sequence:1:0", "token:1:0"]  # the first-step loss under each normalization (lr 0: same weights)
TWENTY = "sequence:20:0.0003"


def _train(out: Path, unsloth: str, runs: list[str], *extra: str) -> dict:
    cmd = [sys.executable, "-m", "tests.gpu_worker", str(out), "--unsloth", unsloth, "--runs", *runs, *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((out / "losses.json").read_text())


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("plain"), "false", ONE_STEP)


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("unsloth"), "true", ONE_STEP + [TWENTY])


@needs("cuda", "unsloth")
@pytest.mark.parametrize("run", ONE_STEP)
def test_unsloth_first_step_loss_equals_plain_trl(plain, fast, run):
    """Unsloth vs plain TRL: the same first-step loss (eq. 9, per sequence and per token) on the same batch and weights.

    The plain path's masking and eq. 9 are checked by hand on CPU, so masked tokens count for nothing
    under Unsloth either."""
    assert fast[run][0] == pytest.approx(plain[run][0], rel=2e-2)  # bf16 kernels round differently


@needs("cuda", "unsloth")
def test_unsloth_twenty_steps_lower_the_loss(fast):
    """Unsloth full fine-tuning learns: 20 steps lower the selective loss."""
    losses = fast[TWENTY]
    assert len(losses) == 20 and np.mean(losses[-5:]) < np.mean(losses[:5])


@needs("cuda", "bitsandbytes")
def test_qlora_quick_steps(tmp_path):
    """QLoRA (4-bit base, LoRA r=8) trains 3 finite steps on the selective labels."""
    losses = _train(tmp_path, "false", ["sequence:3:0.0001"], "--qlora")["sequence:3:0.0001"]
    assert len(losses) == 3 and all(np.isfinite(losses))


def test_ig_bf16_on_cuda_agrees_with_fp32(tiny_tok, tiny_qwen2):
    """IG on CUDA: bf16 vs fp32 token attributions correlate above 0.95."""
    import copy

    import torch

    from attribution.integrated_gradients import integrated_gradients
    from tests.test_integrated_gradients import _example

    al = _example(tiny_tok)
    args = (al.input_ids, al.answer_positions, al.token_segment >= 0, tiny_tok.pad_token_id)
    ref = integrated_gradients(copy.deepcopy(tiny_qwen2).cuda(), *args, rule="riemann_right", steps=16)
    bf = integrated_gradients(copy.deepcopy(tiny_qwen2).cuda().to(torch.bfloat16), *args, rule="riemann_right", steps=16)
    inside = al.token_segment >= 0
    assert bf.token_ig.dtype == np.float32 and np.corrcoef(ref.token_ig[inside], bf.token_ig[inside])[0, 1] > 0.95


def test_captum_parity_on_cuda(tiny_tok, tiny_qwen2):
    """IG on CUDA: this engine equals Captum's IntegratedGradients (Gauss-Legendre, 12 points) to 1e-3."""
    import copy

    import torch

    from attribution.integrated_gradients import integrated_gradients
    from tests.test_integrated_gradients import _captum, _example

    model = copy.deepcopy(tiny_qwen2).cuda()
    al = _example(tiny_tok)
    ours = integrated_gradients(model, al.input_ids, al.answer_positions, None, tiny_tok.pad_token_id,
                                rule="gauss_legendre", steps=12, internal_batch=4)
    ref = _captum(model, al, torch.full((len(al.input_ids),), tiny_tok.pad_token_id), "gausslegendre", 12)
    np.testing.assert_allclose(ours.token_ig, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


def test_hf_generation_on_cuda_resumes(tmp_path):
    """Evaluation on CUDA (hf backend): samples on the GPU, and a run killed mid-way resumes without loss or duplicates."""
    from common.config import EvalArguments
    from common.modeling import inference_model
    from data import synthetic
    from data.records import write_jsonl
    from eval.run import evaluate

    assert inference_model("tiny-qwen2").device.type == "cuda"
    write_jsonl(synthetic.generate(3, seed=0, split="eval"), tmp_path / "data" / "synthetic" / "test.jsonl")
    cfg = EvalArguments(eval_benchmarks=["synthetic"], eval_data_dir=str(tmp_path / "data"), eval_samples=2,
                        eval_max_new_tokens=16, eval_backend="hf", eval_limit=3, eval_dir=str(tmp_path))
    first = evaluate("tiny-qwen2", "tiny", cfg)
    path = tmp_path / "tiny" / "samples.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 3 * 3 and first["synthetic"]["questions"] == 3
    path.write_text("".join(lines[:4]))  # killed after one question and a half
    again = evaluate("tiny-qwen2", "tiny", cfg)
    keys = [json.loads(x)["key"] for x in path.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 9 and again.keys() == first.keys()
