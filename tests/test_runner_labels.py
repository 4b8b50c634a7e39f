"""Attribution runner (resume, per-record reasons) and the labels dataset (masks, pruning, truncation)."""
import json

import numpy as np
import pytest
from trl import ModelConfig

from attribution import runner
from attribution.alignment import align
from attribution.attributions import load_attributions
from attribution.labels import build_labels
from attribution.labels_dataset import IGNORE, save_labels
from attribution.segments import split_segments
from common.config import AttributionArguments, SelectionArguments, TracesArguments
from data import synthetic
from data.loaders import load_trace_records
from data.prompts import training_text


def _chat_row(rid, question, trace, answer=None):
    end = f"\n</think>\n\nSo the answer is \\boxed{{{answer}}}." if answer else ""  # no answer: cut off
    return {"question_id": rid, "question": question, "full_response": f"<｜User｜>{question}<｜Assistant｜><think>\n{trace}{end}"}


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    recs = synthetic.generate(6, seed=5)
    rows = [_chat_row(r.id, r.question, r.trace, r.answer) for r in recs]
    rows.append(_chat_row("cut-off", "q?", "x.\n\nWait, y"))
    rows.append(_chat_row("too-long", recs[0].question, recs[0].trace * 8, recs[0].answer))
    path = tmp_path_factory.mktemp("traces") / "t.json"
    path.write_text(json.dumps(rows))
    return str(path)


def _run(path, out, tok, model, **kw):
    """The IG stage on a chat-formatted trace file, as a recipe with these keys would run it."""
    traces = TracesArguments(traces=path, traces_chat=True)
    cfg = AttributionArguments(**{"ig_steps": 4, "ig_internal_batch": 4, "ig_max_length": 400, "attribution_dir": str(out), **kw})
    records, _ = load_trace_records(traces)
    return runner.run(traces, cfg, ModelConfig(model_name_or_path="tiny-qwen2"), records, model=model, tokenizer=tok)


def _labels(tok, recs, attrs, selector, mode="mask", max_length=None, **params):
    return build_labels(tok, recs, attrs, SelectionArguments(selector=selector, label_mode=mode, **params), TracesArguments(),
                        max_length)


