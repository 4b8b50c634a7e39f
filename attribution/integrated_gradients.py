"""Integrated gradients on input embeddings, target = summed log-prob of the gold answer (Sec. 3.1).

IG_t = sum_h (x_th - x'_th) * sum_j w_j dF/dx_th (x' + a_j (x - x'))
(paper eq. 2: a_j = j/J, j = 1..J, w_j = 1/J, the rule ``riemann_right``)

Lean by construction: parameters get no gradient, only the interpolated embeddings do; logits are
computed only at the positions that predict answer tokens (never a length x vocab matrix); the
forward stops at the last answer token; the tokens before the first moving one (the prompt, on the
trace-only path) run once and their keys/values serve every point; alpha points run in batches;
each point is kept only as its (T,) products sum_h (x - x')_th dF/dx_th, in fp32 whatever the
model's dtype. Every result carries its completeness gap, so users see whether the number of
points was enough.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from common.config import IG_RULES


def integration_points(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Alphas in [0, 1] and their weights for a quadrature rule with ``steps`` points."""
    if steps < 1 or (rule in ("riemann_linspace", "riemann_trapezoid") and steps < 2):
        raise ValueError(f"rule {rule!r} needs more points than {steps}")
    if rule == "riemann_right":  # eq. 2: a_j = j/J, j = 1..J, weights 1/J
        return np.arange(1, steps + 1) / steps, np.full(steps, 1.0 / steps)
    if rule == "riemann_linspace":  # the released code: linspace(0, 1, J), weights 1/J
        return np.linspace(0.0, 1.0, steps), np.full(steps, 1.0 / steps)
    if rule == "riemann_midpoint":
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    if rule == "riemann_trapezoid":  # exact trapezoid: weights sum to 1 (Captum's sum to (J-1)/J)
        w = np.full(steps, 1.0 / (steps - 1))
        w[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), w
    if rule == "gauss_legendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return (x + 1) / 2, w / 2
    raise ValueError(f"unknown integration rule {rule!r}; use one of {IG_RULES}")


@dataclass
class IGResult:
    token_ig: np.ndarray  # (T,) float32, per-token attribution (0 where the baseline equals the input)
    f_input: float  # F(x): summed log-prob of the answer tokens
    f_baseline: float  # F(x')
    rule: str
    steps: int

    @property
    def completeness_gap(self) -> float:
        """|sum_t IG_t - (F(x) - F(x'))| / |F(x) - F(x')|: 0 for an exact integral."""
        delta = self.f_input - self.f_baseline
        return abs(float(self.token_ig.sum(dtype=np.float64)) - delta) / max(abs(delta), 1e-12)


@contextmanager
def _frozen(model: torch.nn.Module, checkpointing: bool):
    """Freeze parameters (gradients only w.r.t. embeddings) and optionally checkpoint layers."""
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    for p in model.parameters():
        p.requires_grad_(False)
    if checkpointing:
        # HF checkpoints only in train mode; these decoders have no dropout at inference settings
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    else:
        model.eval()
    try:
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        if checkpointing:
            model.gradient_checkpointing_disable()
        model.train(was_training)


@dataclass
class PathSamples:
    """F and the per-token products p_t(a) = sum_h (x - x')_th dF/dx_th at points a of the straight path.

    sum_t p_t(a) = dF/da, so any quadrature of the rows is an IG estimate (IG_t = integral of p_t).
    """

    f: np.ndarray  # (n,) F(x' + a (x - x')) at the requested alphas
    products: np.ndarray  # (n, T) float32, zero where the baseline equals the input
    f_input: float  # F(x)
    f_baseline: float  # F(x')


def _answer_logprob(model, embeds: torch.Tensor, answer_ids: torch.Tensor, predict_at: torch.Tensor,
                    prefix=None) -> torch.Tensor:
    """F for each row of ``embeds`` (B, T, H): sum of log p(answer token) at the predicting positions
    (indices into ``embeds``), after the tokens whose key/value cache is ``prefix`` (or none)."""
    cache = None
    if prefix is not None:
        cache = copy.deepcopy(prefix)  # the forward appends to it
        if embeds.shape[0] > 1:
            cache.batch_repeat_interleave(embeds.shape[0])
    logits = model(inputs_embeds=embeds, logits_to_keep=predict_at, past_key_values=cache,
                   use_cache=cache is not None).logits  # (B, A, V)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, answer_ids.expand(logp.shape[0], -1).unsqueeze(-1)).squeeze(-1).sum(-1)


