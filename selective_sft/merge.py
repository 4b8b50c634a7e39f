"""Merge a LoRA run's adapter into a full checkpoint, for backends that need full weights (vLLM).

    python -m selective_sft.merge ADAPTER_DIR OUT_DIR

The HF evaluation backend loads ADAPTER_DIR as it is (transformers attaches the adapter to the base
model named in its adapter_config.json); the merged checkpoint generates the same tokens (tested).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def merge(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Base model + LoRA weights folded in, saved with the run's tokenizer."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir)).merge_and_unload()
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(out_dir)
    return Path(out_dir)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m selective_sft.merge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("adapter_dir")
    p.add_argument("out_dir")
    a = p.parse_args(argv)
    print(f"merged: {merge(a.adapter_dir, a.out_dir)}")


if __name__ == "__main__":
    main()
