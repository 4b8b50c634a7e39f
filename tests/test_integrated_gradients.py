"""The IG engine: parity with Captum, completeness, baseline scopes, dtype handling, ig_steps: auto."""
import numpy as np
import pytest
import torch

from attribution.alignment import align
from attribution.attributions import load_attributions
from attribution.integrated_gradients import integrated_gradients, integration_points
from attribution.segments import split_segments
from data import synthetic
from common.config import ANSWER_SUFFIX, AUTO_RULES, IG_RULES
from data.prompts import attribution_text


def _example(tok, i=0):
    rec = synthetic.generate(i + 1, seed=11)[i]
    return align(tok, attribution_text(tok, rec.question, rec.trace, rec.answer, ANSWER_SUFFIX), split_segments(rec.trace))


def _captum(model, al, baseline_ids, method, steps):
    from captum.attr import LayerIntegratedGradients

    device = next(model.parameters()).device
    ids = torch.as_tensor(al.input_ids, device=device).unsqueeze(0)
    pos = torch.as_tensor(al.answer_positions, device=device)

    def forward(input_ids):
        logp = torch.log_softmax(model(input_ids=input_ids).logits.float(), -1)
        return logp[:, pos - 1, :].gather(-1, input_ids[:, pos].unsqueeze(-1)).squeeze(-1).sum(-1)

    lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
    attr = lig.attribute(ids, baselines=baseline_ids.to(device).unsqueeze(0), method=method, n_steps=steps,
                         internal_batch_size=steps)
    return attr.sum(-1)[0].detach().float().cpu().numpy()


