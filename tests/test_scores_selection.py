"""Hand-computed scores (eqs. 3-4), the paper's selector (eqs. 5-7) and each baseline on known inputs."""
import numpy as np
import pytest

from attribution.selection import IMPLEMENTATIONS, TraceView, parameters, segment_scores, select, top_k_star
from common.config import SELECTORS, SelectionArguments


def run(selector, view, **params):
    """Run a selector with the recipe defaults for every parameter not given."""
    return select(view, SelectionArguments(selector=selector, **params))

# tokens: 2 prompt, segment 0 (4 tokens), segment 1 (1 token), segment 2 (4 tokens), 1 tail
SEG = np.array([-1, -1, 0, 0, 0, 0, 1, 2, 2, 2, 2, -2])
IG = np.array([9.0, 9.0, 1.0, -1.0, 2.0, 0.0, 3.0, 0.5, 0.5, -0.5, 0.5, 9.0])


def test_scores_by_hand():
    s = segment_scores(IG, SEG, 3)
    assert s.n_tokens.tolist() == [4, 1, 4]
    # strength = sum|IG| / sqrt(N): 4/2, 3/1, 2/2
    np.testing.assert_allclose(s.strength, [2.0, 3.0, 1.0])
    np.testing.assert_allclose(s.norm_strength, [2 / 6, 3 / 6, 1 / 6])
    # consistency = |sum IG| / sum|IG|: 2/4, 3/3, 1/2
    np.testing.assert_allclose(s.consistency, [0.5, 1.0, 0.5])


def test_zero_rule_no_nan():
    s = segment_scores(np.zeros(4), np.array([0, 0, 1, 1]), 3)  # segment 2 has no token at all
    assert not np.isnan(s.strength).any() and not np.isnan(s.consistency).any()
    assert s.norm_strength.tolist() == [0, 0, 0] and s.consistency.tolist() == [1, 1, 1]
    assert top_k_star(s.norm_strength, 0.7).sum() == 0


def test_top_k_star_cumulative_threshold():
    norm = np.array([0.1, 0.4, 0.3, 0.2])
    assert top_k_star(norm, 0.7).tolist() == [False, True, True, False]  # 0.4 + 0.3 reaches 0.7 exactly
    assert top_k_star(norm, 0.71).tolist() == [False, True, True, True]
    assert top_k_star(norm, 1.0).all()


def _view(ig, seg, k, **kw):
    return TraceView(seg, k, ig, segment_scores(ig, seg, k), **kw)


def test_paper_selector_consistency_and_forced_ends():
    # 6 segments of one token each (consistency 1) except segment 2 and 3 (two tokens of mixed sign)
    seg = np.array([0, 1, 2, 2, 3, 3, 4, 5])
    ig = np.array([0.01, 0.1, 3.0, -1.0, 2.0, 1.9, 0.2, 0.01])
    v = _view(ig, seg, 6)
    s = v.scores
    assert s.consistency[2] == pytest.approx(0.5) and s.consistency[3] > 0.97
    sel = run("paper", v, tau=0.7, beta=0.8)
    # top-k*: segments 3 and 2; consistency filter drops 3; ends forced
    assert sel.segment_selected.tolist() == [True, False, True, False, False, True]
    assert sel.token_selected.tolist() == [True, False, True, True, False, False, False, True]
    hs = run("high_strength_segments", v, tau=0.7)
    assert hs.segment_selected.tolist() == [True, False, True, True, False, True]
    assert run("paper", v, keep_second_last=True).segment_selected[4]


def test_token_baselines_take_ratio():
    v = _view(IG, SEG, 3)
    abs_sel = run("high_abs_ig_tokens", v, token_ratio=0.33)  # 9 trace tokens -> 3
    assert set(np.flatnonzero(abs_sel.token_selected)) == {2, 4, 6}  # |IG| 1 ties: the earlier token wins
    signed = run("high_ig_tokens", v, token_ratio=0.33)
    assert set(np.flatnonzero(signed.token_selected)) == {2, 4, 6}
    low = run("high_ig_tokens", v, token_ratio=0.5)  # 5 tokens: 3, 2, 1, then two of the 0.5s
    assert not low.token_selected[[0, 1, 11]].any() and low.token_selected.sum() == 5
    assert not low.token_selected[3] and not low.token_selected[9]  # negative tokens come last


def test_random_segments_seeded_and_matched():
    seg = np.repeat(np.arange(10), 3)
    ig = np.random.default_rng(0).normal(size=30)
    v = _view(ig, seg, 10, record_id="r1")
    n_paper = run("paper", v).segment_selected.sum()
    a = run("random_segments", v, selection_seed=1)
    assert a.segment_selected.sum() == n_paper and a.segment_selected[0] and a.segment_selected[-1]
    assert (a.segment_selected == run("random_segments", v, selection_seed=1).segment_selected).all()
    other = [run("random_segments", _view(ig, seg, 10, record_id=f"r{i}"), segment_ratio=0.5).segment_selected
             for i in range(2, 8)]
    assert all(o.sum() == 5 for o in other) and len({tuple(o) for o in other}) > 1


def test_first_correct_solution():
    texts = ["Let x be 1 6.", "\n\nWait, 2 * 8 = 160? no.", "\n\nWait, so 16.", "\n\nAnother check: 16."]
    seg = np.array([0, 1, 2, 3])
    v = TraceView(seg, 4, segment_texts=texts, answer="16")
    assert run("first_correct_solution", v).segment_selected.tolist() == [True, True, True, False]
    none = run("first_correct_solution", TraceView(seg, 4, segment_texts=texts, answer="17"))
    assert none.segment_selected.all() and "never stated" in none.note


def test_feature_selector_and_all():
    seg = np.array([0, 1, 1, 1, 2, 3, 3, 4])
    v = TraceView(seg, 5, features={"segment_entropy": np.array([0.0, 5.0, 1.0, 3.0, 0.0])})
    sel = run("segment_entropy", v, token_ratio=0.5)
    # ends (2 tokens) -> 25%; + segment 1 (3 tokens) -> 62.5% >= 50%
    assert sel.segment_selected.tolist() == [True, True, False, False, True]
    with pytest.raises(ValueError, match="needs the per-segment feature"):
        run("confidence_gain", v)
    assert run("all", v).token_selected.all()
    with pytest.raises(ValueError, match="selector.*'best' is not one of"):
        run("best", v)


def test_selectors_declare_recipe_parameters():
    """Every registered selector has an implementation whose keyword parameters are SelectionArguments keys."""
    assert IMPLEMENTATIONS.keys() == SELECTORS.keys()
    keys = set(SelectionArguments.__dataclass_fields__)
    for name in SELECTORS:
        assert set(parameters(name)) <= keys, name
    assert parameters("paper") == ("tau", "beta", "keep_second_last") and parameters("all") == ()
