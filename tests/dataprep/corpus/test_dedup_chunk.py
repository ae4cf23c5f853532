"""Exact and near-duplicate removal, decontamination, and token-exact chunking."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from cosmosage.dataprep.corpus.chunk import Chunker, packing_efficiency
from cosmosage.dataprep.corpus.clean import clean_text
from cosmosage.dataprep.corpus.dedup import (
    Decontaminator,
    Deduplicator,
    MinHasher,
    exact_key,
    read_eval_prompts,
)
from cosmosage.dataprep.records import DataError
from tests.dataprep.corpus.fixtures import prose

ROOT = Path(__file__).resolve().parents[3]


def _edit(text: str, share: float, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = text.split()
    for i in rng.sample(range(len(words)), int(len(words) * share)):
        words[i] = "zzz" + words[i]
    return " ".join(words)


def test_exact_key_ignores_case_punctuation_and_whitespace():
    assert exact_key("The Hubble  constant, measured!") == exact_key("the hubble constant measured")
    assert exact_key("The Hubble constant") != exact_key("The Hubble parameter")


def test_minhash_similarity_tracks_jaccard():
    h = MinHasher(num_perm=256)
    a = prose(1, 400)
    same = float((h.signature(a) == h.signature(a)).mean())
    near = float((h.signature(a) == h.signature(_edit(a, 0.02))).mean())
    far = float((h.signature(a) == h.signature(prose(2, 400))).mean())
    assert same == 1.0 and near > 0.75 and far < 0.3


def test_deduplicator_flags_exact_and_near_copies_in_order():
    d = Deduplicator(threshold=0.7)
    h = d.hasher
    docs = {"a": prose(1, 300), "b": prose(2, 300)}
    docs["a-copy"] = docs["a"].upper()
    docs["a-edit"] = _edit(docs["a"], 0.02)
    reasons = {k: d.check(k, exact_key(t), h.signature(t)) for k, t in docs.items()}
    assert reasons["a"] is None and reasons["b"] is None
    assert reasons["a-copy"].startswith("exact duplicate: of a")
    assert reasons["a-edit"].startswith("near duplicate: of a")


def test_decontaminator_drops_overlap_with_eval_prompts(tmp_path):
    prompts = read_eval_prompts(ROOT / "samples" / "eval" / "prompts.yaml")
    assert any("cosmic microwave background" in p for p in prompts)
    d = Decontaminator(prompts, n=8)
    leaked = (
        "As asked: What is the temperature of the cosmic microwave background today? It is 2.7 K."
    )
    assert d.reason(leaked).startswith("eval overlap")
    assert d.reason("The cosmic microwave background has a blackbody spectrum.") is None


def test_read_eval_prompts_from_jsonl_and_text(tmp_path):
    (tmp_path / "p.jsonl").write_text(
        '{"question": "Why is the sky dark at night?"}\n{"messages": [{"role": "user", "content": "Define the redshift."}]}\n'
    )
    (tmp_path / "p.txt").write_text("first prompt line\n\nsecond prompt line\n")
    assert read_eval_prompts(tmp_path / "p.jsonl") == [
        "Why is the sky dark at night?",
        "Define the redshift.",
    ]
    assert read_eval_prompts(tmp_path / "p.txt") == ["first prompt line", "second prompt line"]
    d = Decontaminator(["Define the redshift."], n=8)  # shorter than n words: whole-prompt match
    assert d.reason("Exercise: define the redshift. Then compute it.") is not None


# ------------------------------------------------------------------ chunking


@pytest.fixture(scope="module")
def sample_texts():
    return [clean_text(p.read_text()) for p in sorted((ROOT / "samples").glob("*/*.md"))]


def _retokenized(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def _chunker(tok, max_tokens: int, method: str = "word-local", **kw) -> Chunker:
    ch = Chunker(tok, max_tokens, method=method, **kw)
    assert ch.method == ch.stats["method"] == method
    return ch


@pytest.mark.parametrize(
    "max_tokens,overlap,paragraph,method",
    [
        (126, 0, False, "word-local"),
        (30, 6, False, "word-local"),
        (510, 0, False, "word-local"),
        (126, 0, False, "candidates"),
        (30, 6, False, "candidates"),
        (126, 0, True, "candidates"),  # paragraph alignment needs offsets: candidates only
        (510, 0, False, "candidates"),
    ],
)
def test_chunks_are_token_exact(
    tiny_tokenizer, sample_texts, max_tokens, overlap, paragraph, method
):
    ch = _chunker(
        tiny_tokenizer, max_tokens, method, overlap=overlap, paragraph=paragraph, verify="none"
    )
    chunks = list(ch.chunk(sample_texts))
    assert chunks
    for c in chunks:
        n = _retokenized(tiny_tokenizer, c.text)
        assert n == c.tokens <= max_tokens
    last = {c.doc_index: c.index for c in chunks}
    inner = [c for c in chunks if c.index != last[c.doc_index]]
    if not paragraph:  # every chunk but a document's last is full, or within the tolerance
        assert all(c.tokens >= max_tokens * (1 - ch.tolerance) for c in inner)
        assert sum(c.tokens == max_tokens for c in inner) >= 0.8 * len(inner)
    else:
        assert any(c.text.endswith("\n\n") or c.tokens < max_tokens for c in inner)


def test_method_auto_picks_word_local_and_refuses_it_where_it_does_not_fit(tiny_tokenizer):
    assert Chunker(tiny_tokenizer, 62).method == "word-local"
    assert Chunker(tiny_tokenizer, 62, paragraph=True).method == "candidates"
    with pytest.raises(DataError, match="word-local method does not fit"):
        Chunker(tiny_tokenizer, 62, paragraph=True, method="word-local")
    with pytest.raises(DataError, match="word-start method does not fit"):
        Chunker(tiny_tokenizer, 62, method="word-start")
    with pytest.raises(DataError, match="method must be"):
        Chunker(tiny_tokenizer, 62, method="fast")


def test_word_local_encodes_the_text_once(tiny_tokenizer, sample_texts):
    ch = _chunker(tiny_tokenizer, 126)
    chunks = list(ch.chunk(sample_texts))
    total = sum(map(len, sample_texts))
    assert ch.stats["encoded_chars"] <= total  # candidates encode ~13% more
    assert ch.stats["fallback_docs"] == 0 and ch.stats["retries"] == 0
    full = [c for c in chunks if c.tokens == 126]
    assert len(full) >= 0.9 * len(chunks)


@pytest.mark.parametrize("segment_chars", [40, 997, 16384])
def test_word_local_segments_do_not_change_the_chunks(tiny_tokenizer, sample_texts, segment_chars):
    text = "\n\n".join(sample_texts) + "  double  spaces   and a trailing space "
    ref = _chunker(tiny_tokenizer, 62, verify="none")
    ch = _chunker(tiny_tokenizer, 62, verify="none")
    ch.segment_chars = segment_chars
    got = [(c.text, c.tokens) for c in ch.chunk([text])]
    assert got == [(c.text, c.tokens) for c in ref.chunk([text])]
    assert all(_retokenized(tiny_tokenizer, t) == n for t, n in got)


def test_word_local_with_the_metaspace_pre_tokenizer_form(tiny_tokenizer, sample_texts):
    """Newer Llama/Mistral tokenizer files put the `▁` handling in a Metaspace
    pre-tokenizer, which prepends no `▁` to a text starting with a space."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tiny_tokenizer.backend_tokenizer.to_str())
    spec["normalizer"] = None
    spec["pre_tokenizer"] = {
        "type": "Metaspace",
        "replacement": "▁",
        "prepend_scheme": "first",
        "split": False,
    }
    tok = Tokenizer.from_str(json.dumps(spec))
    assert len(tok.encode(" x").ids) != len(tiny_tokenizer.backend_tokenizer.encode(" x").ids)
    ch = Chunker(tok, 30, verify="none")
    assert ch.method == "word-local"
    docs = [*sample_texts[:3], "double  spaces  between  words " * 40]
    hf = PreTrainedTokenizerFast(tokenizer_object=tok)
    chunks = list(ch.chunk(docs))
    for c in chunks:
        assert len(hf(c.text, add_special_tokens=False)["input_ids"]) == c.tokens <= 30
    assert {c.doc_index for c in chunks} == {0, 1, 2, 3}


