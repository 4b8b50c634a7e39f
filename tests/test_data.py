"""Record loading: field mappings, chat traces, and bad records that are named, never silently lost."""
import json

import numpy as np
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
    with pytest.raises(RecordError, match=r"line 2 \(id b\): field 'trace'"):
        load_records(path)
    recs, report = load_records(path, on_bad="skip")
    assert [r.id for r in recs] == ["a"]
    assert report.kept == 1 and sum(report.skipped.values()) == 3 and report.rows == 4
    assert report.skipped == {"missing or empty 'trace'": 1, "duplicate id": 1, "missing or empty 'answer'": 1}
    assert "1 (duplicate id)" in report.summary()
    assert sum(len(v) for v in report.skipped_ids.values()) == 3


GOOD = [{"id": f"g{i}", "question": f"What is {i}+1?", "trace": f"It is {i + 1}.\n\nWait, yes.", "answer": str(i + 1)}
        for i in range(5)]
# the bad record, at line 4 of each file, and what the loader must say about it
BAD = {
    "not a JSON object": (["just a string"], r"line 4: a str, not a JSON object", "not a JSON object"),
    "dict question": ({"id": "bad", "question": {"text": "q"}, "trace": "t", "answer": "1"},
                      r"line 4 \(id bad\): field 'question' is a dict, not text", "'question' is not text"),
    "list trace": ({"id": "bad", "question": "q", "trace": ["t"], "answer": "1"},
                   r"line 4 \(id bad\): field 'trace' is a list, not text", "'trace' is not text"),
    "missing answer": ({"id": "bad", "question": "q", "trace": "t"}, r"line 4 \(id bad\): field 'answer'",
                       "missing or empty 'answer'"),
    "empty trace": ({"id": "bad", "question": "q", "trace": " ", "answer": "1"}, r"line 4 \(id bad\): field 'trace'",
                    "missing or empty 'trace'"),
    "duplicate id": ({**GOOD[0]}, r"line 4 \(id g0\): duplicate id 'g0'", "duplicate id"),
}


def _with_bad(tmp_path, bad, suffix):
    import datasets

    rows = GOOD[:3] + [bad[0] if isinstance(bad, list) else bad] + GOOD[3:]
    path = tmp_path / f"t{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    return str(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
@pytest.mark.parametrize("case", list(BAD))
def test_bad_record_at_line_4_named_or_counted(tmp_path, case, suffix):
    bad, message, reason = BAD[case]
    if suffix == ".parquet" and case in ("not a JSON object", "dict question", "list trace"):
        pytest.skip("parquet columns have one type: such a row cannot be written")
    path = _with_bad(tmp_path, bad, suffix)
    where = message if suffix == ".jsonl" else message.replace("line 4", "record 3")  # files read whole: an index
    with pytest.raises(RecordError, match=where):
        load_records(path)
    recs, report = load_records(path, on_bad="skip")
    assert [r.id for r in recs] == [g["id"] for g in GOOD]  # the good ones, unchanged
    assert report.rows == 6 and report.kept == 5 and report.skipped == {reason: 1}
    assert report.kept + sum(report.skipped.values()) == report.rows


def test_malformed_and_non_utf8_lines(tmp_path):
    lines = [json.dumps(r) for r in GOOD]
    path = tmp_path / "t.jsonl"
    path.write_bytes(("\n".join(lines[:3] + ['{"id": "bad", "question": '] + lines[3:]) + "\n").encode())
    with pytest.raises(RecordError, match=r"t.jsonl line 4: not valid JSON"):
        load_records(str(path))
    recs, report = load_records(str(path), on_bad="skip")
    assert len(recs) == 5 and report.skipped == {"not valid JSON": 1} and report.rows == 6
    latin = json.dumps({"id": "lat", "question": "Caf\u00e9?", "trace": "t", "answer": "1"}, ensure_ascii=False)
    path.write_bytes(("\n".join(lines[:3]) + "\n").encode() + latin.encode("latin-1") + ("\n" + "\n".join(lines[3:])).encode())
    with pytest.raises(RecordError, match=r"line 4: not UTF-8 text \(byte 0xe9"):
        load_records(str(path))
    recs, report = load_records(str(path), on_bad="skip")
    assert len(recs) == 5 and report.skipped == {"not UTF-8": 1}
    whole = tmp_path / "t.json"
    whole.write_bytes(json.dumps(GOOD).encode()[:-1] + "\u00e9]".encode("latin-1"))
    with pytest.raises(ValueError, match="t.json: not UTF-8 text"):
        load_records(str(whole))


def test_numbers_stay_numbers_as_text(tmp_path):
    """AMC stores answers as 27.0: a number becomes its text (graded as a number), never a dict repr."""
    recs, _ = load_records(_write(tmp_path, [{"id": 7, "question": "q", "trace": "t", "answer": 27.0}]))
    assert recs[0].id == "7" and recs[0].answer == "27.0"


