"""Sliding-window perplexity: equal to exp(mean NLL) when the text fits one window, every
token scored once whatever the stride, and a model that knows nothing scores its vocabulary
size."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cosmosage.dataprep.records import DataError
from cosmosage.tools.eval.perplexity import perplexity

ROOT = Path(__file__).resolve().parents[3]
GENERAL_TEXT = ROOT / "samples" / "eval" / "general_text.md"


def test_one_window_equals_exp_of_the_mean_nll(tmp_path, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = "The cosmic microwave background is the oldest light in the universe."
    path = tmp_path / "short.txt"
    path.write_text(text)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    assert ids.shape[1] < 256
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()  # mean NLL of tokens 2..n

    res = perplexity(tiny_model, path)
    assert res["tokens"] == ids.shape[1] - 1
    assert res["nll"] == pytest.approx(loss * res["tokens"], rel=1e-5)
    assert res["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)


@pytest.fixture(scope="module")
def excerpt(tmp_path_factory) -> Path:
    """The first paragraphs of the bundled general text (several 128-token windows)."""
    path = tmp_path_factory.mktemp("text") / "excerpt.md"
    path.write_text(GENERAL_TEXT.read_text()[:4000])
    return path


def test_every_token_is_scored_once_and_the_stride_barely_matters(
    tiny_model, tiny_tokenizer, excerpt
):
    n = len(tiny_tokenizer(excerpt.read_text())["input_ids"])
    assert n > 4 * 128  # several windows
    runs = [perplexity(tiny_model, excerpt, max_length=128, stride=s) for s in (64, 96, 112)]
    assert {r["tokens"] for r in runs} == {n - 1}
    ppl = [r["perplexity"] for r in runs]
    assert max(ppl) / min(ppl) < 1.01
    # windows that do not overlap leave each window's first token unscored
    disjoint = perplexity(tiny_model, excerpt, max_length=128, stride=128)
    assert disjoint["tokens"] == n - math.ceil(n / 128)


def test_a_model_that_knows_nothing_scores_its_vocabulary_size(tmp_path, tiny_model, excerpt):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_model)
    config.initializer_range = 1e-6  # every logit ~0: a uniform next-token distribution
    out = tmp_path / "uniform"
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    res = perplexity(out, excerpt, max_length=256, stride=128)
    assert res["perplexity"] == pytest.approx(config.vocab_size, rel=0.01)


def test_bad_arguments_are_refused(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="stride"):
        perplexity(tiny_model, GENERAL_TEXT, max_length=128, stride=129)
    with pytest.raises(ValueError, match="positions"):
        perplexity(tiny_model, GENERAL_TEXT, max_length=4096)
    with pytest.raises(DataError, match="no such text file"):
        perplexity(tiny_model, tmp_path / "missing.md")
    empty = tmp_path / "empty.md"
    empty.write_text("")
    with pytest.raises(DataError, match="too little text"):
        perplexity(tiny_model, empty)
    binary = tmp_path / "binary.md"
    binary.write_text(GENERAL_TEXT.read_text(), encoding="utf-16")  # a perplexity of garbage
    with pytest.raises(DataError, match=rf"^{binary}:1: binary or UTF-16 file"):
        perplexity(tiny_model, binary)
