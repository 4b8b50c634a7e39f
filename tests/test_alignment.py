"""Exact token alignment on real vocabularies (Qwen2.5, SmolLM2) and the 500 real R1 traces."""
import numpy as np
import pytest

from attribution.alignment import PROMPT, TAIL, align
from attribution.segments import split_segments
from common.config import ANSWER_SUFFIX
from data.prompts import attribution_text, load_template, training_text
from common import assets
from tests.conftest import shared_path


def check_alignment(tok, text, segs):
    al = align(tok, text, segs)
    ts, off = al.token_segment, al.offsets
    # every token has exactly one part and parts appear in order: prompt, segments 0..K-1, tail
    assert np.all(np.diff(np.where(ts == TAIL, 10**9, ts)) >= 0)
    assert (ts == PROMPT).sum() + (ts >= 0).sum() + (ts == TAIL).sum() == len(ts)
    # token counts add up to one tokenization of the whole text
    assert len(ts) == len(tok(text.text, add_special_tokens=False)["input_ids"])
    for k, seg in enumerate(segs):
        idx = np.flatnonzero(ts == k)
        if len(idx) == 0:  # a segment swallowed by a straddling token must be tiny
            assert len(seg.text) <= 8, seg.text
            continue
        a, b = text.trace_start + seg.start, text.trace_start + seg.end
        lo, hi = off[idx[0], 0], off[idx[-1], 1]
        assert a <= lo and lo < b and hi > lo
        # uncovered head: only the tail of the previous segment's last token reaches into it
        if lo > a:
            assert idx[0] > 0 and off[idx[0] - 1, 0] < a and off[idx[0] - 1, 1] >= lo
        # overhang: only its own last token reaches into the next segment
        if hi > b:
            assert off[idx[-1], 0] < b
        decoded = tok.decode(al.input_ids[idx])
        assert decoded == text.text[lo:hi] or "\ufffd" in decoded  # split multi-byte chars decode lossy
    return al


@pytest.mark.parametrize("which", ["qwen", "smol"])
def test_alignment_all_real_traces(which, r1_traces, qwen_tok, smol_tok):
    tok = qwen_tok if which == "qwen" else smol_tok
    n_tokens = 0
    for rec in r1_traces:
        segs = split_segments(rec.trace)
        al = check_alignment(tok, training_text(tok, rec.question, rec.trace), segs)
        n_tokens += len(al.trace_positions)
    assert n_tokens > 500 * 300


def test_boundary_merge_keeps_first_char_rule(qwen_tok):
    # Qwen merges ".\n\n" into one token: it starts in segment 0, so it belongs there
    trace = "So it is 5.\n\nWait, no."
    text = training_text(qwen_tok, "q", trace)
    al = check_alignment(qwen_tok, text, split_segments(trace))
    toks = qwen_tok.convert_ids_to_tokens(al.input_ids[al.token_segment == 0].tolist())
    assert toks[-1] == ".ĊĊ" and qwen_tok.convert_ids_to_tokens(al.input_ids[al.token_segment == 1].tolist())[0] == "Wait"
    # re-tokenizing the prefix separately would drift: the naive count differs from the aligned one
    naive = len(qwen_tok(text.text[: text.trace_start + 11], add_special_tokens=False)["input_ids"])
    assert naive != int((al.token_segment <= 0).sum())


def test_answer_positions(tiny_tok):
    text = attribution_text(tiny_tok, "2+3?", "It is 5.\n\nWait, yes 5.", "5", ANSWER_SUFFIX)
    al = align(tiny_tok, text, split_segments("It is 5.\n\nWait, yes 5."))
    assert tiny_tok.decode(al.input_ids[al.answer_positions]).strip() == "5"
    assert np.all(al.token_segment[al.answer_positions] == TAIL)


def test_r1_template_single_bos():
    """Rendering the R1-Distill template writes BOS; tokenizing with special tokens would add a second."""
    from tokenizers import processors

    tok = assets.qwen25_tokenizer(extra_specials=assets.R1_SPECIALS)
    tok.chat_template = load_template(shared_path("templates", "r1_distill_qwen_chat_template.jinja"))
    tok.bos_token, tok.eos_token = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
    bos = tok.bos_token_id
    # like R1-Distill's tokenizer (add_bos_token=True): a post-processor that prepends BOS
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, bos)])
    text = training_text(tok, "What is 1+1?", "1+1 = 2.\n\nWait, yes.")
    assert text.prompt.endswith("<｜Assistant｜><think>\n") and text.text.endswith(tok.eos_token)
    naive = tok(text.text)["input_ids"]
    assert naive[:2] == [bos, bos]  # the bug this pipeline avoids
    al = align(tok, text, split_segments("1+1 = 2.\n\nWait, yes."))
    assert al.input_ids[0] == bos and (al.input_ids == bos).sum() == 1
    assert al.input_ids[-1] == tok.eos_token_id