def test_cli_summaries_account_for_every_record(tmp_path):
    """`python -m attribution ig` and `labels --selector all` on 5 good records and a duplicate id at
    line 4, skipped: both summary.json files say 6 in, 5 attributed / trained, 1 skipped, by id."""
    from attribution.__main__ import main

    path = _with_bad(tmp_path, BAD["duplicate id"][0], ".jsonl")
    args = ["--config", "recipes/tiny/selective.yaml", "--traces", path, "--run_dir", str(tmp_path / "run"),
            "--traces_license", "apache-2.0", "--on_bad", "skip", "--ig_steps", "2"]
    main(["ig", *args])
    main(["labels", *args, "--selector", "all"])
    attr = json.loads((tmp_path / "run" / "attribution" / "summary.json").read_text())
    assert attr["records_in"] == 6 and attr["attributed"] == 5 and attr["skipped_at_load"] == {
        "duplicate id": [f"{path} line 4 (id g0)"]}
    labels = json.loads((tmp_path / "run" / "labels" / "all" / "summary.json").read_text())
    assert labels["records_in"] == 6 and labels["records_out"] == 5 and not labels["dropped"]
    assert labels["skipped_at_load"] == attr["skipped_at_load"]
    # the dataset card: hub metadata that load_dataset honours, and how the labels were made
    import datasets
    from huggingface_hub import DatasetCard

    folder = tmp_path / "run" / "labels" / "all"
    card = DatasetCard.load(folder / "README.md")
    assert card.data.license == "apache-2.0" and card.data.size_categories == ["n<1K"]
    assert [f["name"] for f in card.data.dataset_info["features"]][:3] == ["id", "input_ids", "attention_mask"]
    for fact in ("| records | 5 of 6 in (dropped: 0, skipped at load: 1) |", "| tokens trained | 100.0% |",
                 "IG `riemann_right` J = 2", "completeness gap | mean", "`all` {}", "labels --config"):
        assert fact in card.text, fact
    assert len(datasets.load_dataset(str(folder), split="train")) == 5
    with pytest.raises(RecordError, match=r"line 4 \(id g0\): duplicate id"):
        main(["labels", *args[:-4], "--selector", "all"])  # on_bad: raise names the record


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


def test_rebuilt_labels_load_fresh(tmp_path, tiny_tok):
    """A labels folder rebuilt in place, or another folder of the same name, loads its own rows by name
    (with a `configs` block in the card, datasets 4.x served the first folder's cached rows to both)."""
    import datasets

    from attribution.labels import build_labels
    from attribution.labels_dataset import save_labels
    from common.config import SelectionArguments, TracesArguments
    from data import synthetic

    rows, summary = build_labels(tiny_tok, synthetic.generate(3, seed=4), None, SelectionArguments(selector="all"),
                                 TracesArguments())
    for folder, n in ((tmp_path / "a" / "all", 2), (tmp_path / "b" / "all", 3), (tmp_path / "a" / "all", 1)):
        save_labels(rows[:n], summary, folder, made_by={"command": "test"})
        assert datasets.load_dataset(str(folder), split="train")["id"] == [r["id"] for r in rows[:n]]


def test_planted_counts_match_the_ground_truth():
    """The planted-kind detector finds exactly the segments the generator planted (50 traces), and
    counts a kind as often as a text repeats it."""
    from collections import Counter

    from data import synthetic

    for rec in synthetic.generate(50, seed=1):
        truth = Counter(m["kind"] for m in rec.meta["segments"])
        assert synthetic.planted_counts(rec.trace) == {k: truth[k] for k in synthetic.MARKERS}
    twice = "\n\nWait, " + synthetic.MARKERS["repeat"] + " 2 + 2 = 4.\n\nHowever, " + synthetic.MARKERS["repeat"] + " again"
    assert synthetic.planted_counts(twice) == {"repeat": 2, "verify": 0, "abandoned": 0, "restatement": 0}


def test_synthetic_planted_share_openers_and_disjoint_splits():
    """Planted shares vary from none to most of a trace; genuine and planted segments open with the same
    keywords; clean traces plant nothing; ``exclude`` keeps question sets disjoint."""
    from collections import Counter

    from data import synthetic

    recs = synthetic.generate(200, seed=0)
    shares = [synthetic.planted_share(r) for r in recs]
    assert min(shares) == 0 and max(shares) > 0.6 and 0.3 < np.mean(shares) < 0.55
    openers = {kind: Counter() for kind in ("genuine", "planted")}
    for r in recs:
        for m in r.meta["segments"][1:]:
            text = r.trace[m["start"]:m["end"]]
            openers["genuine" if m["kind"] == "genuine" else "planted"][text[2:].split(" ")[0]] += 1
    assert set(openers["genuine"]) == set(openers["planted"]) == {o.split(" ")[0] for o in synthetic.OPENERS}
    clean = synthetic.generate(20, seed=0, split="c", plant=False)
    assert all(m["kind"] == "genuine" for r in clean for m in r.meta["segments"])
    other = synthetic.generate(100, seed=0, split="eval", exclude={r.question for r in recs})
    assert not {r.question for r in other} & {r.question for r in recs} and len({r.question for r in other}) == 100
    spans = [[m["start"], m["end"]] for m in recs[1].meta["segments"]]
    assert synthetic.planted_mask(recs[1].meta, spans) == [m["kind"] != "genuine" for m in recs[1].meta["segments"]]
    assert synthetic.planted_mask(recs[1].meta, [[0, len(recs[1].trace)]]) is None and synthetic.planted_mask({}, spans) is None