def _random_docs(sample_texts: list[str], n: int, seed: int) -> list[str]:
    """Words of the samples mixed with runs of spaces, newlines, tabs, punctuation, a
    contraction, digits and multibyte characters, mostly space-separated."""
    rng = random.Random(seed)
    words = " ".join(sample_texts).split()[:3000]
    pieces = [" ", "  ", "   ", "\n", "\n\n", "\t", "-", ".", "'s", "12345", "é", "宇宙", "∫"]
    docs = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 400)):
            parts.append(rng.choice(words) if rng.random() < 0.7 else rng.choice(pieces))
            if rng.random() < 0.8:
                parts.append(" ")
        docs.append("".join(parts))
    return docs


def test_word_local_on_random_text(tiny_tokenizer, sample_texts):
    """Random mixes of words, runs of spaces, newlines, tabs, punctuation, digits and
    multibyte characters: every chunk re-encodes to its count, and no text is lost."""
    docs = _random_docs(sample_texts, 40, seed=7)
    for m in (12, 62):
        ch = _chunker(tiny_tokenizer, m, verify="none")
        ch.segment_chars = 200
        chunks = list(ch.chunk(docs))
        counts = [_retokenized(tiny_tokenizer, c.text) for c in chunks]
        assert counts == [c.tokens for c in chunks]
        assert max(counts) <= m
        for d, text in enumerate(docs):
            joined = "".join(c.text for c in chunks if c.doc_index == d)
            assert re.sub(r"\s+", "", joined) == re.sub(r"\s+", "", text)
        if m == 62:  # at 12 tokens, words glued from multibyte pieces outgrow a chunk
            assert ch.stats["fallback_docs"] <= 2


