"""The study (python -m pipelines.study): ground-truth labels, its statistics and gates by hand, the
selection benchmark by hand, and the quick mode end to end on the tiny model (report structure, a gate
that stops the run, --force, resume, a changed design refused)."""
import json
import shutil

import numpy as np
import pytest

from attribution.labels import build_labels
from attribution.selection import Selection, TraceView
from common.config import SelectionArguments, TracesArguments
from data import synthetic
from common.stats import auroc, bootstrap_ci, cluster_bootstrap_ci, detectable_difference, sign_flip_p
from pipelines.study import compare, gates, pool, selection_quality


def test_oracle_labels_train_exactly_the_genuine_segments(tiny_tok):
    """Oracle labels, as the trainer gets them: the trained characters of every trace are its genuine
    segments, character for character, and every planted one is masked."""
    recs = synthetic.generate(12, seed=8)
    rows, _ = build_labels(tiny_tok, recs, None, SelectionArguments(selector="oracle"), TracesArguments())
    assert len(rows) == 12
    for rec, row in zip(recs, rows):
        parts = row["messages"][-1]["parts"]  # synthetic records have no completion after the trace
        assert "".join(p["text"] for p in parts) == rec.trace
        genuine = "".join(rec.trace[m["start"]:m["end"]] for m in rec.meta["segments"] if m["kind"] == "genuine")
        assert "".join(p["text"] for p in parts if p["train"]) == genuine
        assert row["selected"] == [m["kind"] == "genuine" for m in rec.meta["segments"]]


def test_statistics_by_hand():
    # 5 questions all +1: the exact sign-flip p is 2 patterns (all + or all -) of 32
    assert sign_flip_p([1, 1, 1, 1, 1]) == pytest.approx(2 / 32)
    assert sign_flip_p([1, -1, 0, 0]) == 1.0 and sign_flip_p([0, 0]) == 1.0
    # 3 of 4 patterns of (+2, -1) reach |sum| >= 1
    assert sign_flip_p([2, -1]) == pytest.approx(1.0)
    assert sign_flip_p([3, 1]) == pytest.approx(0.5)
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)
    # sd of (1, -1, 1, -1) is 2 / sqrt(3); (1.96 + 0.8416) * 1.1547 / 2 = 1.6175
    assert detectable_difference([1, -1, 1, -1]) == pytest.approx(1.6175, abs=1e-4)
    # AUROC = P(positive scores above negative), ties half: positives 3, 2 against negatives 1, 2 -> 3.5 / 4
    assert auroc([3, 1, 2, 2], [1, 0, 1, 0]) == 0.875 and auroc([1, 2], [1, 0]) == 0.0
    assert auroc([5, 5, 5], [1, 0, 1]) == 0.5 and auroc([1, 2], [1, 1]) is None
    # resampling whole groups: every resample of identical groups gives the same value
    assert cluster_bootstrap_ci([[1, 2], [1, 2]], lambda gs: float(np.mean(np.concatenate(gs)))) == (1.5, 1.5)
    assert cluster_bootstrap_ci([[1]], lambda gs: None) == (None, None)


def test_pool_and_compare_by_hand():
    a0 = {"q1": {"correct": 1.0, "tokens": 10.0, "at_limit": 0.0, "planted": 0.0},
          "q2": {"correct": 0.0, "tokens": 30.0, "at_limit": 1.0, "planted": 2.0}}
    a1 = {"q1": {"correct": 0.0, "tokens": 20.0, "at_limit": 0.0, "planted": 1.0},
          "q2": {"correct": 0.0, "tokens": 30.0, "at_limit": 1.0, "planted": 2.0},
          "q3": {"correct": 1.0, "tokens": 5.0, "at_limit": 0.0, "planted": 0.0}}  # one seed only: left out
    p = pool([a0, a1])
    assert p["ids"].tolist() == ["q1", "q2"] and p["correct"].tolist() == [0.5, 0.0]
    assert p["tokens"].tolist() == [15.0, 30.0] and p["planted"].tolist() == [0.5, 2.0]
    base = pool([{q: {**v, "correct": 0.0} for q, v in a0.items()}])
    c = compare(p, base)
    # differences 50 and 0 points: mean 25; one non-zero difference: p = 1
    assert c["diff"] == pytest.approx(25.0) and c["p"] == 1.0 and c["questions"] == 2
    # the resampled mean difference is 0, 25 or 50: its 5th percentile (the one-sided bound) is one of them
    assert c["lower"] in (0.0, 25.0) and c["ci"][0] <= c["lower"] <= c["diff"]
    # length: (15 + 30) / (10 + 30) - 1 over the shared questions
    assert c["length"] == pytest.approx(45 / 40 - 1) and c["length_ci"][0] <= c["length"] <= c["length_ci"][1]


