"""Training consumes the labels as they are: eq. 9 loss, no gradient from masked tokens, resume, checks."""
import json

import numpy as np
import pytest
import torch
from transformers import TrainerCallback
from trl import ModelConfig, SFTConfig

from attribution.labels import build_labels
from attribution.labels_dataset import IGNORE, save_labels
from common.config import SelectionArguments, TracesArguments, TrainingArguments
from common.recipe import make_recipe
from data import synthetic
from selective_sft.train import train

FIRST_CORRECT = SelectionArguments(selector="first_correct_solution")


def _labels(tmp_path_factory, tok, n):
    """Labels that mask the segments after the first one stating the answer (a deterministic selection)."""
    rows, summary = build_labels(tok, synthetic.generate(n, seed=21), None, FIRST_CORRECT, TracesArguments())
    out = tmp_path_factory.mktemp("labels")
    save_labels(rows, summary, out)
    return out


@pytest.fixture(scope="module")
def labels_dir(tmp_path_factory, tiny_tok):
    return _labels(tmp_path_factory, tiny_tok, 8)


@pytest.fixture(scope="module")
def two_labels_dir(tmp_path_factory, tiny_tok):
    return _labels(tmp_path_factory, tiny_tok, 2)


def _config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), max_length=512, num_train_epochs=1, learning_rate=1e-3,
                per_device_train_batch_size=1, gradient_accumulation_steps=2, logging_steps=1, save_strategy="no",
                report_to="none", seed=0, bf16=False, use_cpu=True, loss_type="nll", lr_scheduler_type="cosine",
                shuffle_dataset=False, dataloader_drop_last=False)
    return SFTConfig(**{**base, **kw})


def _recipe(labels_dir, sft, normalization="sequence"):
    """Train the tiny Qwen2 on ``labels_dir`` with TRL settings ``sft`` (plain transformers)."""
    return make_recipe(sft, ModelConfig(model_name_or_path="tiny-qwen2"),
                       training=TrainingArguments(use_unsloth="false", loss_normalization=normalization),
                       selection=SelectionArguments(labels_dir=str(labels_dir)))


class Grab(TrainerCallback):
    """Records the accumulated gradients right before each optimizer step."""

    def __init__(self):
        self.grads = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        self.grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})


def _with_weights(labels_dir, out, weights):
    """A copy of a labels dataset with a ``label_weights`` column: ``weights(row index, n)`` on trained tokens."""
    import datasets

    ds = datasets.load_dataset(str(labels_dir), split="train")
    rows = [{**ex, "label_weights": np.where(np.asarray(ex["labels"]) != IGNORE, weights(i, len(ex["labels"])), 0.0)
             .astype(np.float32).tolist()} for i, ex in enumerate(ds)]
    save_labels(rows, _Summary(labels_dir), out)
    return out


class _Summary:
    """The summary of an existing labels folder, saved again beside a copy of its rows."""

    def __init__(self, labels_dir):
        self.data = json.loads((labels_dir / "summary.json").read_text())

    def to_dict(self):
        return self.data