def test_verbose_traces_keep_the_short_ones_ground_truth(smol_tok):
    """A verbose trace is its short twin with prose around each segment: the same question, answer, kinds,
    planted computations and markers; the prose holds no digit or marker; middle segments run to a median
    of >= 60 SmolLM2 tokens (short: ~20). ``tail`` becomes the completion."""
    import re

    from data import synthetic

    short = synthetic.generate(30, seed=5)
    verbose = synthetic.generate(30, seed=5, verbosity="verbose", tail="</think> \\boxed{{{answer}}}")
    middle = []
    for s, v in zip(short, verbose):
        assert (s.question, s.answer) == (v.question, v.answer) and v.completion == f"</think> \\boxed{{{v.answer}}}"
        assert [m["kind"] for m in s.meta["segments"]] == [m["kind"] for m in v.meta["segments"]]
        assert synthetic.planted_counts(v.trace) == synthetic.planted_counts(s.trace)
        for ms, mv in zip(s.meta["segments"], v.meta["segments"]):
            short_text, verbose_text = s.trace[ms["start"]:ms["end"]], v.trace[mv["start"]:mv["end"]]
            # every number of the short segment is in the verbose one, and no other
            assert re.findall(r"\d+", short_text) == re.findall(r"\d+", verbose_text)
        middle += [len(smol_tok(v.trace[m["start"]:m["end"]])["input_ids"]) for m in v.meta["segments"][1:-1]]
        assert "".join(v.trace[m["start"]:m["end"]] for m in v.meta["segments"]) == v.trace
    assert np.median(middle) >= 60
    for lead, follow in synthetic.PROSE.values():
        for text in lead + follow:
            assert not re.search(r"\d", text) and not any(m in text for m in synthetic.MARKERS.values())
    with pytest.raises(ValueError, match="verbosity"):
        synthetic.generate(1, verbosity="long")


def test_reflective_traces_catch_a_slip_in_each_genuine_step():
    """A reflective trace is its short twin whose genuine computations each state a wrong value, then the
    right one, inside the same segment: the split at keywords, the kinds, the planted segments and the
    answer are the short trace's."""
    import re

    from attribution.segments import split_segments
    from data import synthetic

    short = synthetic.generate(30, seed=5)
    reflective = synthetic.generate(30, seed=5, verbosity="reflective")
    slips = 0
    for s, r in zip(short, reflective):
        assert (s.question, s.answer) == (r.question, r.answer)
        assert [m["kind"] for m in s.meta["segments"]] == [m["kind"] for m in r.meta["segments"]]
        assert [[m["start"], m["end"]] for m in r.meta["segments"]] == [[g.start, g.end] for g in split_segments(r.trace)]
        for ms, mr in zip(s.meta["segments"], r.meta["segments"]):
            short_text, text = s.trace[ms["start"]:ms["end"]], r.trace[mr["start"]:mr["end"]]
            if synthetic.SLIP not in text:
                assert text == short_text
                continue
            slips += 1
            # "label: expr = wrong, no, that slipped: expr = right." where the short segment reads "label: expr = right."
            before, after = text.split(f", {synthetic.SLIP} ")
            head, wrong = before.rsplit(" = ", 1)
            assert ms["kind"] == "genuine" and short_text == f"{head} = {after.rsplit(' = ', 1)[1]}"
            assert head.endswith(after.rsplit(" = ", 1)[0]) and int(wrong) != int(re.findall(r"\d+", after)[-1])
        assert synthetic.planted_counts(r.trace) == synthetic.planted_counts(s.trace)
    # every genuine computation (not the setup or the answer line) carries its slip
    assert slips == sum(m["kind"] == "genuine" for s in short for m in s.meta["segments"][1:-1]) > 30


def test_study_trains_on_exactly_the_text_ig_scores(smol_tok):
    """With the IG suffix as the records' tail, a training text is the IG text plus EOS (validity gate a)."""
    from common.config import ANSWER_SUFFIX
    from data import synthetic
    from data.prompts import attribution_text, training_text

    smol_tok.chat_template = open("recipes/study/chatml.jinja").read()
    for rec in synthetic.generate(3, seed=2, tail=ANSWER_SUFFIX):
        ig = attribution_text(smol_tok, rec.question, rec.trace, rec.answer, ANSWER_SUFFIX)
        trained = training_text(smol_tok, rec.question, rec.trace, rec.completion)
        assert trained.text == ig.text + smol_tok.eos_token
