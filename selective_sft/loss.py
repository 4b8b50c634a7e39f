"""The SFT loss over selected tokens, as a loss function passed to TRL's SFTTrainer (no trainer fork).

``loss_normalization: sequence`` is paper eq. 9: each sequence's summed NLL over its selected tokens
is divided by its own selected count, and those per-sequence means are averaged over the sequences
of the optimizer step (all gradient-accumulation micro-batches and processes). ``token`` is TRL's
own loss (no function is passed): the step's summed NLL over its selected-token count.

How transformers applies a ``compute_loss_func`` (4.5x/5.x Trainer): it calls it once per
micro-batch, does not divide by the accumulation steps, and multiplies by the process count before
DDP averages the gradients. So returning "sum of this micro-batch's per-sequence means / sequences
in the step" makes the step's gradient that of the eq. 9 mean, however the step is split.
"""
from __future__ import annotations

import torch
from trl.trainer.utils import selective_log_softmax

from attribution.labels_dataset import IGNORE


class SequenceMeanNLL:
    """Eq. 9 over ``sequences_per_step`` = per-device batch x accumulation steps x processes. The
    last step of an epoch, when the data do not fill it, is divided by that full count too."""

    def __init__(self, sequences_per_step: int):
        self.sequences_per_step = sequences_per_step

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        shift_labels = labels[..., 1:]
        mask = shift_labels != IGNORE
        logp = selective_log_softmax(outputs.logits[..., :-1, :], shift_labels.masked_fill(~mask, 0))
        per_sequence = -(logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (B,) mean NLL of each sequence
        return per_sequence.sum() / self.sequences_per_step