def test_selection_quality_by_hand():
    # 2 prompt tokens, segments 0..3 of 2 tokens, segment 2 planted; masked: segments 1 and 2
    seg = np.array([-1, -1, 0, 0, 1, 1, 2, 2, 3, 3])
    view = TraceView(seg, 4, planted=np.array([False, False, True, False]))
    sel = Selection(np.array([False, False, True, True, False, False, False, False, True, True]))
    q = selection_quality({"r": view}, {"r": sel})
    assert q == {"precision": 0.5, "recall": 1.0, "trained": 0.5}
    nothing_masked = Selection(np.ones(10, dtype=bool))
    assert selection_quality({"r": view}, {"r": nothing_masked})["precision"] is None  # null, never NaN


def test_gates_by_hand():
    from common.config import StudyArguments

    study = StudyArguments()
    checked = gates(study, {"short": {"mean": 0.9, "traces": 4}, "verbose": {"mean": 0.4, "traces": 4}},
                    {"synthetic": {"greedy_acc": 81.25, "questions": 80}},
                    {"task_short": {"attributed": 10, "unconverged": ["a", "b"]},
                     "task_verbose": {"attributed": 10, "unconverged": ["c", "d", "e"]}})
    assert [(g["value"], g["passed"]) for g in checked] == [(0.9, True), (0.4, False), (0.2, True), (0.3, False),
                                                            (0.8125, True)]
    assert checked[3]["names"] == ["c", "d", "e"]


def _view(strength, consistency, planted, kinds):
    """A TraceView of 1-token segments whose strengths and consistencies are as given (by their token IG)."""
    from attribution.selection import trace_view

    k = len(strength)
    # one segment of two tokens each: |IG| = (s + c s, s - c s) / 2 * sqrt(2) gives strength s, consistency c
    ig = [x for s, c in zip(strength, consistency) for x in (s * (1 + c) / np.sqrt(2), -s * (1 - c) / np.sqrt(2))]
    row = {"token_segment": [j for j in range(k) for _ in range(2)], "token_ig": ig, "features": {}}
    spans = [[j, j + 1] for j in range(k)]
    return trace_view("r", "x" * k, None, spans, row, planted=planted), kinds


def test_selection_benchmark_by_hand():
    """Two traces of five segments (ends genuine): middle strengths and consistencies chosen so that low
    strength ranks every planted segment above every genuine one (AUROC 1); by consistency, planted 0.7,
    0.2, 0.9, 0.35 against genuine 0.3, 0.4 win 5 of 8 pairs."""
    from pipelines.study_selection import benchmark, counts, middle_segments

    planted = [False, True, False, True, False]
    kinds = ["genuine", "repeat", "genuine", "verify", "genuine"]
    c1, c2 = [0.5, 0.7, 0.3, 0.2, 0.9], [0.2, 0.9, 0.4, 0.35, 0.9]
    v1 = _view([0.4, 0.05, 0.3, 0.1, 0.15], c1, planted, kinds)
    v2 = _view([0.3, 0.1, 0.35, 0.05, 0.2], c2, planted, kinds)
    views = {"t1": v1[0], "t2": v2[0]}
    np.testing.assert_allclose(v1[0].scores.consistency, c1)
    np.testing.assert_allclose(v2[0].scores.norm_strength, [0.3, 0.1, 0.35, 0.05, 0.2])
    table = middle_segments(views, {"t1": kinds, "t2": kinds}, SelectionArguments())
    assert [t["planted"].tolist() for t in table] == [[True, False, True]] * 2
    result = benchmark(table, resamples=200)
    assert result["low strength (eq. 4)"]["auroc"] == 1.0 and result["low strength (eq. 4)"]["ci"] == [1.0, 1.0]
    assert result["high consistency (eq. 3)"]["auroc"] == 5 / 8
    assert result["low strength (eq. 4)"]["by_kind"]["repeat"]["auroc"] == 1.0
    assert set(result["low strength (eq. 4)"]["by_kind"]) == {"repeat", "verify"}
    assert "low confidence gain (Table 3)" not in result  # no feature, no row
    # consistency above beta 0.8: genuine 0.3, 0.4 (none); planted 0.7, 0.2, 0.9, 0.35 (one of four)
    assert counts(table, 0.8) == {"traces": 2, "segments": 6, "by_kind": {"genuine": 2, "repeat": 2, "verify": 2},
                                  "median_tokens": {"genuine": 2.0, "planted": 2.0},
                                  "above_beta": {"genuine": 0.0, "planted": 0.25}}