@pytest.mark.parametrize("rule,method", [("riemann_midpoint", "riemann_middle"), ("gauss_legendre", "gausslegendre")])
@pytest.mark.parametrize("scope", ["all", "trace"])
def test_parity_with_captum(tiny_tok, tiny_qwen2, rule, method, scope):
    al = _example(tiny_tok)
    mask = np.ones(len(al.input_ids), bool) if scope == "all" else al.token_segment >= 0
    pad = tiny_tok.pad_token_id
    ours = integrated_gradients(tiny_qwen2, al.input_ids, al.answer_positions, mask, pad, rule=rule, steps=12, internal_batch=5)
    base = torch.where(torch.as_tensor(mask), pad, torch.as_tensor(al.input_ids))
    ref = _captum(tiny_qwen2, al, base, method, 12)
    np.testing.assert_allclose(ours.token_ig, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    if scope == "trace":
        assert np.all(ours.token_ig[al.token_segment < 0] == 0)


@pytest.mark.parametrize("model_fixture", ["tiny_qwen2", "tiny_llama"])
def test_completeness_many_gauss_points(tiny_tok, model_fixture, request):
    model = request.getfixturevalue(model_fixture)
    al = _example(tiny_tok, 1)
    # trace-only baseline: the all-position path starts at a sequence of identical pad embeddings,
    # where F turns sharply (see the benchmark), and needs far more points to converge
    res = integrated_gradients(model, al.input_ids, al.answer_positions, al.token_segment >= 0,
                               tiny_tok.pad_token_id, rule="gauss_legendre", steps=48, internal_batch=16)
    assert abs(res.f_input - res.f_baseline) > 1e-3
    assert res.completeness_gap < 1e-3
    few = integrated_gradients(model, al.input_ids, al.answer_positions, al.token_segment >= 0,
                               tiny_tok.pad_token_id, rule="riemann_right", steps=4, internal_batch=4)
    assert few.completeness_gap > res.completeness_gap


def test_target_is_answer_logprob(tiny_tok, tiny_qwen2):
    al = _example(tiny_tok)
    res = integrated_gradients(tiny_qwen2, al.input_ids, al.answer_positions, None, None, rule="riemann_right", steps=2)
    with torch.no_grad():
        logp = torch.log_softmax(tiny_qwen2(input_ids=torch.as_tensor(al.input_ids)[None]).logits[0], -1)
    pos = al.answer_positions
    assert res.f_input == pytest.approx(float(logp[pos - 1, al.input_ids[pos]].sum()), rel=1e-5)
    assert tiny_qwen2.training is False and all(p.requires_grad for p in tiny_qwen2.parameters())


def test_bf16_model_accumulates_fp32(tiny_tok, tiny_qwen2):
    import copy

    al = _example(tiny_tok)
    bf = copy.deepcopy(tiny_qwen2).to(torch.bfloat16)
    a = integrated_gradients(tiny_qwen2, al.input_ids, al.answer_positions, None, tiny_tok.pad_token_id, rule="riemann_right", steps=8)
    b = integrated_gradients(bf, al.input_ids, al.answer_positions, None, tiny_tok.pad_token_id, rule="riemann_right", steps=8)
    assert b.token_ig.dtype == np.float32 and np.corrcoef(a.token_ig, b.token_ig)[0, 1] > 0.95


def test_checkpointing_same_result(tiny_tok, tiny_llama):
    al = _example(tiny_tok, 2)
    args = (tiny_llama, al.input_ids, al.answer_positions, al.token_segment >= 0, tiny_tok.pad_token_id)
    a = integrated_gradients(*args, rule="gauss_legendre", steps=6)
    b = integrated_gradients(*args, rule="gauss_legendre", steps=6, gradient_checkpointing=True)
    np.testing.assert_allclose(a.token_ig, b.token_ig, rtol=1e-4, atol=1e-7)


def test_rules_weights():
    for rule in IG_RULES:
        a, w = integration_points(rule, 7)
        assert len(a) == len(w) == 7 and np.all((a >= 0) & (a <= 1)) and w.sum() == pytest.approx(1.0)
        # exact for a cubic on [0,1] except the Riemann sums; GL also for degree 2n-1
    # eq. 2 uses the points j/J, j = 1..J; the released code linspace(0, 1, J); both weigh each 1/J
    np.testing.assert_allclose(integration_points("riemann_right", 4)[0], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(integration_points("riemann_linspace", 4)[0], [0.0, 1 / 3, 2 / 3, 1.0])
    assert integration_points("riemann_right", 4)[1].tolist() == [0.25] * 4
    a, w = integration_points("gauss_legendre", 3)
    assert (w * a**5).sum() == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="unknown integration rule"):
        integration_points("boole", 5)


def test_path_products_are_the_path_derivative(tiny_tok, tiny_llama):
    """sum_t p_t(a) is dF/da (chain rule): check against central differences of F itself."""
    from attribution.integrated_gradients import path_samples

    al = _example(tiny_tok, 3)
    # F is fp32 (|F| ~ 7, ulp ~ 5e-7): at h = 1e-3 rounding alone is ~1.4% of dF/da; at 1e-2 rounding
    # and the h^2 truncation term together stay near 0.3% (measured), inside the 1% tolerance
    h = 1e-2
    s = path_samples(tiny_llama, al.input_ids, al.answer_positions, [0.3 - h, 0.3, 0.3 + h, 0.8 - h, 0.8, 0.8 + h],
                     al.token_segment >= 0, tiny_tok.pad_token_id, internal_batch=3)
    for i in (1, 4):
        assert s.products[i].sum() == pytest.approx((s.f[i + 1] - s.f[i - 1]) / (2 * h), rel=1e-2)
    assert np.all(s.products[:, al.token_segment < 0] == 0)


def _known_integral_samples(rate: float, n_tokens: int = 5):
    """p_t(a) = c_t * rate * exp(-rate * a): an integrand that turns sharply near the baseline (a = 0), with
    IG_t = c_t (1 - exp(-rate)) exactly; F(a) follows so that F(1) - F(0) = sum_t IG_t. Counts every alpha asked."""
    c = np.linspace(-1.0, 2.0, n_tokens)
    asked = []

    def sample(alphas):
        asked.extend(np.asarray(alphas).tolist())
        shape = rate * np.exp(-rate * np.asarray(alphas))
        f = c.sum() * (1 - np.exp(-rate * np.asarray(alphas)))
        return f, (shape[:, None] * c[None, :]).astype(np.float32)

    def ends(known):
        return 0.0, float(c.sum() * (1 - np.exp(-rate)))

    return sample, ends, c * (1 - np.exp(-rate)), asked


@pytest.mark.parametrize("rule", AUTO_RULES)
def test_auto_reaches_a_known_integral(rule):
    from attribution.integrated_gradients import auto_levels, refine

    sample, ends, exact, asked = _known_integral_samples(rate=12.0)
    res = refine(rule, auto_levels(rule, 4096), sample, ends, 0.01, auto=True)
    assert res.converged and res.change <= 0.01 and res.completeness_gap <= 0.01
    # the criterion holds the estimate itself near the exact integral (relative L1 error within a few tolerances)
    assert np.abs(res.token_ig - exact).sum() / np.abs(exact).sum() < 0.03
    assert len(asked) == len(set(asked)) == res.steps  # each level added only the points the last one lacked
    # the same points at a fixed count give the same estimate
    fixed = refine(rule, [res.steps], _known_integral_samples(12.0)[0], ends, 0.01, auto=False)
    np.testing.assert_allclose(fixed.token_ig, res.token_ig, rtol=1e-6)


def test_auto_levels_and_graded_rule():
    from attribution.integrated_gradients import auto_levels

    assert auto_levels("riemann_right", 64) == [4, 8, 16, 32, 64]
    assert auto_levels("riemann_trapezoid", 64) == auto_levels("simpson", 64) == [5, 9, 17, 33]
    # Simpson on 5 points, by hand: (1, 4, 2, 4, 1) / 12; exact for a cubic
    a, w = integration_points("simpson", 5)
    np.testing.assert_allclose(w, np.array([1, 4, 2, 4, 1]) / 12)
    assert (w * a**3).sum() == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="nest"):
        auto_levels("gauss_legendre", 64)
    # graded: points (j/J)^2, trapezoid weights in u = sqrt(a) (g(u) = 2u p(u^2)); for p(a) = a by hand:
    # (2 * 1 + 4 * 4 + 6 * 9) / 256 + 4/16 * 1 = 136/256 (the exact integral is 1/2)
    a, w = integration_points("graded_trapezoid", 4)
    np.testing.assert_allclose(a, [1 / 16, 4 / 16, 9 / 16, 1.0])
    np.testing.assert_allclose(w, [2 / 16, 4 / 16, 6 / 16, 4 / 16])
    assert w.sum() == pytest.approx(1.0) and (w * a).sum() == pytest.approx(136 / 256)
    for rule in AUTO_RULES:  # nested: a level's points are among the next level's, bit for bit
        small, big = (set(integration_points(rule, n)[0].tolist()) for n in auto_levels(rule, 64)[1:3])
        assert small < big


