"""Segmentation on keywords: exact reconstruction, keyword opens its segment, keyword sets."""
import pytest

from attribution.segments import split_segments
from common.config import KEYWORD_SETS
from data import synthetic

TRACE = "Start here.\n\nWait, check.\n\nHmm, odd.\n\nButter is not a keyword.\n\nBut wait, again.\n\nAnother try."


def test_paper_split_and_join():
    segs = split_segments(TRACE)
    assert "".join(s.text for s in segs) == TRACE
    assert [s.keyword for s in segs] == [None, "Wait", "But wait", "Another"]
    assert segs[1].text == "\n\nWait, check.\n\nHmm, odd.\n\nButter is not a keyword."
    assert all(TRACE[s.start:s.end] == s.text for s in segs)


def test_fine_split_adds_hmm_but_not_butter():
    segs = split_segments(TRACE, "fine")
    assert [s.keyword for s in segs] == [None, "Wait", "Hmm", "But wait", "Another"]
    assert set(KEYWORD_SETS["paper"]) < set(KEYWORD_SETS["fine"])


def test_user_list_and_errors():
    segs = split_segments("a\n\nSo b\n\nso c", ["\n\nSo"])
    assert [s.text for s in segs] == ["a", "\n\nSo b\n\nso c"]
    with pytest.raises(ValueError, match="unknown keyword set"):
        split_segments("x", "nope")


def test_leading_keyword_no_empty_segment():
    segs = split_segments("\n\nWait, first.\n\nWait, second.")
    assert [s.text for s in segs] == ["\n\nWait, first.", "\n\nWait, second."]


def test_synthetic_ground_truth_matches_split():
    for rec in synthetic.generate(50, seed=3):
        segs = split_segments(rec.trace)
        assert [(s.start, s.end) for s in segs] == [(m["start"], m["end"]) for m in rec.meta["segments"]]
        kinds = [m["kind"] for m in rec.meta["segments"]]
        assert kinds[0] == kinds[-1] == "genuine" and "\\boxed{" + rec.answer + "}" in segs[-1].text
    assert synthetic.generate(5, seed=3) == synthetic.generate(5, seed=3)