def path_samples(
    model,
    input_ids,
    answer_positions,
    alphas,
    baseline_mask=None,
    baseline_id: int | None = None,
    internal_batch: int = 1,
    gradient_checkpointing: bool = False,
) -> PathSamples:
    """One forward + backward per alpha (``internal_batch`` alphas per pass), plus F at both ends.

    ``baseline_mask`` (T,) marks the positions that move to the baseline (the paper: all; our
    default upstream: the trace only); ``baseline_id`` is the token whose embedding is the baseline
    (the pad token), or None for zeros.
    """
    ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
    answer_positions = np.asarray(answer_positions, dtype=np.int64)
    if answer_positions.size == 0 or answer_positions.min() < 1:
        raise ValueError("answer_positions must be non-empty and after the first token")
    T = int(answer_positions.max()) + 1  # tokens after the last answer token cannot affect F
    ids = ids[:T]
    mask = torch.ones(T, dtype=torch.bool) if baseline_mask is None else torch.as_tensor(np.asarray(baseline_mask)[:T])
    device = next(model.parameters()).device
    emb_layer = model.get_input_embeddings()
    answer_ids = ids[answer_positions].to(device).unsqueeze(0)
    # tokens before the first moving one are the same at every point (causal attention): run them once
    first = int(mask.int().argmax()) if mask.any() and not gradient_checkpointing else 0
    predict_at = torch.as_tensor(answer_positions - 1 - first, device=device)
    if predict_at.min() < 0:
        raise ValueError("answer tokens must come after the tokens that move to the baseline")
    alphas = np.asarray(alphas, dtype=np.float64)
    f = np.zeros(len(alphas))
    products = np.zeros((len(alphas), len(input_ids)), dtype=np.float32)

    with _frozen(model, gradient_checkpointing):
        with torch.no_grad():
            # detached: with checkpointing on, HF may hook the embeddings to require grad
            x = emb_layer(ids.to(device).unsqueeze(0))[0].detach()  # (T, H), model dtype
            base = torch.zeros_like(x[0]) if baseline_id is None else emb_layer(torch.tensor([baseline_id], device=device))[0]
            x_base = torch.where(mask.to(device).unsqueeze(-1), base.detach().expand_as(x), x)
            prefix = model(inputs_embeds=x[:first].unsqueeze(0), use_cache=True).past_key_values if first else None
            x, x_base = x[first:], x_base[first:]
            diff = (x - x_base).float()
        for lo in range(0, len(alphas), internal_batch):
            a = torch.as_tensor(alphas[lo : lo + internal_batch], device=device, dtype=torch.float32)
            path = (x_base.float().unsqueeze(0) + a.view(-1, 1, 1) * diff.unsqueeze(0)).to(x.dtype)
            path.requires_grad_(True)
            f_batch = _answer_logprob(model, path, answer_ids, predict_at, prefix)  # (b,)
            (grad,) = torch.autograd.grad(f_batch.sum(), path)  # rows are independent: row j is dF(a_j)/dx
            products[lo : lo + len(a), first:T] = (grad.float() * diff).sum(-1).cpu().numpy()
            f[lo : lo + len(a)] = f_batch.detach().float().cpu().numpy()
        if alphas.size and alphas[0] == 0.0 and alphas[-1] == 1.0:
            f_base, f_input = float(f[0]), float(f[-1])
        else:  # F at both ends, for the completeness gap
            with torch.no_grad():
                ends = torch.stack([x_base, x])
                f_base, f_input = _answer_logprob(model, ends, answer_ids, predict_at, prefix).float().tolist()
    return PathSamples(f, products, f_input, f_base)


def integrated_gradients(
    model,
    input_ids,
    answer_positions,
    baseline_mask=None,
    baseline_id: int | None = None,
    *,
    rule: str,
    steps: int,
    internal_batch: int = 1,
    gradient_checkpointing: bool = False,
) -> IGResult:
    """Per-token IG of F = sum_a log p(answer_a | prefix) w.r.t. the input embeddings (see path_samples)."""
    alphas, weights = integration_points(rule, steps)
    s = path_samples(model, input_ids, answer_positions, alphas, baseline_mask, baseline_id, internal_batch,
                     gradient_checkpointing)
    token_ig = (weights.astype(np.float64) @ s.products).astype(np.float32)
    return IGResult(token_ig, s.f_input, s.f_baseline, rule, steps)