def test_segments_join_to_the_text():
    from cosmosage.dataprep.corpus.chunk import _segments

    text = "alpha beta  gamma" * 50 + "x" * 300 + " tail   end"
    parts = _segments(text, 64)
    assert len(parts) > 5
    rebuilt = " ".join(p for _, p in parts)
    assert rebuilt == text
    for start, piece in parts:
        assert text[start : start + len(piece)] == piece
        # cut at a single space: a non-space on both sides
        assert start == 0 or (text[start - 1] == " " and " " not in (text[start - 2], text[start]))
    assert _segments("no-space-at-all" * 20, 16) == [(0, "no-space-at-all" * 20)]


def test_word_local_falls_back_for_special_token_text_and_huge_words(tiny_tokenizer, sample_texts):
    docs = [
        "Before <s> and </s> inside the text. " + sample_texts[0][:2000],
        "<s>starts with a special token " + sample_texts[1][:1000],
        "x" * 3000 + " then words " * 40,
        "A literal \u2581 marker \u2581\u2581 in the text " * 30,
        sample_texts[2][:3000],
    ]
    ch = _chunker(tiny_tokenizer, 62, verify="none")
    chunks = list(ch.chunk(docs))
    assert ch.stats["fallback_docs"] == 4
    for c in chunks:
        assert _retokenized(tiny_tokenizer, c.text) == c.tokens <= 62
    assert {c.doc_index for c in chunks} == {0, 1, 2, 3, 4}
    assert "".join(c.text for c in chunks if c.doc_index == 3).count("\u2581") == 90


