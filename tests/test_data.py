"""Record loading: field mappings, chat traces, and bad records that are named, never silently lost."""
import json

import pytest

from data.loaders import last_boxed, load_records, parse_chat_response
from data.records import RecordError


def _write(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_field_mapping_limo_style(tmp_path):
    rows = [{"question": "1+1?", "solution": "It is 2.", "answer": 2}, {"question": "2+2?", "solution": "4", "answer": "4"}]
    recs, report = load_records(_write(tmp_path, rows), fields={"trace": "solution"})
    assert [r.trace for r in recs] == ["It is 2.", "4"]
    assert recs[0].answer == "2" and recs[0].id == "d-0" and recs[1].source == "d"
    assert report.kept == 2 and not report.skipped


def test_parquet_same_as_jsonl(tmp_path):
    import datasets

    rows = [{"id": f"r{i}", "question": f"q{i}", "trace": f"t{i}", "answer": str(i)} for i in range(3)]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    a, _ = load_records(str(tmp_path / "d.parquet"))
    b, _ = load_records(_write(tmp_path, rows))
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]


def test_bad_record_named_or_skipped_and_counted(tmp_path):
    rows = [{"id": "a", "question": "q", "trace": "t", "answer": "1"},
            {"id": "b", "question": "q", "trace": "  ", "answer": "1"},
            {"id": "a", "question": "q", "trace": "t", "answer": "1"},
            {"id": "c", "question": "q", "trace": "t"}]
    path = _write(tmp_path, rows)
    with pytest.raises(RecordError, match=r"record 1 \(id b\): field 'trace'"):
        load_records(path)
    recs, report = load_records(path, on_bad="skip")
    assert [r.id for r in recs] == ["a"]
    assert report.kept == 1 and sum(report.skipped.values()) == 3
    assert report.skipped == {"missing or empty 'trace'": 1, "duplicate id": 1, "missing or empty 'answer'": 1}
    assert "1 (duplicate id)" in report.summary()
    assert len(report.skipped_ids) == 3


def test_last_boxed_nested():
    assert last_boxed(r"so \boxed{1} then \boxed{\frac{a}{b}}.") == r"\frac{a}{b}"
    assert last_boxed(r"\boxed{\frac{1}{2") is None
    assert last_boxed("no box") is None


def test_parse_chat_response_split_and_truncation():
    full = "<｜User｜>Q?<｜Assistant｜><think>\nthinking\n\nWait, more.\n</think>\n\nSo **Answer:** 42"
    p = parse_chat_response(full)
    assert p["trace"] == "thinking\n\nWait, more." and p["answer"] == "42" and not p["truncated"]
    assert p["completion"] == "\n</think>\n\nSo **Answer:** 42" and full.endswith(p["trace"] + p["completion"])
    cut = parse_chat_response("<｜User｜>Q?<｜Assistant｜><think>\nthinking and then")
    assert cut["truncated"] and cut["answer"] is None and cut["trace"] == "thinking and then"
    with pytest.raises(RecordError, match="no '<think>'"):
        parse_chat_response("no tags here")


def test_real_r1_traces(r1_traces, r1_raw):
    assert len(r1_traces) == 500
    complete = [r for r in r1_traces if not r.meta["truncated"]]
    assert len(complete) == sum("</think>" in x["full_response"] for x in r1_raw) == 274
    for rec, raw in zip(r1_traces, r1_raw):
        assert "<think>" not in rec.trace and "</think>" not in rec.trace and "<｜" not in rec.trace
        assert rec.trace in raw["full_response"] and rec.question == raw["question"]
    assert sum(r.answer is not None for r in complete) >= 60  # boxed or "Answer:" lines
