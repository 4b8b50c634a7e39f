"""The SFT loss over selected tokens, as a loss function passed to TRL's SFTTrainer (no trainer fork).

``loss_normalization: sequence`` is paper eq. 9: each sequence's summed NLL over its selected tokens
is divided by its own selected count, and those per-sequence means are averaged over the sequences
of the optimizer step (all gradient-accumulation micro-batches and processes). ``token`` is TRL's
own loss (no function is passed unless there are weights): the step's summed NLL over its
selected-token count.

How transformers applies a ``compute_loss_func`` (4.5x/5.x Trainer): it calls it once per
micro-batch, does not divide by the accumulation steps, and multiplies by the process count before
DDP averages the gradients. So returning "sum of this micro-batch's per-sequence means / sequences
in the step" makes the step's gradient that of the eq. 9 mean, however the step is split; for
``token``, "this micro-batch's sum / the step's selected tokens" (``num_items_in_batch``, counted by
the Trainer over the whole step).

Soft selection (``label_weights``, beyond the paper) multiplies each token's NLL by its weight; the
counts that normalise stay token counts, so weights all 1 give the mask loss.
"""
from __future__ import annotations

import numpy as np
import torch
from trl.trainer.utils import selective_log_softmax

from attribution.labels_dataset import IGNORE, WEIGHTS


class LabelWeights:
    """Per-token loss weights, found from the labels row they belong to.

    The Trainer hands a loss function the model outputs and ``labels`` only, and drops columns the
    model does not take, so the weights travel by key: a row's labels (trailing IGNORE stripped),
    which the trainer batches unchanged. That holds under shuffling, accumulation and dataloader
    workers; packing or padding-free batches (rows concatenated) and truncation other than the
    labels' own find no key, and say so.
    """

    def __init__(self, dataset, max_length: int | None = None):
        self.table: dict[bytes, tuple[str, np.ndarray]] = {}
        ids = dataset["id"] if "id" in dataset.column_names else [str(i) for i in range(len(dataset))]
        for rid, labels, weights in zip(ids, dataset["labels"], dataset[WEIGHTS]):
            labels, weights = np.asarray(labels[:max_length]), np.asarray(weights[:max_length], dtype=np.float32)
            if len(weights) != len(labels) or (weights[labels == IGNORE] != 0).any():
                raise ValueError(f"record {rid}: {WEIGHTS} must have one value per label, 0 where labels are {IGNORE}; "
                                 f"rebuild the labels with `python -m attribution labels`")
            key = self.key(labels)
            if key in self.table and not np.array_equal(self.table[key][1], weights):
                raise ValueError(f"records {self.table[key][0]} and {rid} have the same labels but other {WEIGHTS}: "
                                 f"the loss could not tell them apart; drop one of them")
            self.table[key] = (rid, weights)

    @staticmethod
    def key(labels: np.ndarray) -> bytes:
        trained = np.flatnonzero(labels != IGNORE)
        return labels[: trained[-1] + 1 if len(trained) else 0].astype(np.int64).tobytes()

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, T) weights for a right-padded (B, T) labels batch."""
        out = np.zeros(labels.shape, dtype=np.float32)
        for i, row in enumerate(labels.cpu().numpy()):
            found = self.table.get(self.key(row))
            if found is None:
                raise KeyError(f"a training row matches no row of the {WEIGHTS} dataset: train without packing and "
                               f"padding_free, with right padding, and with the max_length the labels were built with")
            weights = found[1][: labels.shape[1]]
            out[i, : len(weights)] = weights
        return torch.from_numpy(out).to(labels.device)


class SelectedNLL:
    """NLL over the selected tokens (labels != IGNORE), times ``weights`` when given, normalised per
    ``normalization``: 'sequence' (eq. 9) over ``sequences_per_step`` = per-device batch x
    accumulation steps x processes (the last step of an epoch, when the data do not fill it, is
    divided by that full count too), or 'token' over the step's selected tokens."""

    def __init__(self, normalization: str, sequences_per_step: int, weights: LabelWeights | None = None):
        self.normalization, self.sequences_per_step, self.weights = normalization, sequences_per_step, weights

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        shift_labels = labels[..., 1:]
        mask = shift_labels != IGNORE
        logp = selective_log_softmax(outputs.logits[..., :-1, :], shift_labels.masked_fill(~mask, 0))
        weights = mask.to(logp.dtype) if self.weights is None else self.weights(labels)[..., 1:].to(logp.dtype)
        nll = -(logp * weights)
        if self.normalization == "sequence":
            per_sequence = nll.sum(-1) / mask.sum(-1).clamp(min=1)  # (B,) mean NLL of each sequence
            return per_sequence.sum() / self.sequences_per_step
        return nll.sum() / (mask.sum() if num_items_in_batch is None else num_items_in_batch)
