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


@torch.no_grad()
def greedy_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                  eos_token_id: int) -> list[list[int]]:
    """Greedy decoding of a left-padded batch that drops each sequence from the batch once it emits
    EOS, so a batch costs the tokens its answers have rather than its longest answer times the batch
    (transformers' ``generate`` decodes every row until the last one ends). Per row: the new tokens,
    EOS included."""
    out: list[list[int]] = [[] for _ in range(len(input_ids))]
    alive = torch.arange(len(input_ids), device=input_ids.device)
    position = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # as generate: pads sit at 0
    res = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position, use_cache=True)
    cache, mask, last = res.past_key_values, attention_mask, position[:, -1]
    for step in range(max_new_tokens):
        token = res.logits[:, -1].argmax(-1)
        for row, t in zip(alive.tolist(), token.tolist()):
            out[row].append(t)
        going = token != eos_token_id
        if step == max_new_tokens - 1 or not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(-1)
            alive, token, mask, last = alive[keep], token[keep], mask[keep], last[keep]
            cache.batch_select_indices(keep)
        mask, last = torch.cat([mask, mask.new_ones(len(alive), 1)], -1), last + 1
        res = model(input_ids=token[:, None], attention_mask=mask, position_ids=last[:, None], past_key_values=cache,
                    use_cache=True)
        cache = res.past_key_values
    return out


class HFGenerator:
    """transformers with left padding, in batches of prompts: ``greedy_decode`` for greedy answers,
    ``generate`` for sampling."""

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
            if s.temperature == 0 and s.n == 1:
                for ids in greedy_decode(self.model, enc["input_ids"], enc["attention_mask"], s.max_new_tokens,
                                         self.tok.eos_token_id):
                    out.append([(self.tok.decode(ids, skip_special_tokens=True), len(ids))])
                continue
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
