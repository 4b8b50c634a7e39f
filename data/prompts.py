"""Build the training / attribution text from a record and a tokenizer's chat template.

Text = chat-template(user: question + INSTRUCTION, generation prompt) + think prefix + trace + tail,
where tail is the record's completion (``</think>`` and the final answer, when the trace had them)
plus EOS for training, or the forced answer suffix for attribution. The think prefix (``<think>\n``)
opens the thinking for models whose template does not (instruct models, as the authors train them). The template is rendered
as text and tokenized later with ``add_special_tokens=False``: rendering already wrote the BOS, and
tokenizing with special tokens on would add a second one (R1-Distill's tokenizer does).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."
@dataclass(frozen=True)
class PromptedText:
    """A full text with the character spans of its parts: [0, trace_start) prompt, trace, tail."""

    text: str
    trace_start: int
    trace_end: int
    answer_span: tuple[int, int] | None = None  # chars of the gold answer inside the tail, if any
    prompt_messages: tuple = ()  # the chat messages the prompt was rendered from

    @property
    def prompt(self) -> str:
        return self.text[: self.trace_start]


def prompt_messages(question: str, system: str | None = None, instruction: str = INSTRUCTION) -> list[dict]:
    """The chat messages of a prompt: an optional system message and the user's question + instruction."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question + instruction}]


def render_prompt(tokenizer, question: str, system: str | None = None, instruction: str = INSTRUCTION,
                  think_prefix: str = "") -> str:
    """The chat-formatted prompt up to and including the generation prompt and ``think_prefix`` (as text)."""
    if not tokenizer.chat_template:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; set one "
            f"(e.g. common.assets.CHATML_TEMPLATE or the model's .jinja) before formatting prompts"
        )
    messages = prompt_messages(question, system, instruction)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + think_prefix


def build_text(prompt: str, trace: str, tail: str, answer: str | None = None, messages: list[dict] = ()) -> PromptedText:
    """Join prompt, trace and tail, keeping spans; ``answer`` is located inside the tail; ``messages``: the
    prompt's chat messages."""
    text = prompt + trace + tail
    span = None
    if answer is not None:
        at = tail.rfind(answer)
        if at < 0:
            raise ValueError(f"answer {answer!r} does not occur in the tail {tail!r}")
        span = (len(prompt) + len(trace) + at, len(prompt) + len(trace) + at + len(answer))
    return PromptedText(text, len(prompt), len(prompt) + len(trace), span, tuple(messages))


def training_text(tokenizer, question: str, trace: str, completion: str = "", system: str | None = None,
                  think_prefix: str = "") -> PromptedText:
    """prompt + trace + completion + EOS: what SFT learns from (the tail after the trace is always trained)."""
    if tokenizer.eos_token is None:
        raise ValueError("tokenizer has no eos_token; set one so the model learns to stop")
    return build_text(render_prompt(tokenizer, question, system, think_prefix=think_prefix), trace,
                      completion + tokenizer.eos_token, messages=prompt_messages(question, system))


def attribution_text(tokenizer, question: str, trace: str, answer: str, suffix: str,
                     system: str | None = None, think_prefix: str = "") -> PromptedText:
    """prompt + trace + forced answer ``suffix`` (``ig_answer_suffix``, with ``{answer}``): what integrated
    gradients explains (target = the answer)."""
    return build_text(render_prompt(tokenizer, question, system, think_prefix=think_prefix), trace,
                      suffix.format(answer=answer), answer)


def load_template(path: str | Path) -> str:
    """Read a Jinja chat template file (e.g. the R1-Distill-Qwen template)."""
    return Path(path).read_text(encoding="utf-8")
