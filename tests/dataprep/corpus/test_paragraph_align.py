"""Paragraph alignment: with it, a chunk whose token window holds a paragraph break in its
second half ends exactly at the last such break; without it, chunks fill their windows
and cut through paragraphs."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.corpus.chunk import Chunker
from tests.dataprep.corpus.fixtures import PROSE

MAX_TOKENS = 62


WORDS = PROSE.replace(".", "").replace(",", "").split()


def sentence(rng: random.Random, n_words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(n_words))
    return text[0].upper() + text[1:] + "."


def paragraph(rng: random.Random, tok, lo: int, hi: int) -> str:
    """A paragraph of PROSE words whose token count lies in [lo, hi]."""
    while True:
        text = sentence(rng, rng.randint(lo, hi) // 2 + 1)
        if lo <= len(tok(text, add_special_tokens=False)["input_ids"]) <= hi:
            return text


def documents(tok) -> list[str]:
    """Documents whose paragraph breaks fall in the second half of chunk windows: some
    of paragraphs of 60-90% of a window, one with several breaks in each window, and one
    with a break in a first half only."""
    rng = random.Random(7)
    lo, hi = int(0.6 * MAX_TOKENS), int(0.9 * MAX_TOKENS)
    docs = ["\n\n".join(paragraph(rng, tok, lo, hi) for _ in range(8)) for _ in range(4)]
    docs.append("\n\n".join(paragraph(rng, tok, 8, 14) for _ in range(24)))
    docs.append(
        paragraph(rng, tok, 6, 10)
        + "\n\n"
        + " ".join(paragraph(rng, tok, 30, 40) for _ in range(3))
        + "\n\n"
        + paragraph(rng, tok, 30, 40)
    )
    return docs


def many_documents() -> list[str]:
    """Twenty documents of thirty paragraphs of 15-40 words: windows end at every
    distance from a break, so some first candidates come out within the chunker's
    tolerance of full."""
    rng = random.Random(3)
    return ["\n\n".join(sentence(rng, rng.randint(15, 40)) for _ in range(30)) for _ in range(20)]


def window_end(tok, text: str, start: int) -> int | None:
    """Where a full window of MAX_TOKENS tokens from `start` ends (the start of the token
    after it), or None when the rest of the text fits in one window."""
    piece = text[start : start + 20 * MAX_TOKENS]  # far more than a window's tokens
    enc = tok(piece, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= MAX_TOKENS:
        return None
    return start + enc["offset_mapping"][MAX_TOKENS][0]


def cuts(tok, text: str, chunks) -> list[dict]:
    """Each chunk but the last of a document, placed in it: its start, its end, the end of
    its full window and the last paragraph break in that window's second half (if any)."""
    out, pos = [], 0
    for c in chunks:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        assert text.startswith(c.text, pos), (pos, c.text[:40])
        end = pos + len(c.text)
        if c is not chunks[-1]:
            window = window_end(tok, text, pos)
            assert window is not None
            brk = text.rfind("\n\n", pos, window)
            second_half = brk - pos > (window - pos) // 2
            out.append(
                {"start": pos, "end": end, "window": window, "break": brk, "late": second_half}
            )
        pos = end
    assert not text[pos:].strip()  # the chunks cover the whole document
    return out


def chunk_docs(tok, docs: list[str], paragraph: bool) -> list[list]:
    ch = Chunker(tok, MAX_TOKENS, paragraph=paragraph, method="candidates", verify="all")
    chunks = list(ch.chunk_texts(docs))
    assert all(c.tokens <= MAX_TOKENS for c in chunks)
    return [[c for c in chunks if c.doc_index == i] for i in range(len(docs))]


def placed_chunks(tok, docs: list[str], paragraph: bool) -> list[tuple[str, dict]]:
    return [
        (text, cut)
        for text, chunks in zip(docs, chunk_docs(tok, docs, paragraph), strict=True)
        for cut in cuts(tok, text, chunks)
    ]


def missed_breaks(placed: list[tuple[str, dict]]) -> list[dict]:
    """Chunks whose window has a break in its second half but that do not stop exactly
    where that paragraph ends (leaving the break to the next chunk)."""
    return [
        {**c, "window text": t[c["start"] : c["window"]]}
        for t, c in placed
        if c["late"] and (c["end"] != c["break"] or t[c["end"] : c["end"] + 2] != "\n\n")
    ]


def test_aligned_chunks_end_at_the_last_break_in_the_second_half(tiny_tokenizer):
    placed = placed_chunks(tiny_tokenizer, documents(tiny_tokenizer), True)
    late = [c for _, c in placed if c["late"]]
    assert len(late) >= 20  # the documents exercise the rule
    missed = missed_breaks(placed)
    assert not missed, f"{len(missed)} of {len(late)} chunks miss their break: {missed[:3]}"
    # where the window has no break in its second half (the last document's long
    # paragraph, after a short one), the chunk fills the window and cuts mid-paragraph
    early = [(t, c) for t, c in placed if not c["late"]]
    assert any(c["break"] > c["start"] for _, c in early)
    for text, c in early:
        assert c["end"] == c["window"], text[c["start"] : c["window"]]


def test_aligned_chunks_end_at_breaks_when_a_candidate_is_nearly_full(tiny_tokenizer):
    placed = placed_chunks(tiny_tokenizer, many_documents(), True)
    late = [c for _, c in placed if c["late"]]
    assert len(late) >= 200
    missed = missed_breaks(placed)
    assert not missed, f"{len(missed)} of {len(late)} chunks miss their break: {missed[:3]}"


def test_unaligned_chunks_fill_their_windows_through_paragraphs(tiny_tokenizer):
    docs = documents(tiny_tokenizer) + many_documents()
    placed = placed_chunks(tiny_tokenizer, docs, False)
    late = [(t, c) for t, c in placed if c["late"]]
    assert len(late) >= 200
    at_break = [c for t, c in late if t[c["end"] : c["end"] + 2] == "\n\n"]
    assert len(at_break) <= 0.1 * len(late), at_break
    assert sum(c["end"] == c["window"] for _, c in placed) >= 0.9 * len(placed)


@pytest.mark.parametrize("align", [True, False])
def test_corpus_command_paragraph_align(tmp_path, tiny_model, tiny_tokenizer, align):
    """Through `data corpus`: with --paragraph-align, a document of paragraphs of 60-90%
    of a window comes out one paragraph per chunk; without it, no chunk is a paragraph."""
    from cosmosage.tools.cli.main import main

    rng = random.Random(11)
    lo, hi = int(0.6 * MAX_TOKENS), int(0.9 * MAX_TOKENS)
    paragraphs = [paragraph(rng, tiny_tokenizer, lo, hi) for _ in range(12)]
    src = tmp_path / "docs"
    src.mkdir()
    (src / "paper.md").write_text("\n\n".join(paragraphs) + "\n")
    out = tmp_path / "corpus.jsonl"
    args = ["data", "corpus", str(src), "--tokenizer", str(tiny_model)]
    args += ["--sequence-len", str(MAX_TOKENS + 2), "--out", str(out), "--no-filter"]
    args += ["--no-dedup", "--verify", "all"] + (["--paragraph-align"] if align else [])
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    texts = [json.loads(x)["text"] for x in out.read_text().splitlines()]
    if align:
        assert texts == paragraphs
    else:
        assert not set(texts[:-1]) & set(paragraphs)
        assert len(texts) < len(paragraphs)
