"""Session fixtures: offline tokenizers and tiny random models (seconds, no network), shared data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common import assets

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test saying what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data folder must sit beside the checkout (../shared/data)")
    return path


@pytest.fixture(scope="session")
def tiny_tok():
    return assets.tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_qwen2(tiny_tok):
    return assets.tiny_model(tiny_tok, "qwen2").eval()


@pytest.fixture(scope="session")
def tiny_llama(tiny_tok):
    return assets.tiny_model(tiny_tok, "llama").eval()


@pytest.fixture(scope="session")
def qwen_tok():
    return assets.qwen25_tokenizer()


@pytest.fixture(scope="session")
def smol_path():
    return assets.smollm2()


@pytest.fixture(scope="session")
def smol_tok(smol_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_path)


@pytest.fixture(scope="session")
def r1_traces():
    from data.loaders import load_records

    recs, _ = load_records(str(shared_path("traces", "r1_distill_llama8b_500.json")), chat=True)
    return recs


@pytest.fixture(scope="session")
def r1_raw():
    return json.loads(shared_path("traces", "r1_distill_llama8b_500.json").read_text())