def test_quick_study_gate_stops_then_force_goes_on(tmp_path):
    """A failed gate (accuracy >= 1.01 cannot be met) stops the run before IG, naming the gate; --force goes
    on to the benchmark (--until selection) and the report says it was forced."""
    from pipelines.study import run

    args = ["--quick", "--run_dir", str(tmp_path), "--model_name_or_path", "tiny-qwen2", "--until", "selection",
            "--study_min_accuracy", "1.01"]
    with pytest.raises(SystemExit, match="validity gate failed: c. attribution model's greedy accuracy"):
        run(args)
    assert not (tmp_path / "ig_task_short.done").exists() and "**no**" in (tmp_path / "report.md").read_text()
    out = run(args + ["--force"])
    report = (tmp_path / "report.md").read_text()
    assert "forced past it" in report and "## Selection benchmark" in report and "## Students" not in report
    assert {"ig_task_short", "ig_base_short", "ig_task_verbose", "ig_task_reflective",
            "selection_task_reflective"} <= set(out["times"])
    assert not any(k.startswith("train_") and k != "train_attributor" for k in out["times"])


def test_quick_study_end_to_end_resumes_and_refuses_a_changed_design(tmp_path):
    from pipelines.study import ROWS, run

    args = ["--quick", "--run_dir", str(tmp_path), "--model_name_or_path", "tiny-qwen2"]
    out = run(args)
    report = (tmp_path / "report.md").read_text()
    order = ["## Validity gates", "## Selection benchmark", "## Sec. 3 as the paper measures it", "## Students", "## Profile"]
    assert [report.index(s) for s in order] == sorted(report.index(s) for s in order)  # gates first
    for section in ("### task, short", "### base, short", "### task, verbose", "### task, reflective",
                    "held-out clean reflective traces", "low strength (eq. 4)", "one-sided lower bound", "Oracle's room",
                    "Validity first: the full-CoT student", "tau* = ", "| restatement |"):
        assert section in report, section
    for row in ROWS:
        assert f"| {row.name} | 1 |" in report, row.name
    assert (tmp_path / "consistency.png").stat().st_size > 0
    assert {"data", "data_reflective", "train_attributor", "eval_attributor", "gate_probability_verbose",
            "ig_task_short", "selection_base_short", "tune", "sec3"} <= set(out["times"])
    assert len([k for k in out["times"] if k.startswith("train_") and k != "train_attributor"]) == len(ROWS)
    # a rerun reuses every stage (same times), a changed design is refused
    assert run(args)["times"] == out["times"]
    with pytest.raises(SystemExit, match="other settings"):
        run(args + ["--learning_rate", "1e-3"])
    assert json.loads((tmp_path / "study.json").read_text())["learning_rate"] == pytest.approx(2e-4)
    # a folder written before the reflective regime existed: its setting is recorded and its stages run
    design = json.loads((tmp_path / "study.json").read_text())
    (tmp_path / "study.json").write_text(json.dumps({k: v for k, v in design.items() if k != "study_n_reflective"}))
    new = {"data_reflective", "gate_probability_reflective", "ig_task_reflective", "selection_task_reflective"}
    for name in new:
        (tmp_path / f"{name}.done").unlink()
    shutil.rmtree(tmp_path / "attribution_task_reflective")
    again = run(args)["times"]
    assert {k for k in again if again[k] != out["times"][k]} == new
    assert "### task, reflective" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "study.json").read_text()) == design
