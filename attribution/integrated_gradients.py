"""Integrated gradients on input embeddings, target = summed log-prob of the gold answer (Sec. 3.1).

IG_t = sum_h (x_th - x'_th) * sum_j w_j dF/dx_th (x' + a_j (x - x'))
(paper eq. 2: a_j = j/J, j = 1..J, w_j = 1/J, the rule ``riemann_right``)

Lean by construction: parameters get no gradient, only the interpolated embeddings do; logits are
computed only at the positions that predict answer tokens (never a length x vocab matrix); the
forward stops at the last answer token; the tokens before the first moving one (the prompt, on the
trace-only path) run once and their keys/values serve every point; alpha points run in batches;
each point is kept only as its (T,) products sum_h (x - x')_th dF/dx_th, in fp32 whatever the
model's dtype. Every result carries its completeness gap, so users see whether the number of
points was enough; ``steps="auto"`` adds points per trace until the integral has converged.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from common.config import AUTO_RULES, IG_RULES

AUTO_START = 4  # intervals of auto's first level; it doubles them: 4, 8, 16, ... (two levels before a verdict)


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
        return np.arange(steps) / (steps - 1), w  # j/J exactly, so that a doubled grid holds these points bit for bit
    if rule == "simpson":  # composite Simpson on j/J (J even): weights 1, 4, 2, ..., 4, 1 times 1/(3J)
        if steps < 3 or steps % 2 == 0:
            raise ValueError(f"rule 'simpson' needs an odd number of points >= 3, not {steps}")
        w = np.ones(steps)
        w[1:-1:2], w[2:-1:2] = 4, 2
        return np.arange(steps) / (steps - 1), w / (3 * (steps - 1))
    if rule == "graded_trapezoid":
        # the trapezoid rule in u = sqrt(a): int_0^1 p(a) da = int_0^1 p(u^2) 2u du, points (j/J)^2, j = 1..J
        # (the u = 0 end weighs 0): spacing 1/J^2 next to the baseline, 2/J next to the input
        u = np.arange(1, steps + 1) / steps
        w = 2 * u / steps
        w[-1] /= 2
        return u**2, w
    if rule == "gauss_legendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return (x + 1) / 2, w / 2
    raise ValueError(f"unknown integration rule {rule!r}; use one of {IG_RULES}")


def auto_levels(rule: str, max_steps: int) -> list[int]:
    """The point counts ``steps: auto`` tries in turn: intervals doubled from AUTO_START, each level's points
    among the next level's (so no gradient is computed twice), at most ``max_steps`` points."""
    if rule not in AUTO_RULES:
        raise ValueError(f"ig_steps: auto needs a rule whose points nest when doubled, one of {AUTO_RULES}; "
                         f"{rule!r} is not")
    extra = int(rule in ("riemann_trapezoid", "simpson"))  # J intervals have J + 1 points
    levels, m = [], AUTO_START
    while m + extra <= max_steps:
        levels.append(m + extra)
        m *= 2
    if len(levels) < 2:
        raise ValueError(f"ig_max_steps {max_steps} allows fewer than two levels of {rule} (needs >= {2 * AUTO_START + extra})")
    return levels


@dataclass
class IGResult:
    token_ig: np.ndarray  # (T,) float32, per-token attribution (0 where the baseline equals the input)
    f_input: float  # F(x): summed log-prob of the answer tokens
    f_baseline: float  # F(x')
    rule: str
    steps: int  # points with a gradient (the last level's, for auto)
    converged: bool  # gap <= tolerance and, for auto, token IG moved <= tolerance at the last doubling
    change: float | None = None  # auto: ||IG_J - IG_J/2||_1 / ||IG_J||_1 at the last doubling

    @property
    def completeness_gap(self) -> float:
        """|sum_t IG_t - (F(x) - F(x'))| / |F(x) - F(x')|: 0 for an exact integral."""
        return _gap(self.token_ig, self.f_input, self.f_baseline)


def _gap(ig: np.ndarray, f_input: float, f_baseline: float) -> float:
    delta = f_input - f_baseline
    return abs(float(ig.sum(dtype=np.float64)) - delta) / max(abs(delta), 1e-12)


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


