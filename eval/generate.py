"""Generation backends: vLLM on CUDA (tensor parallel over all GPUs), batched transformers elsewhere.

Both take chat-formatted prompt texts and return, per prompt, ``n`` (text, output token count) pairs.
``temperature == 0`` is greedy decoding.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch


@dataclass
class Sampling:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 32768
    seed: int = 0


def pick_backend(name: str = "auto") -> str:
    if name == "auto":
        return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "hf"
    if name == "vllm" and not (torch.cuda.is_available() and importlib.util.find_spec("vllm")):
        raise RuntimeError("backend vllm needs a CUDA GPU and the vllm package (see README, Evaluation on GPUs)")
    if name not in ("hf", "vllm"):
        raise ValueError(f"unknown backend {name!r}; use auto, hf or vllm")
    return name


class HFGenerator:
    """transformers ``generate`` with left padding, in batches of prompts."""

    def __init__(self, model_path: str, tokenizer, batch_size: int):
        from common.modeling import inference_model

        self.tok = tokenizer
        self.tok.padding_side = "left"
        self.model = inference_model(model_path)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, prompts: list[str], s: Sampling) -> list[list[tuple[str, int]]]:
        out = []
        for lo in range(0, len(prompts), self.batch_size):
            batch = prompts[lo : lo + self.batch_size]
            enc = self.tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
            torch.manual_seed(s.seed + lo)
            # sampling as in the paper: temperature and top-p only (top_k=0 turns off transformers' default of 50)
            kwargs = (dict(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0) if s.temperature > 0
                      else dict(do_sample=False))
            gen = self.model.generate(**enc, max_new_tokens=s.max_new_tokens, num_return_sequences=s.n,
                                      pad_token_id=self.tok.pad_token_id, eos_token_id=self.tok.eos_token_id, **kwargs)
            new = gen[:, enc["input_ids"].shape[1] :]
            for i in range(len(batch)):
                rows = []
                for seq in new[i * s.n : (i + 1) * s.n]:
                    stop = (seq == self.tok.eos_token_id).nonzero()
                    n_tok = int(stop[0, 0]) + 1 if len(stop) else int((seq != self.tok.pad_token_id).sum())
                    rows.append((self.tok.decode(seq[:n_tok], skip_special_tokens=True), n_tok))
                out.append(rows)
        return out


class VLLMGenerator:
    """vLLM with tensor parallelism across the visible GPUs."""

    def __init__(self, model_path: str, tokenizer, max_model_len: int | None = None, **_):
        from vllm import LLM

        self.llm = LLM(model_path, tensor_parallel_size=torch.cuda.device_count(), max_model_len=max_model_len)

    def __call__(self, prompts: list[str], s: Sampling) -> list[list[tuple[str, int]]]:
        from vllm import SamplingParams

        params = SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens, seed=s.seed)
        results = self.llm.generate(prompts, params)
        return [[(o.text, len(o.token_ids)) for o in r.outputs] for r in results]


def make_generator(backend: str, model_path: str, tokenizer, batch_size: int):
    backend = pick_backend(backend)
    if backend == "vllm":
        return VLLMGenerator(model_path, tokenizer)
    return HFGenerator(model_path, tokenizer, batch_size)