def test_runner_reasons_and_resume(traces, tmp_path, tiny_tok, tiny_qwen2):
    full = _run(traces, tmp_path / "full", tiny_tok, tiny_qwen2)
    assert full["records"] == 8 and full["attributed"] == 6
    reasons = {why: ids for why, ids in full["skipped_ids"].items()}
    assert reasons.pop("answer missing (trace cut off before </think>)") == ["cut-off"]
    (why, ids), = reasons.items()
    assert why.startswith("over length (") and why.endswith("> ig_max_length 400)") and ids == ["too-long"]
    # kill after 2 records: a shard with 2 complete rows and a torn third line, then rerun
    rows = (tmp_path / "full" / "shards" / "rank0-of-1.jsonl").read_text().splitlines(keepends=True)
    part = tmp_path / "part"
    (part / "shards").mkdir(parents=True)
    (part / "shards" / "rank0-of-1.jsonl").write_text("".join(rows[:2]) + rows[2][: len(rows[2]) // 2])
    (part / "settings.json").write_text((tmp_path / "full" / "settings.json").read_text())
    resumed = _run(traces, part, tiny_tok, tiny_qwen2)
    a = [json.loads(x) for x in (tmp_path / "full" / "shards" / "rank0-of-1.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (part / "shards" / "rank0-of-1.jsonl").read_text().splitlines()]
    assert [r["id"] for r in b] == [r["id"] for r in a]  # nothing lost, nothing duplicated
    for x, y in zip(a, b):
        assert x["token_ig"] == y["token_ig"] and x["status"] == y["status"]
    assert resumed["attributed"] == full["attributed"]
    merged = load_attributions(part)
    assert list(merged) == [r["id"] for r in a] and merged["cut-off"]["status"] == "skipped"
    with pytest.raises(ValueError, match="other settings"):
        _run(traces, part, tiny_tok, tiny_qwen2, ig_steps=5)
    _run(traces, part, tiny_tok, tiny_qwen2, ig_internal_batch=1)  # how a run goes is not part of its settings


@pytest.fixture(scope="module")
def attributed(tmp_path_factory, tiny_tok, tiny_qwen2):
    recs = synthetic.generate(8, seed=9)
    path = synthetic.write_jsonl(recs, tmp_path_factory.mktemp("labels") / "t.jsonl")
    out = path.parent / "attr"
    runner.run(TracesArguments(traces=str(path)), AttributionArguments(ig_steps=6, attribution_dir=str(out)),
               ModelConfig(model_name_or_path="tiny-qwen2"), recs, model=tiny_qwen2, tokenizer=tiny_tok)
    return recs, load_attributions(out)


def test_mask_labels_follow_segments(attributed, tiny_tok):
    recs, attrs = attributed
    rows, summary = _labels(tiny_tok, recs, attrs, "paper")
    assert summary.records_out == len(recs) and 0 < summary.to_dict()["pct_tokens_selected"] < 100
    for rec, row in zip(recs, rows):
        pt = training_text(tiny_tok, rec.question, rec.trace)
        al = align(tiny_tok, pt, split_segments(rec.trace))
        assert row["input_ids"] == al.input_ids.tolist()  # the trainer sees exactly this tokenization
        labels = np.asarray(row["labels"])
        sel = np.asarray(row["selected"])
        expect = np.where(al.token_segment >= 0, sel[np.maximum(al.token_segment, 0)], al.token_segment == -2)
        assert ((labels != IGNORE) == expect).all()
        assert labels[-1] == tiny_tok.eos_token_id and (labels[al.token_segment == -1] == IGNORE).all()
        assert sel[0] and sel[-1]
        np.testing.assert_array_equal(labels[labels != IGNORE], np.asarray(row["input_ids"])[labels != IGNORE])


def test_prune_removes_unselected_text(attributed, tiny_tok):
    recs, attrs = attributed
    masked, _ = _labels(tiny_tok, recs, attrs, "paper", mode="mask")
    pruned, _ = _labels(tiny_tok, recs, attrs, "paper", mode="prune")
    some_removed = False
    for rec, m, p in zip(recs, masked, pruned):
        segs = split_segments(rec.trace)
        kept = "".join(s.text for s, keep in zip(segs, m["selected"]) if keep)
        some_removed |= kept != rec.trace
        assert tiny_tok.decode(p["input_ids"]) == training_text(tiny_tok, rec.question, kept).text
        n_prompt = len(tiny_tok(training_text(tiny_tok, rec.question, kept).prompt, add_special_tokens=False)["input_ids"])
        assert all(x == IGNORE for x in p["labels"][:n_prompt]) and all(x != IGNORE for x in p["labels"][n_prompt:])
    assert some_removed
    with pytest.raises(ValueError, match="cannot prune"):
        _labels(tiny_tok, recs, attrs, "high_abs_ig_tokens", mode="prune")


def test_token_level_selection_maps_by_characters(attributed, tiny_tok):
    recs, attrs = attributed
    rows, summary = _labels(tiny_tok, recs, attrs, "high_abs_ig_tokens")
    for rec, row in zip(recs, rows):
        a = attrs[rec.id]
        seg, ig = np.asarray(a["token_segment"]), np.abs(np.asarray(a["token_ig"]))
        inside = np.flatnonzero(seg >= 0)
        # by hand: the top 45% of trace tokens by |IG|, and every token of the first and last segments
        top = inside[np.argsort(-ig[inside], kind="stable")][: int(np.ceil(0.45 * len(inside)))]
        expect = set(top) | set(np.flatnonzero((seg == 0) | (seg == seg.max())))
        # same tokenizer and prompt: training trace tokens start where the attribution tokens do
        starts, end = np.asarray(a["token_start"]), a["trace_start"] + len(rec.trace)
        trained = {int(np.searchsorted(starts, o)) for o, x in zip(_offsets(tiny_tok, rec), row["labels"])
                   if x != IGNORE and o < end}
        assert len(trained ^ expect) <= 1 and (trained ^ expect) <= {inside[-1]}  # the last one may merge with the tail
    assert 45 < summary.to_dict()["pct_tokens_selected"] < 80


def _offsets(tok, rec):
    return [o for o, _ in tok(training_text(tok, rec.question, rec.trace).text, add_special_tokens=False,
                              return_offsets_mapping=True)["offset_mapping"]]


def test_labels_for_another_tokenizer_than_the_attribution_model(attributed, tiny_tok, qwen_tok):
    """Attribution with the tiny model's tokenizer, labels with the real Qwen2.5 vocabulary: the
    selection carries over by characters, so the trained trace text is the selected segments' text."""
    recs, attrs = attributed
    rows, _ = _labels(qwen_tok, recs, attrs, "paper")
    for rec, row in zip(recs, rows):
        pt = training_text(qwen_tok, rec.question, rec.trace)
        al = align(qwen_tok, pt, split_segments(rec.trace))
        assert row["input_ids"] == al.input_ids.tolist()
        trained = (np.asarray(row["labels"]) != IGNORE) & (al.token_segment >= 0)
        chosen = "".join(rec.trace[a:b] for (a, b), keep in zip(row["segment_char_spans"], row["selected"]) if keep)
        # up to the tokens that straddle a segment boundary (".\n\n" is one Qwen token): compare without spaces
        assert "".join(qwen_tok.decode(al.input_ids[trained]).split()) == "".join(chosen.split())
        assert not all(row["selected"]) or rec.id  # some traces mask segments (checked over the set below)
    assert any(not all(r["selected"]) for r in rows)


def test_chat_trace_trains_its_closing_and_answer(traces, tiny_tok):
    """The text after </think> is kept and always trained, whatever the selector masks."""
    from data.loaders import load_records

    recs, _ = load_records(traces, chat=True)
    ok = [r for r in recs if r.answer and r.id != "too-long"]
    rows, _ = build_labels(tiny_tok, ok, None, SelectionArguments(selector="first_correct_solution"), TracesArguments())
    for rec, row in zip(ok, rows):
        trained = tiny_tok.decode([x for x in row["labels"] if x != IGNORE])
        assert "</think>" in trained and f"\\boxed{{{rec.answer}}}" in trained and trained.endswith(tiny_tok.eos_token)


def test_think_tokens_are_single_special_tokens(tiny_tok):
    from common.modeling import load_tokenizer

    tok = load_tokenizer("tiny-qwen2", think_tokens=True)
    assert len(tok) == len(tiny_tok) + 2
    rec = synthetic.generate(1, seed=3)[0]
    text = training_text(tok, rec.question, rec.trace, "\n</think>\n\nSo 5.", think_prefix="<think>\n")
    ids = tok(text.text, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("</think>")) == 1 and ids.count(tok.convert_tokens_to_ids("<think>")) == 1
    assert text.prompt.endswith("assistant\n<think>\n")


def test_truncation_aligned_and_empty_records_dropped(attributed, tiny_tok):
    recs, attrs = attributed
    full, _ = _labels(tiny_tok, recs, attrs, "paper")
    n_prompt = min(row["labels"].index(next(x for x in row["labels"] if x != IGNORE)) for row in full)
    cut = n_prompt  # every record's prompt is at least this long: nothing trained survives
    rows, summary = _labels(tiny_tok, recs, attrs, "paper", max_length=cut)
    first = [r for r in full if next(i for i, x in enumerate(r["labels"]) if x != IGNORE) == n_prompt]
    assert summary.dropped["no trained token (after truncation to max_length)"] == len(recs) - len(rows)
    assert len(rows) == 0 and len(first) >= 1
    rows, summary = _labels(tiny_tok, recs, attrs, "paper", max_length=n_prompt + 5)
    assert summary.truncated == len(recs) and len(rows) >= 1
    by_id = {r["id"]: r for r in full}
    for r in rows:
        assert len(r["input_ids"]) == len(r["labels"]) == len(r["attention_mask"]) == n_prompt + 5
        assert r["labels"] == by_id[r["id"]]["labels"][: n_prompt + 5]


def test_labels_dataset_byte_identical(attributed, tiny_tok, tmp_path):
    import datasets

    recs, attrs = attributed
    for name in ("a", "b"):
        rows, summary = _labels(tiny_tok, recs, attrs, "random_segments")
        save_labels(rows, summary, tmp_path / name)
    shard = "data/train-00000-of-00001.parquet"
    assert (tmp_path / "a" / shard).read_bytes() == (tmp_path / "b" / shard).read_bytes()
    ds = datasets.load_dataset(str(tmp_path / "a"), split="train")  # loads by name, as any script would
    assert {"input_ids", "attention_mask", "labels", "selected", "strength", "consistency"} <= set(ds.column_names)


def test_report_plots_and_viewer(attributed, tiny_tok, tmp_path):
    import html
    import re

    from attribution.report import write_report

    recs, attrs = attributed
    rows, summary = _labels(tiny_tok, recs, attrs, "paper")
    save_labels(rows, summary, tmp_path / "labels")
    out = write_report(SelectionArguments(labels_dir=str(tmp_path / "labels")), None, recs)
    for name in ("cumulative.png", "strength_consistency.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    from attribution.report import write_viewer

    page = write_viewer({r.id: r for r in recs}, rows, attrs, tmp_path / "v.html", "t").read_text()
    for rec, row in zip(recs, rows):
        block = page.split(f"<h3>{rec.id}:", 1)[1].split('<div class="rec">', 1)[0]
        trace_html = block.split('<div class="trace">', 1)[1].rsplit("</div></div>", 1)[0]
        text = re.sub(r"<sup[^>]*>[^<]*</sup>", "", trace_html)  # planted-kind badges are not trace text
        assert html.unescape(re.sub(r"<[^>]+>", "", text)) == rec.trace  # every character, once, in order
        planted = [m["kind"] for m in rec.meta["segments"] if m["kind"] != "genuine"]
        assert trace_html.count('<sup class="kind">') == len(planted)
        assert trace_html.count('data-seg="') == len(row["selected"])
        assert trace_html.count('class="seg sel"') == sum(row["selected"])
        assert trace_html.count('title="IG ') > 0.8 * sum(1 for s in attrs[rec.id]["token_segment"] if s >= 0)


def test_feature_baselines_through_runner(tmp_path, tiny_tok, tiny_qwen2):
    recs = synthetic.generate(3, seed=13)
    path = synthetic.write_jsonl(recs, tmp_path / "t.jsonl")
    cfg = AttributionArguments(ig_steps=2, attribution_dir=str(tmp_path / "a"),
                               ig_features=["segment_entropy", "confidence_gain", "segment_perplexity"])
    runner.run(TracesArguments(traces=str(path)), cfg, ModelConfig(model_name_or_path="tiny-qwen2"), recs,
               model=tiny_qwen2, tokenizer=tiny_tok)
    attrs = load_attributions(tmp_path / "a")
    for selector in ("segment_entropy", "confidence_gain", "segment_perplexity"):
        rows, summary = _labels(tiny_tok, recs, attrs, selector, token_ratio=0.5)
        assert summary.records_out == 3
        for rec, row in zip(recs, rows):
            feature = attrs[rec.id]["features"][selector]
            assert len(feature) == len(row["selected"]) and row["selected"][0] and row["selected"][-1]
            if selector == "confidence_gain":  # the segments with a positive gain, and the ends
                assert row["selected"][1:-1] == [g > 0 for g in feature[1:-1]]
        if selector != "confidence_gain":  # the threshold-free ones fill token_ratio of the trace tokens
            assert summary.to_dict()["pct_tokens_selected"] >= 50


@pytest.mark.parametrize("selector", ["paper", "high_abs_ig_tokens"])
def test_portable_messages_rebuild_labels(attributed, tiny_tok, qwen_tok, selector, tmp_path):
    """The messages form carries the selection as text parts and axolotl's train_detail spans: the same
    tokenizer rebuilds the exact labels; another one trains the same text, up to boundary tokens."""
    from attribution.labels import relabel, relabel_dataset

    recs, attrs = attributed
    rows, summary = _labels(tiny_tok, recs, attrs, selector)
    for rec, row in zip(recs, rows):
        user, assistant = row["messages"]
        assert user["role"] == "user" and assistant["content"] == rec.trace + rec.completion
        assert "".join(p["text"] for p in assistant["parts"]) == assistant["content"]
        for d, p in zip(assistant["train_detail"], assistant["parts"]):  # inclusive ends, as axolotl reads them
            assert assistant["content"][d["begin_offset"] : d["end_offset"] + 1] == p["text"] and d["train"] == p["train"]
        again = relabel(tiny_tok, row["messages"])
        assert (again["input_ids"], again["labels"]) == (row["input_ids"], row["labels"])
        other = relabel(qwen_tok, row["messages"])
        trained = "".join(p["text"] for p in assistant["parts"] if p["train"]) + qwen_tok.eos_token
        decoded = qwen_tok.decode([x for x in other["labels"] if x != IGNORE])
        if selector == "paper":  # whole segments: the same text, up to the tokens straddling a boundary
            assert "".join(decoded.split()) == "".join(trained.split())
        else:  # sub-word runs: another vocabulary cuts their edges elsewhere; the trained share stays close
            assert abs(len(decoded) - len(trained)) < 0.15 * len(trained)
    save_labels(rows, summary, tmp_path / "tiny")
    s = relabel_dataset(qwen_tok, tmp_path / "tiny", tmp_path / "qwen")
    assert s.records_out == len(rows) and s.tokenizer["vocab_size"] == len(qwen_tok)
    from attribution.__main__ import main
    from attribution.labels_dataset import load_labels
    from common.modeling import load_tokenizer

    main(["relabel", "--config", "recipes/tiny/selective.yaml", "--from", str(tmp_path / "tiny"),
          "--labels_dir", str(tmp_path / "cli")])  # into the tiny recipe's tokenizer, as its model loads it
    recipe_tok = load_tokenizer("tiny-qwen2")
    assert list(load_labels(tmp_path / "cli")["labels"]) == [relabel(recipe_tok, r["messages"])["labels"] for r in rows]


def test_strength_weights_by_hand(attributed, tiny_tok, qwen_tok):
    """Soft selection: the labels are the paper's; a trained trace token weighs its segment's normalised
    strength over the mean of those of all trained trace tokens, the completion 1, the rest 0; the
    portable form carries the strengths, so another tokenizer gets weights of the same rule."""
    from attribution.labels import relabel

    recs, attrs = attributed
    hard, _ = _labels(tiny_tok, recs, attrs, "paper")
    soft, summary = _labels(tiny_tok, recs, attrs, "paper", label_weights="strength")
    assert summary.to_dict() == _labels(tiny_tok, recs, attrs, "paper")[1].to_dict()
    for rec, h, s in zip(recs, hard, soft):
        assert s["labels"] == h["labels"] and "label_weights" not in h
        al = align(tiny_tok, training_text(tiny_tok, rec.question, rec.trace), split_segments(rec.trace))
        trained = np.asarray(s["labels"]) != IGNORE
        in_trace = trained & (al.token_segment >= 0)
        strength = np.asarray(s["norm_strength"])
        per_token = strength[al.token_segment[in_trace]]
        expect = np.where(trained, 1.0, 0.0)
        expect[in_trace] = per_token / per_token.mean()
        np.testing.assert_allclose(s["label_weights"], expect, rtol=1e-6)
        assert np.mean(np.asarray(s["label_weights"])[trained]) == pytest.approx(1.0, rel=1e-5)
        assert relabel(tiny_tok, s["messages"])["label_weights"] == s["label_weights"]
        other = relabel(qwen_tok, s["messages"])
        w, lab = np.asarray(other["label_weights"]), np.asarray(other["labels"])
        assert (w[lab == IGNORE] == 0).all() and np.mean(w[lab != IGNORE]) == pytest.approx(1.0, rel=1e-5)
        # up to the other tokenizer's mean, its trace weights are the selected segments' strengths
        kept = strength[np.asarray(s["selected"])]
        values = np.unique(w[(lab != IGNORE) & (w != 1.0)])
        ratios = values[:, None] / values.max() - kept[None, :] / kept.max()
        assert len(values) > 1 and np.abs(ratios).min(axis=1).max() < 1e-5
    with pytest.raises(ValueError, match="segment-level selector"):
        _labels(tiny_tok, recs, attrs, "high_abs_ig_tokens", label_weights="strength")
    with pytest.raises(ValueError, match="segment-level selector"):
        _labels(tiny_tok, recs, None, "all", label_weights="strength")
    with pytest.raises(ValueError, match="use label_mode: mask"):
        SelectionArguments(label_weights="strength", label_mode="prune")
