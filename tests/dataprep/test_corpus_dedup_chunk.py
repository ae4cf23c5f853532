"""Exact and near-duplicate removal, decontamination, and token-exact chunking."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from corpus_fixtures import prose

from dataprep.chunk import Chunker, packing_efficiency
from dataprep.clean import clean_text
from dataprep.dedup import Decontaminator, Deduplicator, MinHasher, exact_key, read_eval_prompts

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize(
    "max_tokens,overlap,paragraph",
    [(126, 0, False), (30, 6, False), (126, 0, True), (510, 0, False)],
)
def test_chunks_are_token_exact(tiny_tokenizer, sample_texts, max_tokens, overlap, paragraph):
    ch = Chunker(tiny_tokenizer, max_tokens, overlap=overlap, paragraph=paragraph, verify="none")
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


def test_chunks_without_overlap_lose_no_text(tiny_tokenizer, sample_texts):
    chunks = list(Chunker(tiny_tokenizer, 126).chunk(sample_texts))
    for d, text in enumerate(sample_texts):
        joined = "".join(c.text for c in chunks if c.doc_index == d)
        assert re.sub(r"\s+", "", joined) == re.sub(r"\s+", "", text)


def test_overlap_repeats_tokens_between_chunks(tiny_tokenizer, sample_texts):
    chunks = [c for c in Chunker(tiny_tokenizer, 40, overlap=10).chunk(sample_texts[:1])]
    a, b = chunks[0].text, chunks[1].text
    assert b.lstrip()[:10] in a


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


@pytest.mark.parametrize("lengths_table", [True, False])
def test_chunks_exact_with_multibyte_characters(tiny_tokenizer, sample_texts, lengths_table):
    text = " ".join(
        w + (" 宇∫é" if i % 15 == 0 else "") for i, w in enumerate(sample_texts[0].split())
    )
    ch = Chunker(tiny_tokenizer, 30, verify="none")
    if not lengths_table:
        ch._lens = None  # offsets from the tokenizer instead
    chunks = list(ch.chunk([text, "宇宙" * 400]))
    for c in chunks:
        assert _retokenized(tiny_tokenizer, c.text) == c.tokens <= 30
    # a document of multibyte characters only is cut between characters, not bytes
    inner = [c for c in chunks if c.doc_index == 0][:-1]
    assert sum(c.tokens == 30 for c in inner) >= 0.8 * len(inner)
    assert re.sub(r"\s+", "", "".join(c.text for c in chunks if c.doc_index == 0)) == re.sub(
        r"\s+", "", text
    )


def test_sampled_verification_corrects_counts_and_switches_to_all(tiny_tokenizer, sample_texts):
    ch = Chunker(tiny_tokenizer, 62, verify="sample")
    take = ch._take
    ch._take = lambda d, cand, cut, k, nxt: take(d, cand, cut, k - 1, nxt)  # miscounted chunks
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
