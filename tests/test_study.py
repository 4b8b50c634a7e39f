"""The study (python -m pipelines.study): ground-truth labels, its statistics by hand, and the quick
mode end to end on the tiny model (report structure, resume, a changed design refused)."""
import json

import numpy as np
import pytest

from attribution.labels import build_labels
from attribution.selection import Selection, TraceView
from common.config import SelectionArguments, TracesArguments
from data import synthetic
from common.stats import bootstrap_ci, detectable_difference, sign_flip_p
from pipelines.study import compare, pool, selection_quality


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


def test_selection_quality_by_hand():
    # 2 prompt tokens, segments 0..3 of 2 tokens, segment 2 planted; masked: segments 1 and 2
    seg = np.array([-1, -1, 0, 0, 1, 1, 2, 2, 3, 3])
    view = TraceView(seg, 4, planted=np.array([False, False, True, False]))
    sel = Selection(np.array([False, False, True, True, False, False, False, False, True, True]))
    q = selection_quality({"r": view}, {"r": sel})
    assert q == {"precision": 0.5, "recall": 1.0, "trained": 0.5}


def test_quick_study_end_to_end_resumes_and_refuses_a_changed_design(tmp_path):
    from pipelines.study import ROWS, run

    args = ["--quick", "--run_dir", str(tmp_path), "--model_name_or_path", "tiny-qwen2"]
    out = run(args)
    report = (tmp_path / "report.md").read_text()
    for section in ("## Design", "## Table 1 shape", "## Table 2 shape", "## Power", "## Selection against the ground truth",
                    "## Sec. 3: confidence gain", "## Figure", "## Profile", "95% CI", "at token limit"):
        assert section in report, section
    for row in ROWS:
        assert f"| {row.name} | 1 |" in report, row.name
    assert (tmp_path / "study.png").stat().st_size > 0
    # the oracle masks exactly the planted tokens under both attributors
    assert report.count("| oracle | ") == 3 and "| 100% | 100% |" in report
    assert {"data", "train_attributor", "eval_attributor", "ig_task", "ig_base", "confidence"} <= set(out["times"])
    assert len([k for k in out["times"] if k.startswith("train_") and k != "train_attributor"]) == len(ROWS)
    # a rerun reuses every stage (same times), a changed design is refused
    assert run(args)["times"] == out["times"]
    with pytest.raises(SystemExit, match="other settings"):
        run(args + ["--learning_rate", "1e-3"])
    assert json.loads((tmp_path / "study.json").read_text())["learning_rate"] == pytest.approx(2e-4)