def test_word_local_needs_word_start_boundaries(tiny_tokenizer, sample_texts):
    """A vocabulary with a piece that runs across a word start (`s▁t`) gets the candidate
    method, and its chunks are still exact."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tiny_tokenizer.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    vocab["s▁t"] = len(vocab)
    spec["model"]["merges"].append(["s", "▁t"])
    crossing = Tokenizer.from_str(json.dumps(spec))
    ch = Chunker(crossing, 62, verify="none")
    assert ch.method == "candidates"
    hf = PreTrainedTokenizerFast(tokenizer_object=crossing)
    for c in ch.chunk(sample_texts[:2]):
        assert len(hf(c.text, add_special_tokens=False)["input_ids"]) == c.tokens <= 62


@pytest.mark.parametrize("method", ["word-local", "candidates"])
def test_chunks_without_overlap_lose_no_text(tiny_tokenizer, sample_texts, method):
    chunks = list(Chunker(tiny_tokenizer, 126, method=method).chunk(sample_texts))
    for d, text in enumerate(sample_texts):
        joined = "".join(c.text for c in chunks if c.doc_index == d)
        assert re.sub(r"\s+", "", joined) == re.sub(r"\s+", "", text)


@pytest.mark.parametrize("method", ["word-local", "candidates"])
def test_overlap_repeats_tokens_between_chunks(tiny_tokenizer, sample_texts, method):
    ch = Chunker(tiny_tokenizer, 40, overlap=10, method=method)
    chunks = list(ch.chunk(sample_texts[:1]))
    for a, b in zip(chunks[:5], chunks[1:6], strict=True):
        assert b.text.lstrip()[:10] in a.text
        assert a.text.rstrip()[-8:] in b.text


def test_very_long_line_and_odd_characters(tiny_tokenizer):
    text = "x" * 5000 + " " + "é∫≈ " * 300 + "\n" + "word " * 400
    chunks = list(Chunker(tiny_tokenizer, 62, verify="all").chunk([text]))
    assert all(_retokenized(tiny_tokenizer, c.text) <= 62 for c in chunks)
    assert "".join(c.text for c in chunks).replace(" ", "").replace("\n", "") == text.replace(
        " ", ""
    ).replace("\n", "")


def test_token_lengths_table_matches_offsets(tiny_tokenizer, sample_texts):
    # Candidates are encoded without offsets; cut points come from per-token lengths.
    ch = Chunker(tiny_tokenizer, 126)
    assert ch._lens is not None
    text = sample_texts[0][:3000] + " é∫≈ 宇宙 \n\n x"
    enc = ch.tok.encode(text, add_special_tokens=False)
    pos = -ch._prefix
    for i, (start, _) in enumerate(enc.offsets):
        if ch._lens[enc.ids[i]]:  # continuation bytes share their character's offsets
            assert max(pos, 0) == start
        pos += ch._lens[enc.ids[i]]
    assert pos == len(text)


@pytest.mark.parametrize("mode", ["word-local", "candidates", "offsets"])
def test_chunks_exact_with_multibyte_characters(tiny_tokenizer, sample_texts, mode):
    text = " ".join(
        w + (" 宇∫é" if i % 15 == 0 else "") for i, w in enumerate(sample_texts[0].split())
    )
    ch = Chunker(
        tiny_tokenizer, 30, verify="none", method="candidates" if mode == "offsets" else mode
    )
    if mode == "offsets":
        ch._lens = None  # candidates cut at offsets from the tokenizer, not the length table
    chunks = list(ch.chunk([text, "宇宙" * 400]))
    for c in chunks:
        assert _retokenized(tiny_tokenizer, c.text) == c.tokens <= 30
    # a document of multibyte characters only is cut between characters, not bytes
    inner = [c for c in chunks if c.doc_index == 0][:-1]
    assert sum(c.tokens == 30 for c in inner) >= 0.8 * len(inner)
    assert re.sub(r"\s+", "", "".join(c.text for c in chunks if c.doc_index == 0)) == re.sub(
        r"\s+", "", text
    )


@pytest.mark.parametrize("method", ["word-local", "candidates"])
def test_sampled_verification_corrects_counts_and_switches_to_all(
    tiny_tokenizer, sample_texts, method
):
    ch = _chunker(tiny_tokenizer, 62, method, verify="sample")
    if method == "candidates":
        take = ch._take
        ch._take = lambda d, cand, cut, k, nxt: take(d, cand, cut, k - 1, nxt)  # miscounted
    else:
        cut = ch._cut_local

        def miscounted(*args):
            chunks = cut(*args)
            for c in chunks or ():
                c.tokens -= 1
            return chunks

        ch._cut_local = miscounted
    chunks = list(ch.chunk(sample_texts))
    assert ch.verify == "all"
    late = chunks[len(chunks) // 2 :]
    assert all(_retokenized(tiny_tokenizer, c.text) == c.tokens for c in late)


def test_packing_efficiency():
    assert packing_efficiency([126] * 10, 128) == 1.0
    assert packing_efficiency([62, 62], 128) == 1.0  # two halves share one row
    assert packing_efficiency({126: 98, 20: 2}, 128) == pytest.approx(
        (98 * 128 + 2 * 22) / (99 * 128)
    )
    assert packing_efficiency([], 128) == 1.0


# ------------------------------------------------------------------ byte-level tokenizers


@pytest.fixture(scope="module", params=["llama3", "gpt2", "smollm2"])
def byte_level(request, sample_texts):
    from tests.helpers.tokenizers import train_byte_level_tokenizer

    return train_byte_level_tokenizer(sample_texts, 800, request.param)


def _count(tok, text: str) -> int:
    return len(tok.encode(text, add_special_tokens=False).ids)


@pytest.mark.parametrize("max_tokens,overlap", [(126, 0), (30, 6), (510, 0)])
def test_word_start_chunks_are_token_exact(byte_level, sample_texts, max_tokens, overlap):
    ch = Chunker(byte_level, max_tokens, overlap=overlap, verify="none")
    assert ch.method == "word-start"
    chunks = list(ch.chunk(sample_texts))
    assert ch.stats["fallback_docs"] == 0
    assert [_count(byte_level, c.text) for c in chunks] == [c.tokens for c in chunks]
    assert max(c.tokens for c in chunks) <= max_tokens
    last = {c.doc_index: c.index for c in chunks}
    inner = [c.tokens for c in chunks if c.index != last[c.doc_index]]
    assert sum(n == max_tokens for n in inner) >= 0.95 * len(inner)
    if not overlap:
        for d, text in enumerate(sample_texts):
            assert "".join(c.text for c in chunks if c.doc_index == d) == text


def test_word_start_on_random_text_and_segments(byte_level, sample_texts):
    docs = _random_docs(sample_texts, 30, seed=11)
    docs.append("Special <|end_of_text|> text goes to the candidate method. " * 10)
    for segment_chars in (100, 16384):
        ch = Chunker(byte_level, 40, verify="none")
        ch.segment_chars = segment_chars
        chunks = list(ch.chunk(docs))
        assert [_count(byte_level, c.text) for c in chunks] == [c.tokens for c in chunks]
        assert max(c.tokens for c in chunks) <= 40
        for d, text in enumerate(docs[:-1]):
            assert "".join(c.text for c in chunks if c.doc_index == d) == text
        assert ch.stats["fallback_docs"] >= 1  # the special-token document


def test_word_start_table_matches_the_tokenizer(byte_level):
    from cosmosage.dataprep.corpus.chunk import _word_start_table

    lens, starts, special, boundary = _word_start_table(byte_level)
    text = "The café's Ω_m ≈ 0.31 and 宇宙 here\n\n  spaced  out words"
    enc = byte_level.encode(text, add_special_tokens=False)
    assert sum(lens[i] for i in enc.ids) == len(text)
    pos = 0
    for i, (a, _) in zip(enc.ids, enc.offsets, strict=True):
        if starts[i]:
            assert pos == a and text[a] == " " and not text[a + 1].isspace()
        if boundary[i] and lens[i]:
            assert pos == a
        pos += lens[i]
    assert special[byte_level.token_to_id("<|end_of_text|>")]