@pytest.mark.parametrize("weighted", [False, True], ids=["mask", "weights"])
@pytest.mark.parametrize("normalization", ["sequence", "token"])
def test_loss_over_accumulation_by_hand(two_labels_dir, tmp_path, tiny_tok, normalization, weighted):
    """Two micro-batches of one sequence each, unequal selected counts: eq. 9 averages the two
    per-sequence means; TRL's token mode divides the summed NLL by all selected tokens of the step.
    With label weights (soft selection) each token's NLL is multiplied by its weight, the counts unchanged."""
    import datasets

    rng = np.random.default_rng(3)
    labels_dir = _with_weights(two_labels_dir, tmp_path / "w", lambda i, n: rng.uniform(0.2, 3.0, n)) if weighted else two_labels_dir
    ds = datasets.load_dataset(str(labels_dir), split="train")
    assert len(set(sum(1 for x in ex["labels"] if x != IGNORE) for ex in ds)) == 2  # unequal counts matter
    grab = Grab()
    config = _config(tmp_path, max_steps=1, learning_rate=0.0, max_grad_norm=0.0)
    trainer = train(_recipe(labels_dir, config, normalization), callbacks=[grab])
    from common.modeling import load_model

    model = load_model(ModelConfig(model_name_or_path="tiny-qwen2"))  # a fresh copy of the same initial model
    sums, counts = [], []
    for ex in ds:
        ids = torch.tensor([ex["input_ids"]])
        labels = torch.tensor(ex["labels"][1:])
        w = torch.tensor(ex["label_weights"][1:]) if weighted else torch.ones(len(labels))
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        keep = labels != IGNORE
        sums.append(-(w[keep] * logp[keep].gather(-1, labels[keep].unsqueeze(-1)).squeeze(-1)).sum())
        counts.append(int(keep.sum()))
    if normalization == "sequence":
        loss = (sums[0] / counts[0] + sums[1] / counts[1]) / 2
    else:
        loss = (sums[0] + sums[1]) / (counts[0] + counts[1])
    assert trainer.state.log_history[0]["loss"] == pytest.approx(loss.item(), rel=1e-4)
    loss.backward()
    hand = {n: p.grad for n, p in model.named_parameters()}
    for name, g in grab.grads[0].items():
        torch.testing.assert_close(g, hand[name], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("normalization", ["sequence", "token"])
def test_unit_weights_give_the_mask_loss(labels_dir, tmp_path, normalization):
    """Label weights all 1 give the mask loss and its gradients (in token mode: TRL's own loss), over
    batches of padded rows, two accumulation steps and a shuffled order. (Gradients, not weights after
    Adam: its first step is lr x sign(gradient), which float noise flips where a gradient is ~0.)"""
    ones = _with_weights(labels_dir, tmp_path / "ones", lambda i, n: np.ones(n))
    common = dict(max_steps=2, learning_rate=0.0, max_grad_norm=0.0, per_device_train_batch_size=2, shuffle_dataset=True)
    grabs = [Grab(), Grab()]
    runs = [train(_recipe(d, _config(tmp_path / d.name, **common), normalization), callbacks=[g])
            for d, g in zip((labels_dir, ones), grabs)]
    a, b = ([h["loss"] for h in r.state.log_history if "loss" in h] for r in runs)
    assert len(a) == 2 and a == pytest.approx(b, rel=1e-6)
    for step_a, step_b in zip(*(g.grads for g in grabs)):
        for name, g in step_a.items():
            torch.testing.assert_close(g, step_b[name], rtol=1e-5, atol=1e-8, msg=name)


def test_label_weights_are_found_by_their_row(two_labels_dir, tmp_path):
    """The loss finds each row's weights whatever the batch order; a row it does not know (packed, cut
    elsewhere) and weights on masked tokens are refused."""
    import datasets

    from selective_sft.loss import LabelWeights

    ds = datasets.load_dataset(str(_with_weights(two_labels_dir, tmp_path / "w", lambda i, n: np.full(n, i + 2.0))),
                               split="train")
    lookup = LabelWeights(ds)
    n = max(len(x) for x in ds["labels"])
    batch = torch.full((2, n + 3), IGNORE)  # reversed order, right padding
    for i, labels in enumerate(reversed(ds["labels"])):
        batch[i, : len(labels)] = torch.tensor(labels)
    weights = lookup(batch)
    for i, labels in enumerate(reversed(ds["labels"])):
        trained = torch.tensor(labels) != IGNORE
        assert (weights[i, : len(labels)][trained] == 3.0 - i).all() and weights[i][: len(labels)][~trained].eq(0).all()
    with pytest.raises(KeyError, match="packing"):
        lookup(batch[:, : n // 2])
    bad = ds.map(lambda ex: {"label_weights": [1.0] * len(ex["labels"])})
    with pytest.raises(ValueError, match="0 where labels are -100"):
        LabelWeights(bad)


def test_masked_tokens_get_no_gradient(tiny_tok, tiny_qwen2):
    """Changing the targets at -100 positions changes neither loss nor gradient (any token id there)."""
    rec = synthetic.generate(1, seed=2)[0]
    rows, _ = build_labels(tiny_tok, [rec], None, FIRST_CORRECT, TracesArguments())
    ids = torch.tensor([rows[0]["input_ids"]])
    labels = torch.tensor([rows[0]["labels"]])
    assert (labels == IGNORE).any() and (labels != IGNORE).any()
    masked = labels == IGNORE
    out = []
    for targets in (ids, torch.randint_like(ids, len(tiny_tok))):  # what a masked position would have learned
        model = tiny_qwen2
        model.zero_grad()
        full = torch.where(masked, targets, labels)  # the targets exist in the data...
        loss = model(input_ids=ids, labels=torch.where(masked, IGNORE, full)).loss  # ...but -100 hides them
        loss.backward()
        out.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert out[0][0] == out[1][0]
    for name in out[0][1]:
        assert torch.equal(out[0][1][name], out[1][1][name])
    # and the hidden state feeding a masked target receives exactly zero gradient
    hidden = {}
    handle = tiny_qwen2.model.norm.register_forward_hook(lambda m, i, o: hidden.setdefault("h", o))
    out_ = tiny_qwen2(input_ids=ids, labels=labels)
    handle.remove()
    (g,) = torch.autograd.grad(out_.loss, hidden["h"])
    predicts_masked = masked[0, 1:]  # position t predicts token t+1
    assert g[0, :-1][predicts_masked].abs().max() == 0 and g[0, :-1][~predicts_masked].abs().max() > 0
    tiny_qwen2.zero_grad()


def test_few_steps_lower_selected_loss(labels_dir, tmp_path):
    trainer = train(_recipe(labels_dir, _config(tmp_path, num_train_epochs=3, learning_rate=3e-3,
                                                gradient_accumulation_steps=1, per_device_train_batch_size=4)))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.3
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    for (n, a), b in zip(trainer.model.state_dict().items(), reloaded.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_stop_after_epoch_keeps_the_schedule(labels_dir, tmp_path):
    """3-epoch cosine schedule stopped after epoch 1: 2 of 6 steps run, the learning rate still high."""
    recipe = _recipe(labels_dir, _config(tmp_path, num_train_epochs=3, per_device_train_batch_size=4,
                                         gradient_accumulation_steps=1, lr_scheduler_type="cosine"))
    recipe.training.stop_after_epoch = 1
    trainer = train(recipe)
    assert trainer.state.global_step == 2 and trainer.state.epoch == 1 and trainer.state.max_steps == 6
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert lrs[-1] > 0.5e-3  # cosine over 6 steps at 1e-3: after 2 steps it is still above half


class Kill(TrainerCallback):
    def __init__(self, at):
        self.at = at

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.at:
            raise KeyboardInterrupt("simulated kill")


def test_resume_matches_uninterrupted(labels_dir, tmp_path):
    common = dict(num_train_epochs=2, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                  save_strategy="steps", save_steps=3, shuffle_dataset=True)
    whole = train(_recipe(labels_dir, _config(tmp_path / "a", **common)))
    with pytest.raises(KeyboardInterrupt):
        train(_recipe(labels_dir, _config(tmp_path / "b", **common)), callbacks=[Kill(3)])
    assert (tmp_path / "b" / "out" / "checkpoint-3").exists()
    resumed = train(_recipe(labels_dir, _config(tmp_path / "b", resume_from_checkpoint="true", **common)))
    assert resumed.state.global_step == whole.state.global_step == 8
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_mismatched_tokenizer_refused(labels_dir, tmp_path):
    summary = json.loads((labels_dir / "summary.json").read_text())
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(labels_dir / "data", bad / "data")
    summary["tokenizer"]["vocab_size"] += 1
    (bad / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="another tokenizer"):
        train(_recipe(bad, _config(tmp_path)))


def test_trl_sft_cli_trains_on_the_labels_folder(labels_dir, tmp_path):
    """TRL's own `trl sft`, from a recipe of TRL keys only, trains on the labels folder by name, and its
    first loss is ours (token normalisation, TRL's): the labels are consumed as they are."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from common.assets import tiny_checkpoint

    keys = dict(model_name_or_path=str(tiny_checkpoint("qwen2")), dataset_name=str(labels_dir),
                output_dir=str(tmp_path / "cli"), max_steps=2, per_device_train_batch_size=2, learning_rate=0.0,
                logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=0,
                shuffle_dataset=False, max_length=512, dataset_num_proc=1)
    recipe = tmp_path / "trl_only.yaml"
    recipe.write_text(yaml.safe_dump(keys))  # quoted where YAML would misread ("no")
    res = subprocess.run([str(Path(sys.executable).with_name("trl")), "sft", "--config", str(recipe)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    cli_loss = float(re.search(r"'loss': '?([0-9.]+)", res.stdout + res.stderr).group(1))
    ours = train(_recipe(labels_dir, _config(tmp_path, max_steps=1, learning_rate=0.0, per_device_train_batch_size=2,
                                             gradient_accumulation_steps=1), "token"))
    assert cli_loss == pytest.approx(ours.state.log_history[0]["loss"], rel=1e-3)
    assert (tmp_path / "cli" / "model.safetensors").exists()


def test_lora_run_evaluates_as_adapter_and_merged(labels_dir, tmp_path):
    """A LoRA run's output loads for generation as it is, and merged into full weights it gives the same
    logits and the same greedy tokens."""
    from common.modeling import inference_model, load_tokenizer
    from selective_sft.merge import merge

    model_args = ModelConfig(model_name_or_path="tiny-qwen2", use_peft=True, lora_r=4, lora_alpha=8,
                             lora_target_modules=["q_proj", "v_proj"])
    recipe = make_recipe(_config(tmp_path, max_steps=3, learning_rate=5e-2, per_device_train_batch_size=4,
                                 gradient_accumulation_steps=1), model_args,
                         training=TrainingArguments(use_unsloth="false"), selection=SelectionArguments(labels_dir=str(labels_dir)))
    train(recipe)
    adapter = tmp_path / "out"
    assert (adapter / "adapter_config.json").exists() and not (adapter / "model.safetensors").exists()
    merged = merge(adapter, tmp_path / "merged")
    tok = load_tokenizer(str(adapter))
    ids = torch.tensor([tok("What is 3 + 4?", add_special_tokens=False)["input_ids"]])
    a, b, base = (inference_model(str(p)) for p in (adapter, merged, "tiny-qwen2"))
    with torch.no_grad():
        la, lb, l0 = (m(input_ids=ids).logits for m in (a, b, base))
        ga, gb = (m.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id) for m in (a, b))
    torch.testing.assert_close(la, lb, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(la, l0, atol=1e-3)  # the adapter did change the model
    assert ga.tolist() == gb.tolist()


def test_tiny_recipe_trains_as_written(labels_dir, tmp_path):
    """The tiny recipe's own keys train (eq. 9 needs the logits' NLL); TRL's in-model chunked loss is
    refused with the key to set, instead of failing inside the trainer."""
    from common.recipe import parse_recipe

    args = ["--config", "recipes/tiny/selective.yaml", "--labels_dir", str(labels_dir), "--output_dir",
            str(tmp_path / "out"), "--max_steps", "1"]
    assert train(parse_recipe(args)).state.global_step == 1
    with pytest.raises(ValueError, match="set loss_type: nll"):
        train(parse_recipe([*args, "--loss_type", "chunked_nll"]))
