"""The tiny models and tokenizers built offline for the quickstart, tests and benches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cosmosage.tools.models.tiny import build_tiny_model, corpus_texts
from tests.helpers.tokenizers import train_byte_level_tokenizer

ROOT = Path(__file__).resolve().parents[3]


def test_tiny_tokenizer_has_llamas_layout_and_word_start_pieces(tiny_model, tiny_tokenizer):
    vocab = tiny_tokenizer.get_vocab()
    assert [vocab[t] for t in ("<unk>", "<s>", "</s>")] == [0, 1, 2]
    assert vocab["<0x00>"] == 4 and vocab["<0xFF>"] == 259
    # trained split before each ▁ (as SentencePiece splits on whitespace): no piece holds a
    # ▁ after another character, so every word start is a token boundary
    crossing = [p for p in vocab if any(c == "▁" and p[i] != "▁" for i, c in enumerate(p[1:]))]
    assert crossing == []
    assert tiny_tokenizer.tokenize("the CMB")[0].startswith("▁")
    spec = json.loads((tiny_model / "tokenizer.json").read_text())
    assert spec["pre_tokenizer"] is None and spec["model"]["byte_fallback"] is True


def test_tiny_model_is_reused_until_its_inputs_change(tiny_model, tmp_path):
    again = build_tiny_model([str(ROOT / "samples")], tiny_model)
    assert again["reused"] is True and again["format"] >= 2
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.md").write_text("A short text about the cosmic microwave background. " * 40)
    first = build_tiny_model([str(src)], tmp_path / "m", vocab_size=300)
    assert first["reused"] is False
    assert build_tiny_model([str(src)], tmp_path / "m", vocab_size=300)["reused"] is True
    (src / "a.md").write_text("Different words now, about baryon acoustic oscillations. " * 40)
    assert build_tiny_model([str(src)], tmp_path / "m", vocab_size=300)["reused"] is False


@pytest.mark.parametrize("style,split", [("llama3", "Sequence"), ("gpt2", "ByteLevel")])
def test_byte_level_tokenizer_styles(style, split):
    tok = train_byte_level_tokenizer(corpus_texts([str(ROOT / "samples")]), 600, style)
    spec = json.loads(tok.to_str())
    assert spec["pre_tokenizer"]["type"] == split
    assert spec["model"].get("ignore_merges", False) is (style == "llama3")
    text = "Ω_m ≈ 0.315, it's 12345 here"
    assert tok.decode(tok.encode(text).ids) == text
    with pytest.raises(ValueError, match="style must be"):
        train_byte_level_tokenizer(["x"], 300, "bert")
