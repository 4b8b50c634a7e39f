"""Per-segment model features for the non-IG baselines (higher = more important).

- ``segment_perplexity``: how much removing the segment raises the perplexity of the rest of the trace.
- ``segment_entropy``: mean predictive entropy over the segment's tokens.
- ``confidence_gain``: the rise of the answer confidence when the segment is appended to the trace
  prefix before it. Confidence is, by default, the forced-answer log-prob (one forward per prefix,
  the target IG explains); with ``samples`` = M > 0 it is the paper's estimate (Sec. 3.1): the share
  of M answers sampled at t = 0.6 after the forced prefix that state the gold answer.
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


def completes_answer(completion: str, answer: str) -> bool:
    """Whether text sampled after the forced "\\boxed{" closes the box on the gold answer (spaces aside)."""
    return "}" in completion and "".join(completion.split("}", 1)[0].split()) == "".join(answer.split())


@torch.no_grad()
def sample_continuations(model, ids: torch.Tensor, n_new: int, samples: int, seed: int,
                         temperature: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """``samples`` continuations of ``n_new`` tokens of ``ids`` (1, T) at ``temperature`` (top-p 1): the
    prompt is run once and its key/value cache shared by the samples, so M samples cost M short decodes,
    not M prefills. Returns the tokens (samples, n_new) and the log-prob each had when drawn."""
    out = model(input_ids=ids, use_cache=True)
    cache, logits = out.past_key_values, out.logits[:, -1].float().expand(samples, -1)
    cache.batch_repeat_interleave(samples)
    generator = torch.Generator(device=ids.device).manual_seed(seed)
    tokens, logps = [], []
    for step in range(n_new):
        logp = torch.log_softmax(logits / temperature, dim=-1)
        token = torch.multinomial(logp.exp(), 1, generator=generator)  # (samples, 1)
        tokens.append(token)
        logps.append(logp.gather(-1, token))
        if step + 1 < n_new:
            logits = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1].float()
    return torch.cat(tokens, dim=1), torch.cat(logps, dim=1)


def sampled_confidence(model, tokenizer, head: str, answer: str, samples: int, seed: int) -> float:
    """Share of ``samples`` completions of ``head`` (ending in the forced "\\boxed{") at t = 0.6 that
    state the gold answer (:func:`completes_answer`); a completion ends at its first EOS."""
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer(head, add_special_tokens=False)["input_ids"]], device=device)
    n_new = len(tokenizer(answer + "}", add_special_tokens=False)["input_ids"]) + 4
    rows, eos = sample_continuations(model, ids, n_new, samples, seed)[0].tolist(), tokenizer.eos_token_id
    texts = [tokenizer.decode(row[: row.index(eos)] if eos in row else row, skip_special_tokens=True) for row in rows]
    return float(np.mean([completes_answer(t, answer) for t in texts]))


def segment_token_stats(model, tokenizer, prompt: str, segment_texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(K,) mean NLL (log perplexity) and (K,) mean predictive entropy of each segment's tokens, in
    context, from one forward over prompt + trace; 0 for a segment no token starts in."""
    starts, logp, ent = _scored_tokens(model, tokenizer, prompt + "".join(segment_texts), len(prompt))
    bounds = np.cumsum([len(prompt)] + [len(t) for t in segment_texts])
    seg = np.searchsorted(bounds, starts, side="right") - 1  # first-char rule, as in alignment
    K = len(segment_texts)
    return (np.array([-logp[seg == k].mean() if np.any(seg == k) else 0.0 for k in range(K)]),
            np.array([ent[seg == k].mean() if np.any(seg == k) else 0.0 for k in range(K)]))


def segment_features(model, tokenizer, prompt: str, segment_texts: list[str], answer: str | None,
                     names, suffix: str, confidence_samples: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """The requested features (``ig_features``), each a (K,) array over the trace's segments;
    ``suffix`` is the forced answer (``ig_answer_suffix``); ``confidence_samples`` > 0 estimates the
    confidence of ``confidence_gain`` from that many sampled answers (seeded by ``seed``)."""
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
        out["segment_entropy"] = segment_token_stats(model, tokenizer, prompt, segment_texts)[1]
    if "confidence_gain" in names:
        if not answer:
            raise ValueError("confidence_gain needs the gold answer")
        tail = suffix.format(answer=answer)

        def confidence(texts: list[str]) -> float:
            head = prompt + "".join(texts)
            if confidence_samples:
                forced = tail[: tail.rfind(answer)]  # "</think> So, the final answer is \\boxed{"
                return sampled_confidence(model, tokenizer, head + forced, answer, confidence_samples, seed + len(texts))
            _, lp, _ = _scored_tokens(model, tokenizer, head + tail, len(head) + tail.rfind(answer))
            return float(lp.sum())  # the answer's tokens and what follows them in the suffix

        scores = [confidence(segment_texts[:k]) for k in range(K + 1)]
        out["confidence_gain"] = np.diff(scores)
    return out
