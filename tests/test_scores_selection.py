"""Hand-computed scores (eqs. 3-4), the paper's selector (eqs. 5-7) and each baseline on known inputs."""
import numpy as np
import pytest

from attribution.selection import IMPLEMENTATIONS, TraceView, parameters, segment_scores, select, states_answer, top_k_star
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


def test_token_baselines_take_ratio_and_keep_ends():
    # prompt, segments 0..4 (0: token 1, 1: tokens 2-3, 2: tokens 4-5, 3: tokens 6-7, 4: token 8), tail
    seg = np.array([-1, 0, 1, 1, 2, 2, 3, 3, 4, -2])
    ig = np.array([9.0, 0.1, 3.0, -0.5, 0.2, -2.5, 0.3, 1.0, 0.05, 9.0])
    v = _view(ig, seg, 5)
    # 8 trace tokens, ratio 0.25 -> 2 tokens: by |IG| tokens 2 (3.0) and 5 (2.5); plus the end segments (1 and 8)
    assert np.flatnonzero(run("high_abs_ig_tokens", v, token_ratio=0.25).token_selected).tolist() == [1, 2, 5, 8]
    # by signed IG: tokens 2 (3.0) and 7 (1.0); the negative ones come last
    assert np.flatnonzero(run("high_ig_tokens", v, token_ratio=0.25).token_selected).tolist() == [1, 2, 7, 8]
    assert np.flatnonzero(run("high_ig_tokens", v, token_ratio=0.25, keep_second_last=True).token_selected).tolist() == [
        1, 2, 6, 7, 8]


def test_random_segments_draw_a_ratio_of_the_segments_besides_the_ends():
    """App. C.4: the ends are kept in addition to the ~33% drawn from the other segments."""
    ig = np.random.default_rng(0).normal(size=90)
    # long trace, 30 segments: the 2 ends + round(0.33 * 28) = 9 drawn = 11 kept
    long = _view(ig, np.repeat(np.arange(30), 3), 30, record_id="r1")
    a = run("random_segments", long, selection_seed=1)
    assert a.segment_selected.sum() == 11 and a.segment_selected[0] and a.segment_selected[-1]
    assert (a.segment_selected == run("random_segments", long, selection_seed=1).segment_selected).all()
    assert not (a.segment_selected == run("random_segments", long, selection_seed=2).segment_selected).all()
    # short trace, 5 segments: 2 ends + round(0.33 * 3) = 1 drawn (the old rule, 33% of all 5, kept the ends alone)
    short = _view(ig[:15], np.repeat(np.arange(5), 3), 5, record_id="r1")
    picks = {int(np.flatnonzero(run("random_segments", _view(ig[:15], np.repeat(np.arange(5), 3), 5, record_id=f"r{i}"))
                                .segment_selected[1:-1])[0]) for i in range(12)}
    assert run("random_segments", short).segment_selected.sum() == 3 and picks == {0, 1, 2}
    # 2 segments: both are ends, nothing to draw; ratio 1: every segment
    assert run("random_segments", _view(ig[:6], np.repeat(np.arange(2), 3), 2)).segment_selected.all()
    assert run("random_segments", long, segment_ratio=1.0).segment_selected.all()
    # matched: as many in all as the paper's selector keeps on that trace
    n_paper = run("paper", long).segment_selected.sum()
    assert run("random_segments", long, segment_ratio=None).segment_selected.sum() == n_paper


def test_oracle_masks_exactly_the_planted_segments():
    seg = np.repeat(np.arange(5), 2)
    v = TraceView(seg, 5, planted=np.array([False, True, False, True, False]), record_id="r")
    assert run("oracle", v).segment_selected.tolist() == [True, False, True, False, True]
    assert run("oracle", v).token_selected.tolist() == [True, True, False, False, True, True, False, False, True, True]
    with pytest.raises(ValueError, match="'q'.*ground truth"):
        run("oracle", TraceView(seg, 5, record_id="q"))


def test_first_correct_solution():
    texts = ["There are 16 cases.", "\n\nWait, 2 * 8 = 160? no.", "\n\nWait, so the answer is 16.",
             "\n\nAnother check: 16.", "\n\nSo \\boxed{16}."]
    seg = np.arange(5)
    v = TraceView(seg, 5, segment_texts=texts, answer="16")
    # "16 cases" is a mention, not a result; segment 2 concludes it; the last segment is kept as well
    assert run("first_correct_solution", v).segment_selected.tolist() == [True, True, True, False, True]
    none = run("first_correct_solution", TraceView(seg, 5, segment_texts=texts, answer="17"))
    assert none.segment_selected.all() and "never stated" in none.note


@pytest.mark.parametrize("text,answer,stated", [
    ("there are 5 cases", "5", False), ("so \\boxed{5}.", "5", True), ("The answer is 5.", "5", True),
    ("the answer is 50", "5", False), ("**Final Answer:** $16$", "16", True), ("answer = 16.5", "16", False),
    ("\\boxed{ \\frac{1}{2} }", "\\frac{1}{2}", True), ("x = 5, so 2x = 10", "5", False)])
def test_states_answer(text, answer, stated):
    assert states_answer(text, answer) is stated


def test_confidence_gain_keeps_positive_gains_and_ends():
    seg = np.arange(5)
    v = TraceView(seg, 5, features={"confidence_gain": np.array([-1.0, 0.5, 0.0, -0.2, -3.0])})
    assert run("confidence_gain", v).segment_selected.tolist() == [True, True, False, False, True]


def test_strength_aggregations_by_hand():
    ig = np.array([3.0, -1.0, 0.0, 0.0, 0.0, 2.0])  # segment 0: five tokens, segment 1: one token
    seg = np.array([0, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(segment_scores(ig, seg, 2, "sqrt_norm").strength, [4 / np.sqrt(5), 2.0])
    np.testing.assert_allclose(segment_scores(ig, seg, 2, "sum").strength, [4.0, 2.0])
    # top 20% of 5 tokens = 1 token (|3|); of 1 token = that token
    np.testing.assert_allclose(segment_scores(ig, seg, 2, "top20_mean").strength, [3.0, 2.0])


def test_feature_selector_and_all():
    seg = np.array([0, 1, 1, 1, 2, 3, 3, 4])
    v = TraceView(seg, 5, features={"segment_entropy": np.array([0.0, 5.0, 1.0, 3.0, 0.0])})
    assert run("all", v).token_selected.all()
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
