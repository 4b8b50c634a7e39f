"""Model features of the non-IG baselines, checked against direct computations on a tiny model."""
import numpy as np
import pytest
import torch

from attribution.features import completes_answer, segment_features
from attribution.segments import split_segments
from data import synthetic
from common.config import ANSWER_SUFFIX, IG_FEATURES
from data.prompts import render_prompt


def _logprob_of(model, tok, text, start):
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor([enc["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    lp = logp.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1).numpy()
    ends = np.asarray(enc["offset_mapping"])[1:, 1]
    return lp[ends > start], logp


def test_features_match_direct_computation(tiny_tok, tiny_qwen2):
    rec = synthetic.generate(3, seed=4)[2]
    texts = [s.text for s in split_segments(rec.trace)]
    prompt = render_prompt(tiny_tok, rec.question)
    f = segment_features(tiny_qwen2, tiny_tok, prompt, texts, rec.answer, IG_FEATURES, ANSWER_SUFFIX)
    assert all(v.shape == (len(texts),) and np.isfinite(v).all() for v in f.values())
    # confidence gain telescopes: its sum is log p(answer | whole trace) - log p(answer | no trace)
    tail = ANSWER_SUFFIX.format(answer=rec.answer)
    ends = []
    for head in (prompt, prompt + rec.trace):
        lp, _ = _logprob_of(tiny_qwen2, tiny_tok, head + tail, len(head) + tail.rfind(rec.answer))
        ends.append(lp.sum())
    assert f["confidence_gain"].sum() == pytest.approx(ends[1] - ends[0], abs=1e-4)
    # perplexity gain of segment 1: ppl(trace without it) - ppl(trace)
    ppl = [np.exp(-_logprob_of(tiny_qwen2, tiny_tok, prompt + t, len(prompt))[0].mean())
           for t in ("".join(texts[:1] + texts[2:]), rec.trace)]
    assert f["segment_perplexity"][1] == pytest.approx(ppl[0] - ppl[1], rel=1e-4)


def test_entropy_feature_and_errors(tiny_tok, tiny_qwen2):
    prompt = render_prompt(tiny_tok, "q")
    f = segment_features(tiny_qwen2, tiny_tok, prompt, ["only one segment."], "1", ["segment_entropy", "segment_perplexity"],
                         ANSWER_SUFFIX)
    assert f["segment_perplexity"].tolist() == [0.0] and 0 < f["segment_entropy"][0] <= np.log(len(tiny_tok)) + 1e-4
    with pytest.raises(ValueError, match="unknown features"):
        segment_features(tiny_qwen2, tiny_tok, prompt, ["x"], "1", ["magic"], ANSWER_SUFFIX)
    with pytest.raises(ValueError, match="needs the gold answer"):
        segment_features(tiny_qwen2, tiny_tok, prompt, ["x"], None, ["confidence_gain"], ANSWER_SUFFIX)


@pytest.mark.parametrize("completion,stated", [("42}.", True), (" 4 2 } So", True), ("42", False), ("420}", False),
                                               ("\\frac{1}{2}}", False), ("}42", False)])
def test_sampled_answer_matching(completion, stated):
    assert completes_answer(completion, "42") is stated


def test_sampled_confidence_gain(tiny_tok, tiny_qwen2):
    """M sampled answers per prefix: confidences are shares of M, so every gain is a multiple of 1/M."""
    rec = synthetic.generate(3, seed=4)[1]
    texts = [s.text for s in split_segments(rec.trace)]
    prompt = render_prompt(tiny_tok, rec.question)
    m = 4
    f = segment_features(tiny_qwen2, tiny_tok, prompt, texts, rec.answer, ["confidence_gain"], ANSWER_SUFFIX,
                         confidence_samples=m, seed=1)
    gains = f["confidence_gain"]
    assert gains.shape == (len(texts),) and np.allclose(gains * m, np.round(gains * m)) and np.all(np.abs(gains) <= 1)
    again = segment_features(tiny_qwen2, tiny_tok, prompt, texts, rec.answer, ["confidence_gain"], ANSWER_SUFFIX,
                             confidence_samples=m, seed=1)
    np.testing.assert_array_equal(gains, again["confidence_gain"])  # seeded


def test_shared_cache_sampling_matches_full_forwards(tiny_tok, tiny_qwen2):
    """The samples share the prompt's key/value cache: each drawn token's log-prob, as sampled, equals the
    one a full forward over prompt + the row's earlier tokens gives (at t = 0.6)."""
    from attribution.features import sample_continuations

    ids = torch.tensor([tiny_tok("Some prompt to continue from", add_special_tokens=False)["input_ids"]])
    tokens, logps = sample_continuations(tiny_qwen2, ids, n_new=5, samples=6, seed=3)
    assert tokens.shape == logps.shape == (6, 5)
    with torch.no_grad():
        full = torch.log_softmax(tiny_qwen2(input_ids=torch.cat([ids.expand(6, -1), tokens], 1)).logits.float() / 0.6, -1)
    direct = full[:, ids.shape[1] - 1:-1].gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logps, direct, atol=1e-4, rtol=1e-4)
    again = sample_continuations(tiny_qwen2, ids, n_new=5, samples=6, seed=3)[0]
    assert torch.equal(tokens, again) and len({tuple(r) for r in tokens.tolist()}) > 1  # seeded, and rows differ
