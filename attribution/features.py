"""Per-segment model features for the non-IG baselines (higher = more important).

- ``segment_perplexity``: how much removing the segment raises the perplexity of the rest of the trace.
- ``segment_entropy``: mean predictive entropy over the segment's tokens.
- ``confidence_gain``: the rise of the forced-answer log-prob when the segment is appended to the
  trace prefix before it. The paper estimates confidence from 32 sampled answers; this is the
  deterministic counterpart (one forward per prefix), the same target IG explains.
"""
from __future__ import annotations

import numpy as np
import torch

from common.config import IG_FEATURES


@torch.no_grad()
def _scored_tokens(model, tokenizer, text: str, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For tokens from char ``start`` on (by overlap, from one tokenization with offsets):
    their first chars, log p(token | prefix) and the predictive entropy at them."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], np.asarray(enc["offset_mapping"]).reshape(-1, 2)
    device = next(model.parameters()).device
    logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0, :-1].float()
    logp = torch.log_softmax(logits, -1)
    target = logp.gather(-1, torch.tensor(ids[1:], device=device).unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    keep = np.flatnonzero(offsets[1:, 1] > start) + 1  # token t is predicted at t - 1
    return offsets[keep, 0], target.cpu().numpy()[keep - 1], entropy.cpu().numpy()[keep - 1]


def segment_features(model, tokenizer, prompt: str, segment_texts: list[str], answer: str | None,
                     names, suffix: str) -> dict[str, np.ndarray]:
    """The requested features (``ig_features``), each a (K,) array over the trace's segments;
    ``suffix`` is the forced answer (``ig_answer_suffix``)."""
    unknown = set(names) - set(IG_FEATURES)
    if unknown:
        raise ValueError(f"unknown features {sorted(unknown)}; use {IG_FEATURES}")
    K, out, p = len(segment_texts), {}, len(prompt)

    def trace_ppl(texts: list[str]) -> float:
        _, lp, _ = _scored_tokens(model, tokenizer, prompt + "".join(texts), p)
        return float(np.exp(-lp.mean()))

    if "segment_perplexity" in names:
        base = trace_ppl(segment_texts)
        out["segment_perplexity"] = np.array(
            [trace_ppl(segment_texts[:k] + segment_texts[k + 1 :]) - base if K > 1 else 0.0 for k in range(K)])
    if "segment_entropy" in names:
        starts, _, ent = _scored_tokens(model, tokenizer, prompt + "".join(segment_texts), p)
        bounds = np.cumsum([p] + [len(t) for t in segment_texts])
        seg = np.searchsorted(bounds, starts, side="right") - 1  # first-char rule, as in alignment
        out["segment_entropy"] = np.array([ent[seg == k].mean() if np.any(seg == k) else 0.0 for k in range(K)])
    if "confidence_gain" in names:
        if not answer:
            raise ValueError("confidence_gain needs the gold answer")
        tail = suffix.format(answer=answer)

        def answer_logprob(texts: list[str]) -> float:
            head = prompt + "".join(texts)
            _, lp, _ = _scored_tokens(model, tokenizer, head + tail, len(head) + tail.rfind(answer))
            return float(lp.sum())  # the answer's tokens and what follows them in the suffix

        scores = [answer_logprob(segment_texts[:k]) for k in range(K + 1)]
        out["confidence_gain"] = np.diff(scores)
    return out
