"""Sec. 3's analyses: the pure functions on constructed cases, then the command on the tiny model."""
import json

import numpy as np
import pytest

from attribution import analysis


def test_cumulative_curve_and_reach_by_hand():
    """Strengths 0.2, 0.5, 0.3: sorted 0.5, 0.3, 0.2; the top 10-30% of 3 segments is 1 segment (0.5),
    40-60% is 2 (0.8), 70-100% all (1.0); 80% of the strength is reached at 40% of the segments."""
    curve = analysis.cumulative_curve([0.2, 0.5, 0.3])
    np.testing.assert_allclose(curve, [0.5, 0.5, 0.5, 0.8, 0.8, 0.8, 1, 1, 1, 1])
    assert analysis.reach(curve, 0.8) == 0.4 and analysis.reach(curve, 0.5) == 0.1
    np.testing.assert_allclose(analysis.cumulative_curve([0, 0]), [0.5] * 5 + [1.0] * 5)  # no strength: uniform


def test_segment_classes_from_hand_scores():
    """tau 0.8: the top two (0.5 + 0.3) are high strength; beta 0.95: only segment 1 is highly consistent."""
    classes, important = analysis.segment_classes([0.5, 0.3, 0.15, 0.05], [0.5, 0.99, 0.9, 0.2], 0.8, 0.95)
    assert classes.tolist() == [0, 1, 2, 2] and important.tolist() == [True, False, False, False]
    means = analysis.class_means([1.0, 2.0, 3.0, 5.0], classes)
    assert means == {analysis.CLASSES[0]: (1.0, 1), analysis.CLASSES[1]: (2.0, 1), analysis.CLASSES[2]: (4.0, 2),
                     analysis.CLASSES[3]: (None, 0)}  # an empty cell is None (null), never NaN


def test_search_and_greedy_by_hand():
    """Two traces, four segments each. At tau 0.8, beta 0.95 the important segments are 0 of the first
    trace and 0, 1 of the second: 3 of 8 segments, (10 + 10 + 20) of 100 tokens; mean gain important
    (2 + 1 + 1) / 3, unimportant (0 + 0 + 0 + 3 + 0) / 5; the top 10% gain (3.0) is unimportant: FNR 1."""
    trace = {"norm_strength": np.array([0.5, 0.3, 0.15, 0.05]), "consistency": np.array([0.5, 0.99, 0.9, 0.2]),
             "gain": np.array([2.0, 0.0, 0.0, 0.0]), "tokens": np.array([10, 10, 10, 10])}
    other = {"norm_strength": np.array([0.4, 0.4, 0.1, 0.1]), "consistency": np.array([0.1, 0.1, 0.1, 0.1]),
             "gain": np.array([1.0, 1.0, 3.0, 0.0]), "tokens": np.array([10, 20, 10, 10])}
    (row,) = analysis.search([trace, other], [0.8], [0.95])
    assert row["segments"] == 3 / 8 and row["tokens"] == pytest.approx(40 / 90)
    assert row["gain_gap"] == pytest.approx(4 / 3 - 3 / 5) and row["false_negative_rate"] == 1.0
    # the ends left out (counted): trace 1 keeps segments 1, 2 (neither important), trace 2 keeps 1 (important), 2
    (mid,) = analysis.search([{**t, "counted": np.array([False, True, True, False])} for t in (trace, other)], [0.8], [0.95])
    assert mid["segments"] == 1 / 4 and mid["tokens"] == pytest.approx(20 / 50)
    assert mid["gain_gap"] == pytest.approx(1 - 3 / 3) and mid["false_negative_rate"] == 1.0  # top gain 3.0: unimportant
    rows = [{"tau": t, "beta": 0.9, "gain_gap": g} for t, g in ((0.5, 0.1), (0.6, 0.3), (0.7, 0.2), (0.8, 0.5))]
    rows += [{"tau": 0.6, "beta": b, "gain_gap": g} for b, g in ((0.8, 0.2), (0.95, 0.4), (1.0, 0.1))]
    assert analysis.greedy(rows, "tau", {"beta": 0.9}) == 0.6 and analysis.greedy(rows[:2], "tau", {"beta": 0.9}) == 0.6
    # then beta at tau* = 0.6: 0.2 (beta 0.8) -> 0.3 (0.9) -> 0.4 (0.95) -> 0.1 (1.0): stops at 0.95
    assert analysis.greedy(rows, "beta", {"tau": 0.6}) == 0.95
    assert analysis.greedy(rows, "tau", {"beta": 0.5}) is None
    assert analysis.greedy([{"tau": 0.5, "beta": 0.9, "gain_gap": None}], "tau", {"beta": 0.9}) is None


