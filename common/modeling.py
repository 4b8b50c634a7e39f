"""Load a tokenizer and a causal LM by recipe name: the one loader of IG, training, evaluation and benchmarks.

Unsloth on CUDA when installed and asked for, transformers otherwise. Offline names (``smollm2``,
``tiny-qwen2``, ``tiny-llama``) resolve to models built by :mod:`common.assets`; anything else is a
hub name or a path.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch


def wants_unsloth(setting: str) -> bool:
    """'auto' -> Unsloth when CUDA and the package are present; 'true' insists; 'false' never."""
    available = torch.cuda.is_available() and importlib.util.find_spec("unsloth") is not None
    if setting == "true" and not available:
        raise RuntimeError("use_unsloth: true needs a CUDA GPU and the unsloth package (requirements.txt)")
    return setting == "true" or (setting == "auto" and available)


OFFLINE_NAMES = ("smollm2", "tiny-qwen2", "tiny-llama")  # built by common.assets, never fetched


def resolve_model_path(name: str) -> str:
    """Offline names: ``smollm2`` (packaged SmolLM2-135M-Instruct, converted once), ``tiny-qwen2`` and
    ``tiny-llama`` (random test models); anything else (a hub name or a path) passes through."""
    from . import assets

    if name == "smollm2":
        return str(assets.smollm2())
    if name in ("tiny-qwen2", "tiny-llama"):
        return str(assets.tiny_checkpoint(name.split("-", 1)[1]))
    return name


class MissingModel(RuntimeError):
    """A model a command needs cannot be found; the message is one line naming the key to set."""


def require_model(name: str, key: str, alternative: str = "") -> None:
    """Fail in one line, before any work, when ``name`` (recipe key ``key``) is neither an offline name,
    a local folder, in the hub cache, nor on a reachable hub; ``alternative`` says what else to do."""
    if name in OFFLINE_NAMES or Path(name).is_dir():
        return
    from huggingface_hub import HfApi, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    try:
        if HfApi().file_exists(name, "config.json"):
            return
        why = "the hub has no such model"
    except Exception as e:  # offline, DNS, proxy: one line, not a retry loop and a traceback
        why = f"the hub is not reachable ({type(e).__name__})"
    raise MissingModel(f"{key} {name!r}: not a local folder nor in the hub cache, and {why}; set --{key} to a "
                       f"local model or an offline name (smollm2)" + (f", or {alternative}" if alternative else ""))


THINK_TOKENS = ["<think>", "</think>"]


def load_tokenizer(name: str, chat_template: str | None = None, think_tokens: bool = False, revision: str | None = None):
    """The model's tokenizer; ``chat_template``: a .jinja file that replaces the tokenizer's template;
    ``think_tokens``: add <think> and </think> as special tokens (instruct models, as the authors train them)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(name), revision=revision)
    if chat_template:
        tok.chat_template = Path(chat_template).read_text(encoding="utf-8")
    if think_tokens:
        tok.add_special_tokens({"additional_special_tokens": THINK_TOKENS}, replace_extra_special_tokens=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _dtype(name: str | None):
    if name in (None, "auto"):
        return "auto"
    return getattr(torch, name)


def load_model(model_args, use_unsloth: bool = False, max_seq_length: int | None = None, for_training: bool = True):
    """The recipe's model (``trl.ModelConfig``). Unsloth: full fine-tuning unless ``use_peft`` (then its
    LoRA path). For inference (``for_training=False``) the model goes to the GPU when there is one."""
    path = resolve_model_path(model_args.model_name_or_path)
    if use_unsloth:
        from unsloth import FastLanguageModel  # import before trl so Unsloth can patch it

        model, _ = FastLanguageModel.from_pretrained(
            path, max_seq_length=max_seq_length, dtype=None if model_args.dtype in (None, "auto") else _dtype(model_args.dtype),
            load_in_4bit=model_args.load_in_4bit, full_finetuning=not model_args.use_peft,
            use_gradient_checkpointing="unsloth" if for_training else False)
        if model_args.use_peft:
            model = FastLanguageModel.get_peft_model(
                model, r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                target_modules=model_args.lora_target_modules or ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                  "gate_proj", "up_proj", "down_proj"],
                use_gradient_checkpointing="unsloth")
        return model
    from transformers import AutoModelForCausalLM

    kwargs = dict(revision=model_args.model_revision, dtype=_dtype(model_args.dtype),
                  attn_implementation=model_args.attn_implementation)
    if model_args.load_in_4bit or model_args.load_in_8bit:
        from trl import get_quantization_config

        kwargs["quantization_config"] = get_quantization_config(model_args)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not for_training:
        model = model.eval().to("cuda" if torch.cuda.is_available() else "cpu")
    return model


def inference_model(name: str, dtype: str = "auto"):
    """A model by name for generation or attribution, without a recipe (evaluation, benchmarks)."""
    from trl import ModelConfig

    return load_model(ModelConfig(model_name_or_path=name, dtype=dtype), for_training=False)