@pytest.mark.parametrize("rule", AUTO_RULES)
def test_auto_on_the_model_evaluates_each_point_once(tiny_tok, tiny_qwen2, rule):
    al = _example(tiny_tok, 1)
    calls = []
    hook = tiny_qwen2.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        res = integrated_gradients(tiny_qwen2, al.input_ids, al.answer_positions, al.token_segment >= 0,
                                   tiny_tok.pad_token_id, rule=rule, steps="auto", tolerance=0.1, max_steps=129)
    finally:
        hook.remove()
    if rule != "riemann_right":  # eq. 2's first-order error needs hundreds of points on this path
        assert res.converged and res.completeness_gap <= 0.1 and res.change <= 0.1
    # one forward per point (internal batch 1), one for the prompt's cache, one for F(x') unless a = 0 is a point
    assert len(calls) == res.steps + 1 + (rule not in ("riemann_trapezoid", "simpson"))
    fixed = integrated_gradients(tiny_qwen2, al.input_ids, al.answer_positions, al.token_segment >= 0,
                                 tiny_tok.pad_token_id, rule=rule, steps=res.steps, tolerance=0.1)
    np.testing.assert_array_equal(fixed.token_ig, res.token_ig)
    # a fixed J is converged when its gap is within the tolerance (no change to check)
    assert fixed.converged == (fixed.completeness_gap <= 0.1) and fixed.change is None


def test_unconverged_trace_is_kept_flagged_and_named(tmp_path, tiny_tok, tiny_qwen2):
    from trl import ModelConfig

    from attribution import runner
    from common.config import AttributionArguments, TracesArguments
    from data.loaders import load_trace_records

    path = synthetic.write_jsonl(synthetic.generate(3, seed=21), tmp_path / "t.jsonl")
    traces = TracesArguments(traces=str(path))
    cfg = AttributionArguments(ig_steps="auto", ig_max_steps=8, ig_tolerance=1e-6, attribution_dir=str(tmp_path / "a"))
    summary = runner.run(traces, cfg, ModelConfig(model_name_or_path="tiny-qwen2"), load_trace_records(traces)[0],
                         model=tiny_qwen2, tokenizer=tiny_tok)
    rows = load_attributions(tmp_path / "a")
    assert summary["attributed"] == 3 and summary["unconverged"] == list(rows)
    for row in rows.values():
        assert row["ig_converged"] is False and row["ig_steps_used"] == 8 and row["ig_change"] > 1e-6
        assert len(row["token_ig"]) == len(row["input_ids"])
    assert summary["points"]["total"] == 24 and summary["completeness_gap"]["max"] == max(r["completeness_gap"] for r in rows.values())
    p = np.exp([r["f_input"] for r in rows.values()])
    assert summary["answer_probability"]["median"] == pytest.approx(float(np.median(p)))
    assert summary["answer_probability"]["below_0.5"] == pytest.approx(float(np.mean(p < 0.5)))


def test_killed_mid_trace_resumes_identical_rows(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    path = synthetic.write_jsonl(synthetic.generate(3, seed=23), tmp_path / "t.jsonl")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}

    def worker(out, *extra):
        return subprocess.run([sys.executable, "-m", "tests.ig_worker", str(tmp_path / out), str(path), *extra], env=env,
                              cwd=root, capture_output=True, text=True, timeout=300)

    assert worker("whole").returncode == 0
    killed = worker("killed", "5")  # the 5th forward of the second record: mid-integral
    assert killed.returncode == -9
    shard = tmp_path / "killed" / "shards" / "rank0-of-1.jsonl"
    assert len(shard.read_text().splitlines()) == 1
    assert worker("killed").returncode == 0

    def rows(out):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (tmp_path / out / "shards" / "rank0-of-1.jsonl").read_text().splitlines()]

    whole, resumed = rows("whole"), rows("killed")
    assert [r["id"] for r in resumed] == [r["id"] for r in whole] and resumed == whole


def test_target_logprob_is_igs_f_of_the_input(tiny_tok, tiny_qwen2):
    """Gate a's probability comes from the very target IG integrates: F(x) of attribute_record's row."""
    from attribution.runner import attribute_record, target_logprob
    from common.config import AttributionArguments, TracesArguments
    from data import synthetic

    rec = synthetic.generate(2, seed=6)[1]
    traces, cfg = TracesArguments(), AttributionArguments(ig_steps=2)
    row = attribute_record(tiny_qwen2, tiny_tok, rec, traces, cfg)
    assert target_logprob(tiny_qwen2, tiny_tok, rec, traces, cfg) == pytest.approx(row["f_input"], abs=1e-5)