class _Path:
    """One trace's straight path from the baseline x' to the input x, set up once (embeddings, the
    cached prefix); ``sample`` evaluates F and the products at any alphas. Opened by ``open_path``."""

    def __init__(self, model, input_ids, answer_positions, baseline_mask, baseline_id, checkpointing: bool):
        ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
        answer_positions = np.asarray(answer_positions, dtype=np.int64)
        if answer_positions.size == 0 or answer_positions.min() < 1:
            raise ValueError("answer_positions must be non-empty and after the first token")
        T = int(answer_positions.max()) + 1  # tokens after the last answer token cannot affect F
        ids = ids[:T]
        mask = torch.ones(T, dtype=torch.bool) if baseline_mask is None else torch.as_tensor(np.asarray(baseline_mask)[:T])
        device = next(model.parameters()).device
        emb_layer = model.get_input_embeddings()
        self.model, self.n_tokens, self.T = model, len(input_ids), T
        self.answer_ids = ids[answer_positions].to(device).unsqueeze(0)
        # tokens before the first moving one are the same at every point (causal attention): run them once
        self.first = int(mask.int().argmax()) if mask.any() and not checkpointing else 0
        self.predict_at = torch.as_tensor(answer_positions - 1 - self.first, device=device)
        if self.predict_at.min() < 0:
            raise ValueError("answer tokens must come after the tokens that move to the baseline")
        with torch.no_grad():
            # detached: with checkpointing on, HF may hook the embeddings to require grad
            x = emb_layer(ids.to(device).unsqueeze(0))[0].detach()  # (T, H), model dtype
            base = torch.zeros_like(x[0]) if baseline_id is None else emb_layer(torch.tensor([baseline_id], device=device))[0]
            x_base = torch.where(mask.to(device).unsqueeze(-1), base.detach().expand_as(x), x)
            first = self.first
            self.prefix = model(inputs_embeds=x[:first].unsqueeze(0), use_cache=True).past_key_values if first else None
            self.x, self.x_base = x[first:], x_base[first:]
            self.diff = (self.x - self.x_base).float()
        self._ends: dict[float, float] = {}  # F at an end computed without a gradient, kept for later levels

    def sample(self, alphas: np.ndarray, internal_batch: int) -> tuple[np.ndarray, np.ndarray]:
        """F (n,) and the products (n, n_tokens) at ``alphas``: one forward + backward per ``internal_batch``."""
        f = np.zeros(len(alphas))
        products = np.zeros((len(alphas), self.n_tokens), dtype=np.float32)
        for lo in range(0, len(alphas), internal_batch):
            a = torch.as_tensor(alphas[lo : lo + internal_batch], device=self.x.device, dtype=torch.float32)
            path = (self.x_base.float().unsqueeze(0) + a.view(-1, 1, 1) * self.diff.unsqueeze(0)).to(self.x.dtype)
            path.requires_grad_(True)
            f_batch = _answer_logprob(self.model, path, self.answer_ids, self.predict_at, self.prefix)  # (b,)
            (grad,) = torch.autograd.grad(f_batch.sum(), path)  # rows are independent: row j is dF(a_j)/dx
            products[lo : lo + len(a), self.first : self.T] = (grad.float() * self.diff).sum(-1).cpu().numpy()
            f[lo : lo + len(a)] = f_batch.detach().float().cpu().numpy()
        return f, products

    def ends(self, known: dict[float, float]) -> tuple[float, float]:
        """F(x'), F(x): taken from ``known`` (alpha -> F) where sampled, the rest in one forward without
        gradient, made once per path."""
        known = {**self._ends, **known}
        missing = [a for a in (0.0, 1.0) if a not in known]
        if missing:
            with torch.no_grad():
                rows = torch.stack([self.x_base if a == 0.0 else self.x for a in missing])
                f = _answer_logprob(self.model, rows, self.answer_ids, self.predict_at, self.prefix).float().tolist()
            self._ends.update(zip(missing, f))
            known.update(self._ends)
        return known[0.0], known[1.0]


@contextmanager
def open_path(model, input_ids, answer_positions, baseline_mask=None, baseline_id: int | None = None,
              gradient_checkpointing: bool = False):
    """The straight path of one trace, its model frozen while it is open (see ``path_samples`` for the arguments)."""
    with _frozen(model, gradient_checkpointing):
        yield _Path(model, input_ids, answer_positions, baseline_mask, baseline_id, gradient_checkpointing)


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
    alphas = np.asarray(alphas, dtype=np.float64)
    with open_path(model, input_ids, answer_positions, baseline_mask, baseline_id, gradient_checkpointing) as path:
        f, products = path.sample(alphas, internal_batch)
        f_base, f_input = path.ends(dict(zip(alphas.tolist(), f.tolist())))
    return PathSamples(f, products, f_input, f_base)


def refine(rule: str, levels: list[int], sample, ends, tolerance: float, auto: bool) -> IGResult:
    """IG by ``rule`` at each point count of ``levels`` in turn, evaluating only the points earlier levels lack
    (``sample(alphas) -> (F, products)``; ``ends(known F by alpha) -> (F(x'), F(x))``), until converged.

    Converged: completeness gap <= ``tolerance`` and, when ``auto``, token IG moved by <= ``tolerance``
    (relative L1) since the previous level; after the last level the result is returned as it is.
    """
    seen: dict[float, tuple[float, np.ndarray]] = {}  # alpha -> (F, products): every point evaluated once
    previous = change = None
    for level in levels:
        alphas, weights = integration_points(rule, level)
        new = [a for a in alphas.tolist() if a not in seen]
        if new:
            f, products = sample(np.asarray(new))
            seen.update(zip(new, zip(f.tolist(), products)))
        ig = (weights @ np.stack([seen[a][1] for a in alphas.tolist()]).astype(np.float64)).astype(np.float32)
        f_base, f_input = ends({a: seen[a][0] for a in (0.0, 1.0) if a in seen})
        if previous is not None:
            change = float(np.abs(ig - previous).sum(dtype=np.float64) / max(np.abs(ig).sum(dtype=np.float64), 1e-12))
        converged = _gap(ig, f_input, f_base) <= tolerance and (not auto or (change is not None and change <= tolerance))
        if converged:
            break
        previous = ig
    return IGResult(ig, float(f_input), float(f_base), rule, len(alphas), bool(converged), change)


def integrated_gradients(
    model,
    input_ids,
    answer_positions,
    baseline_mask=None,
    baseline_id: int | None = None,
    *,
    rule: str,
    steps: int | str,
    tolerance: float = 0.05,
    max_steps: int = 512,
    internal_batch: int = 1,
    gradient_checkpointing: bool = False,
) -> IGResult:
    """Per-token IG of F = sum_a log p(answer_a | prefix) w.r.t. the input embeddings (see path_samples).

    ``steps``: J points, ``converged`` when the completeness gap is <= ``tolerance``; or "auto": the rule's
    levels (``auto_levels``, up to ``max_steps`` points) refined in turn until converged (``refine``).
    """
    auto = steps == "auto"
    levels = auto_levels(rule, max_steps) if auto else [int(steps)]
    with open_path(model, input_ids, answer_positions, baseline_mask, baseline_id, gradient_checkpointing) as path:
        return refine(rule, levels, lambda a: path.sample(a, internal_batch), path.ends, tolerance, auto)