def test_bleu_against_earlier_segments():
    """A verbatim repeat has BLEU 1 against its source; the first segment has no reference (NaN); an
    unrelated segment scores near 0 (sacrebleu)."""
    step = "\n\nFirst, 3 boxes times 4 apples per box is 3 * 4 = 12 apples."
    bleu = analysis.bleu_vs_preceding(["Okay, let me see.", step, "\n\nHmm, the sky is blue today and clouds drift.", step])
    assert np.isnan(bleu[0]) and bleu[3] == pytest.approx(1.0) and bleu[2] < 0.1


@pytest.mark.parametrize("text,verdict", [
    ("Yes, the computation stops mid-way.", True),
    ("<think>It could be yes... the sum is finished though.</think>\n\nNo.", False),
    ("The step is complete, so no", False),
    ("I cannot tell.", None),
    ("<think>yes</think> I am not sure", None),
])
def test_judge_parsing_on_canned_outputs(text, verdict):
    assert analysis.parse_judge(text) is verdict


def test_positions_relative_to_the_answer():
    assert analysis.positions([True, False, True, True], 2).tolist() == [-2, 0, 1]
    assert analysis.positions([True], None).tolist() == []


def test_analyze_command_on_the_tiny_model(tmp_path):
    """Every step on 6 synthetic traces (two with a shortest incorrect response), the report, figures
    and summary written; the rerun resumes (no per-trace row computed twice)."""
    from attribution.__main__ import main
    from data import synthetic
    from data.records import Record, write_jsonl

    recs = synthetic.generate(6, seed=3)
    wrong = recs[1].trace.replace(recs[1].answer, "999") + "\n</think>\n\nSo the answer is 999."
    recs = [Record(r.id, r.question, r.trace, r.answer, r.source, {**r.meta, **({"shortest_incorrect": wrong} if i < 2 else {})})
            for i, r in enumerate(recs)]
    path = write_jsonl(recs, tmp_path / "t.jsonl")
    args = ["--config", "recipes/tiny/selective.yaml", "--traces", str(path), "--run_dir", str(tmp_path / "run"),
            "--ig_steps", "2", "--judge_model_name_or_path", "tiny-qwen2", "--judge_max_new_tokens", "4"]
    main(["ig", *args])
    main(["analyze", *args])
    out = tmp_path / "run" / "analysis"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["traces"] == 6 and summary["redundancy"]["incorrect"]["traces"] == 2
    assert summary["redundancy"]["correct"]["segments"] == pytest.approx(np.mean([len(r.meta["segments"]) for r in recs]))
    n_segments = sum(len(r.meta["segments"]) for r in recs)
    # the comparisons leave out the first and last segment of each trace (analysis_exclude_ends, Sec. 3)
    assert sum(n for _, n in summary["confidence"]["by_class"].values()) == n_segments - 2 * len(recs)
    assert summary["confidence"]["ends_excluded"] is True
    json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"summary holds {c}"))
    assert len(summary["search"]["grid"]) == 5 * 6
    judged = summary["judge"]
    assert sum(v["judged"] + v["no_verdict"] for v in judged.values()) == n_segments
    for png in ("redundancy", "confidence", "linguistic", "position"):
        assert (out / f"{png}.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "## 6. Position" in report and "tau* = " in report and "beta* = " in report
    stored = {f: (out / f).read_text() for f in ("confidence.jsonl", "linguistic.jsonl", "judge.jsonl", "incorrect.jsonl")}
    main(["analyze", *args, "--analysis_steps", "confidence", "search"])  # resumes: every row is there already
    assert {f: (out / f).read_text() for f in stored} == stored
    assert json.loads((out / "summary.json").read_text())["steps"] == ["confidence", "search"]


def test_analyze_fails_fast_in_one_line_on_a_missing_judge(tmp_path, capsys):
    """A judge that is neither offline, local nor reachable stops the command before its first step, in
    one line naming the key to set and the step to drop."""
    from attribution.__main__ import main
    from data import synthetic
    from data.records import write_jsonl

    path = write_jsonl(synthetic.generate(2, seed=3), tmp_path / "t.jsonl")
    args = ["--config", "recipes/tiny/selective.yaml", "--traces", str(path), "--run_dir", str(tmp_path / "run"), "--ig_steps", "2"]
    main(["ig", *args])
    with pytest.raises(SystemExit) as stop:
        main(["analyze", *args, "--judge_model_name_or_path", "no-such-org/no-such-judge"])
    message = str(stop.value)
    assert "\n" not in message and "--judge_model_name_or_path" in message and "--analysis_steps" in message
    assert "judge" not in message.split("--analysis_steps", 1)[1]
    assert not (tmp_path / "run" / "analysis" / "confidence.jsonl").exists()  # no step ran
