"""Token-exact chunks for continued pretraining.

Each chunk, tokenized on its own (as Axolotl's `type: completion` does), has at most
`max_tokens` tokens: exactly that many for nearly all chunks, a few fewer for some (a
cut never splits the bytes of one character; see also `tolerance`), and fewer for the
last chunk of a document. With `max_tokens = sequence_len - 2` (room for BOS and EOS)
and `sample_packing: true`, packed rows are full and nothing is truncated.

Three methods, chosen from the tokenizer (`method="auto"`):

**Word-local** (Llama-2 and Mistral style: BPE with byte fallback, a normalizer that
prepends `▁` and turns spaces into `▁`, no pre-tokenizer, and no vocabulary piece with a
`▁` after another character, which `_word_local` checks). Each document is encoded once,
in segments split at spaces, without offsets. In such a tokenizer every word start
(a `▁` after another character) is a token boundary in any encoding, and BPE merges on
either side of a boundary never depend on the other side; so a chunk that starts at a
word start encodes, on its own, to exactly the document's tokens from there, and a chunk
that starts inside a word differs only in its first partial word (encoded on its own
then, and cached). Cuts are placed from a table of how many characters each token id
covers. About 1.0x the text is encoded.

**Word-start** (byte-level BPE with a regex pre-tokenizer without look-behind: Llama-3,
GPT-2). A space followed by a non-space character always begins a pre-token there, a
regex scan started at a pre-token start splits the rest as the whole scan did, and BPE
never merges across pre-tokens; so a chunk has the document's tokens between the first
and last word start it holds, and a partial word at either end is encoded on its own
(cached). Each document is encoded once, as above.

**Candidates** (any other fast tokenizer, `paragraph=True`, or a document the methods
above do not fit, such as one holding special-token text): a candidate piece of text
a little longer than `max_tokens` tokens (estimated from the running
characters-per-token) is encoded on its own and cut at the start of token number
`max_tokens`; the text before a BPE token boundary encodes to exactly the tokens before
it, and the surplus is encoded again as the start of the next candidate (about 13% extra
work at 126 tokens). Candidates are encoded without offsets where the per-token length
table fits (checked per candidate), else with them. For tokenizers that are not BPE,
use `verify="all"`.

`verify` re-encodes chunks: "all", "none", or "sample" (every 50th chunk, switching to
"all" for the rest of the run if one sample disagrees). The re-encoding is queued behind
the encoding batches, and documents are handed out once their chunks are verified.
"""

from __future__ import annotations

import logging
from array import array
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cosmosage.dataprep.io import DataError

log = logging.getLogger(__name__)


def backend_tokenizer(tokenizer):
    """A private `tokenizers.Tokenizer` (no truncation or padding) from a HF fast
    tokenizer, a `tokenizers.Tokenizer`, or a path to a model folder / tokenizer.json."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        tok = Tokenizer.from_str(tokenizer.to_str())
    elif hasattr(tokenizer, "backend_tokenizer"):
        tok = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    else:
        from pathlib import Path

        p = Path(str(tokenizer))
        if p.is_dir() and (p / "tokenizer.json").exists():
            tok = Tokenizer.from_file(str(p / "tokenizer.json"))
        elif p.is_file():
            tok = Tokenizer.from_file(str(p))
        else:
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(str(tokenizer))
            if not hasattr(hf, "backend_tokenizer"):
                raise DataError(
                    f"{tokenizer}: a fast (tokenizers) tokenizer is needed for chunking"
                )
            tok = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok


def _plain_bpe(tok) -> dict | None:
    """The tokenizer's JSON description when its model is BPE without dropout, subword
    prefix or word suffix (so a piece's characters are the text's), else None."""
    import json

    spec = json.loads(tok.to_str())
    model = spec.get("model", {})
    if (
        model.get("type") != "BPE"
        or model.get("dropout")
        or model.get("continuing_subword_prefix")
        or model.get("end_of_word_suffix")
    ):
        return None
    return spec


def _char_lengths(tok):
    """Per token id, how many characters of the text it covers, and how many characters
    the normalizer adds in front of a text; (None, 0) when the tokenizer does not fit this
    (not BPE, or a probe disagrees with the offsets the tokenizer reports). Lets candidates
    be encoded without offsets, which is the costlier part of encoding for short texts.
    A byte-fallback token covers its character when it is the character's first byte."""
    import re

    import numpy as np

    spec = _plain_bpe(tok)
    if spec is None:
        return None, 0
    model = spec["model"]
    lens = np.ones(tok.get_vocab_size(with_added_tokens=True), dtype=np.int64)
    byte = re.compile(r"<0x([0-9A-Fa-f]{2})>")
    for piece, i in tok.get_vocab(with_added_tokens=True).items():
        m = byte.fullmatch(piece) if model.get("byte_fallback") else None
        if m:
            lens[i] = 0 if int(m.group(1), 16) & 0xC0 == 0x80 else 1
        else:
            lens[i] = len(piece)
    probe = "Hubble's H_0 = 67.4 km/s/Mpc; Ω_m ≈ 0.315 (Planck 2018)\n\n$x^2$ and so on."
    enc = tok.encode(probe, add_special_tokens=False)
    ends = np.cumsum(lens[enc.ids])
    prefix = int(ends[-1]) - len(probe)
    for j, (a, _) in enumerate(enc.offsets):
        start = int(ends[j - 1]) - prefix if j else 0
        if j and lens[enc.ids[j]] and max(start, 0) != a:
            return None, 0
    return lens.tolist(), prefix


METHODS = ("auto", "word-local", "word-start", "candidates")

_METASPACE = {
    "type": "Sequence",
    "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
    ],
}


def _word_local(tok, lens, prefix):
    """(length table, word-start flags, special-token flags) per token id, and whether a
    text starting with a space still gets a `▁` prepended, when the word-local method is
    exact for this tokenizer, else None: BPE without dropout or ignore_merges, spaces made
    `▁` and one prepended by the Llama/Mistral normalizer (or a non-splitting Metaspace
    pre-tokenizer), and no piece with a `▁` after another character (so each word start
    is a boundary in every encoding)."""
    if lens is None or prefix != 1:
        return None
    spec = _plain_bpe(tok)
    if spec is None or spec["model"].get("ignore_merges"):
        return None
    pre = spec.get("pre_tokenizer")
    if pre is None and spec.get("normalizer") == _METASPACE:
        lead_space = True  # the Llama-2 / Mistral-7B-v0.1 form: "▁" is always prepended
    elif (
        spec.get("normalizer") is None
        and isinstance(pre, dict)
        and pre.get("type") == "Metaspace"
        and pre.get("replacement") == "\u2581"
        and pre.get("split") is False
        and pre.get("prepend_scheme") in ("first", "always")
    ):
        lead_space = False  # the newer form: no "▁" prepended to a text starting with a space
    else:
        return None
    vocab = tok.get_vocab(with_added_tokens=True)
    if "\u2581" not in vocab:
        return None
    size = len(lens)
    starts = [False] * size
    special = [False] * size
    for piece, i in vocab.items():
        if "\u2581" in piece[1:] and any(
            c == "\u2581" and piece[j] != "\u2581" for j, c in enumerate(piece[1:])
        ):
            return None
        starts[i] = piece.startswith("\u2581")
    for added in spec.get("added_tokens", []):
        special[added["id"]] = True
    return lens, starts, special, lead_space


def _byte_chars() -> dict[str, int]:
    """The byte-level alphabet: the printable character that stands for each byte value
    (printable Latin-1 bytes stand for themselves, the other 68 take code points from 256
    on, in byte order)."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = iter(range(256, 512))
    return {chr(b if b in keep else next(extra)): b for b in range(256)}


def _regex_pre_tokenizer(pre) -> bool:
    """A byte-level pre-tokenizer whose regex has no look-behind (GPT-2's, or a Split with
    its own regex such as Llama-3's), adding no prefix space."""
    if not isinstance(pre, dict):
        return False
    if pre.get("type") == "ByteLevel":
        return pre.get("use_regex", True) and not pre.get("add_prefix_space")
    if pre.get("type") != "Sequence" or len(pre.get("pretokenizers", [])) != 2:
        return False
    split, byte_level = pre["pretokenizers"]
    regex = (split.get("pattern") or {}).get("Regex")
    return (
        split.get("type") == "Split"
        and isinstance(regex, str)
        and "(?<" not in regex
        and split.get("behavior") == "Isolated"
        and not split.get("invert")
        and byte_level.get("type") == "ByteLevel"
        and not byte_level.get("use_regex", True)
        and not byte_level.get("add_prefix_space")
    )


def _word_start_table(tok):
    """For byte-level BPE with a regex pre-tokenizer (GPT-2, Llama-3 style): per token
    id, how many characters it covers (its bytes that start a character), whether it
    opens with a space and then a non-space character (with these regexes that space
    always begins a pre-token, and a regex without look-behind, started there, splits the
    rest as the whole text's scan did; so a chunk cut before such a token encodes on its
    own to exactly the tokens it had in the document), and whether it is an added token;
    None when the tokenizer is not of that kind or a probe disagrees with its offsets."""
    spec = _plain_bpe(tok)
    if (
        spec is None
        or spec.get("normalizer") is not None
        or not _regex_pre_tokenizer(spec.get("pre_tokenizer"))
    ):
        return None
    byte_of = _byte_chars()
    size = tok.get_vocab_size(with_added_tokens=True)
    lens, starts, special = [1] * size, [False] * size, [False] * size
    boundary = [True] * size  # the token's first byte starts a character
    added = {a["id"]: a["content"] for a in spec.get("added_tokens", [])}
    for piece, i in tok.get_vocab(with_added_tokens=True).items():
        if i in added:
            lens[i], special[i] = len(added[i]), True
            continue
        try:
            raw = bytes(byte_of[c] for c in piece)
        except KeyError:
            return None
        lens[i] = sum(1 for b in raw if b & 0xC0 != 0x80)
        boundary[i] = not raw or raw[0] & 0xC0 != 0x80
        starts[i] = raw[:1] == b" " and len(raw) > 1 and not raw[1:2].isspace()
    probe = "Hubble's H_0 = 67.4 km/s/Mpc; Ω_m ≈ 0.315 (Planck 2018)\n\n  $x^2$ and so on. 宇宙 é"
    enc = tok.encode(probe, add_special_tokens=False)
    end = 0
    for i, (a, _) in zip(enc.ids, enc.offsets, strict=True):
        if starts[i] and a != end:
            return None
        end += lens[i]
    if end != len(probe):
        return None
    return lens, starts, special, boundary


def _single_space(
    text: str, lo: int, hi: int, forward: bool = False, letter_after: bool = False
) -> int:
    """The last (or first) space in text[lo + 1 : hi] with a non-space on both sides (a
    letter after it, with `letter_after`), or -1."""

    def bad(q: int) -> bool:
        after = text[q + 1 : q + 2]
        return text[q - 1] == " " or after == " " or (letter_after and not after.isalpha())

    q = text.find(" ", lo + 1, hi) if forward else text.rfind(" ", lo + 1, hi)
    while q > lo and bad(q):
        q = text.find(" ", q + 1, hi) if forward else text.rfind(" ", lo + 1, q)
    return q


def _segments(text: str, size: int, keep_space: bool = False) -> list[tuple[int, str]]:
    """`text` as (start, piece) pieces of about `size` characters, each cut at a single
    space between two other characters. For a word-local tokenizer the space is dropped:
    the pieces' encodings, joined, are the encoding of the whole text (the piece after a
    cut starts with the `▁` that space normalizes to). With `keep_space` (byte-level
    tokenizers) the cut is before a space and a letter, which begin a pre-token, and the
    space opens the next piece."""
    out: list[tuple[int, str]] = []
    start, n = 0, len(text)
    while n - start > size:
        q = _single_space(text, start, start + size, letter_after=keep_space)
        if q <= start:
            q = _single_space(text, start + size - 1, n, forward=True, letter_after=keep_space)
            if q <= start:
                break
        out.append((start, text[start:q]))
        start = q if keep_space else q + 1
    out.append((start, text[start:]))
    return out


@dataclass
class _Doc:
    key: Any
    text: str
    index: int
    cpt: float
    pos: int = 0
    boost: float = 1.0  # widening after a candidate fell short
    chunks: list = field(default_factory=list)


@dataclass
class Chunk:
    doc_index: int
    index: int
    text: str
    tokens: int


class Chunker:
    """Cuts documents into token-exact chunks; `stats` counts the work it did."""

    def __init__(
        self,
        tokenizer,
        max_tokens: int,
        overlap: int = 0,
        paragraph: bool = False,
        verify: str = "sample",
        batch_docs: int = 256,
        method: str = "auto",
    ):
        if max_tokens < 8:
            raise DataError(
                f"max_tokens {max_tokens} is too small (sequence_len must leave room for BOS/EOS)"
            )
        if not 0 <= overlap < max_tokens // 2:
            raise DataError(f"overlap {overlap} must be in [0, {max_tokens // 2})")
        if verify not in ("all", "none", "sample"):
            raise DataError(f"verify must be all, none or sample, not {verify!r}")
        self.tok = backend_tokenizer(tokenizer)
        self.max_tokens = max_tokens
        self.overlap = overlap
        self.paragraph = paragraph
        self.verify = verify
        self.batch_docs = batch_docs
        self.groups = 2  # batches in flight: one being encoded while this thread cuts
        self.chars_per_token = 3.0
        # Candidate length over the estimate: larger wastes encoding on the surplus,
        # smaller means more candidates that fall short and are encoded again.
        # The spread of characters per token shrinks with chunk length (about 7% at 126
        # tokens of the tiny tokenizer), so long chunks need less room.
        self.margin = max(1.03, 1 + 1.1 / max_tokens**0.5)
        # A candidate that falls short by at most this share is kept as an (almost full)
        # chunk instead of being encoded again; packing absorbs the few missing tokens.
        self.tolerance = 0.02
        self.smoothing = 0.95  # weight of the previous characters-per-token estimate
        self._emitted = 0
        self._lens, self._prefix = (None, 0) if paragraph else _char_lengths(self.tok)
        if method not in METHODS:
            raise DataError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
        self._local = self._word_starts = None
        if method in ("auto", "word-local"):
            self._local = _word_local(self.tok, self._lens, self._prefix)
        if method in ("auto", "word-start") and not paragraph and self._local is None:
            self._word_starts = _word_start_table(self.tok)
        self.method = (
            "word-local" if self._local else "word-start" if self._word_starts else "candidates"
        )
        if method != "auto" and method != self.method:
            raise DataError(
                f"the {method} method does not fit this tokenizer"
                + (" with paragraph alignment" if paragraph else "")
                + " (word-local: Llama-2/Mistral-style BPE; word-start: byte-level BPE with"
                " a regex pre-tokenizer); use method auto or candidates"
            )
        if self._local or self._word_starts:
            import numpy as np

            table, flags, special = (self._local or self._word_starts)[:3]
            self._tables_np = (
                np.array(table, dtype=np.int64),
                np.array(flags, dtype=bool),
                np.array(special, dtype=bool),
            )
            if self._word_starts:
                self._boundary_np = np.array(self._word_starts[3], dtype=bool)
        # word-local and word-start: documents are encoded in pieces of about this many
        # characters, batches hold about this many (memory), and partial words at chunk
        # ends are encoded alone, their token counts cached
        self.segment_chars = 16384
        self.batch_chars = 1_000_000
        self._partials: dict[str, int] = {}
        self.stats = {
            "method": self.method,
            "encoded_chars": 0,
            "retries": 0,
            "verified": 0,
            "over_budget": 0,
            "partials_encoded": 0,
            "fallback_docs": 0,
        }

    def encode_len(self, texts: list[str]) -> list[int]:
        return [len(e) for e in self.tok.encode_batch_fast(texts, add_special_tokens=False)]

    def stream(self, docs: Iterable[tuple[Any, str]]) -> Iterator[tuple[Any, list[Chunk]]]:
        """(key, text) pairs in, (key, chunks of that text) out as each document finishes.

        Documents are read in batches; while one batch is being encoded (the tokenizer
        releases the GIL and uses its own threads), this thread cuts the previous batch's
        chunks and reads (and cleans) the next documents. Documents come out in a
        deterministic order that need not be the input order; `doc_index` of a chunk is
        its document's input position.
        """
        items = ((i, key, text) for i, (key, text) in enumerate(docs))
        if self.method == "candidates":
            yield from self._stream_candidates(items)
        else:
            yield from self._stream_local(items)

    def _stream_candidates(self, items) -> Iterator[tuple[Any, list[Chunk]]]:
        """The candidate method. Up to `batch_docs` documents are in flight in two
        groups; every round encodes one candidate from each document of a group, so
        rounds stay large however long some documents are."""
        from concurrent.futures import ThreadPoolExecutor

        it = iter(items)
        ng = self.groups
        groups: list[list[_Doc]] = [[] for _ in range(ng)]
        pending: list = [None] * ng
        half = max(1, self.batch_docs // ng)

        def refill(g: int) -> None:
            nonlocal it
            while it is not None and len(groups[g]) < half:
                try:
                    index, key, text = next(it)
                except StopIteration:
                    it = None
                    break
                groups[g].append(_Doc(key, text, index, self.chars_per_token))

        encode = self.tok.encode_batch if self._lens is None else self.tok.encode_batch_fast

        def submit(g: int) -> None:
            cands = [self._candidate(d) for d in groups[g]]
            texts = [c[0] for c in cands]
            pending[g] = (cands, pool.submit(encode, texts, add_special_tokens=False))

        waiting: deque = deque()
        with ThreadPoolExecutor(1) as pool:
            for g in range(ng):
                refill(g)
                if groups[g]:
                    submit(g)
            g = 0
            while any(pending):
                if pending[g] is None:
                    g = (g + 1) % ng
                    continue
                cands, fut = pending[g]
                encs = fut.result()
                pending[g] = None
                still, done, picked = [], [], []
                encoded = 0
                for d, (cand, at_end), enc in zip(groups[g], cands, encs, strict=True):
                    encoded += len(cand)
                    if self._advance(d, cand, at_end, enc):
                        done.append(d)
                        picked.append(self._pick(d.chunks))
                    else:
                        still.append(d)
                del encs
                self.stats["encoded_chars"] += encoded
                if done:
                    waiting.append(self._verify(pool, [(d.key, d.chunks) for d in done], picked))
                groups[g] = still
                refill(g)
                if groups[g]:
                    submit(g)
                g = (g + 1) % ng
                # Finished documents wait for their verification, encoded after the rounds
                # already submitted, and leave in the order they finished.
                while waiting and (waiting[0][2] is None or waiting[0][2].done()):
                    yield from self._release(waiting.popleft())
            while waiting:
                yield from self._release(waiting.popleft())

    def _stream_local(self, items) -> Iterator[tuple[Any, list[Chunk]]]:
        """The word-local and word-start methods: each batch of documents is encoded in
        one call, in segments; documents they do not fit go through the candidate method."""
        from concurrent.futures import ThreadPoolExecutor

        cut = self._cut_local if self._local else self._cut_word_start
        it = iter(items)

        def read() -> list:
            batch, size = [], 0
            for item in it:
                batch.append(item)
                size += len(item[2])
                if len(batch) >= self.batch_docs or size >= self.batch_chars:
                    break
            return batch

        def submit(batch: list):
            segs, spans = [], []
            for _, _, text in batch:
                parts = _segments(text, self.segment_chars, keep_space=bool(self._word_starts))
                spans.append((len(segs), [start for start, _ in parts]))
                segs.extend(seg for _, seg in parts)
            self.stats["encoded_chars"] += sum(map(len, segs))
            return (
                batch,
                spans,
                pool.submit(self.tok.encode_batch_fast, segs, add_special_tokens=False),
            )

        waiting: deque = deque()
        with ThreadPoolExecutor(1) as pool:
            inflight = deque()
            for _ in range(2):  # one batch encoding while the previous one is cut
                if batch := read():
                    inflight.append(submit(batch))
            while inflight:
                batch, spans, fut = inflight.popleft()
                encs = fut.result()
                if nxt := read():
                    inflight.append(submit(nxt))
                done, picked, fallback = [], [], []
                for (index, key, text), (first, starts) in zip(batch, spans, strict=True):
                    chunks = cut(index, text, encs[first : first + len(starts)], starts)
                    if chunks is None:
                        fallback.append((index, key, text))
                    else:
                        done.append((key, chunks))
                        picked.append(self._pick(chunks))
                del encs
                if done:
                    waiting.append(self._verify(pool, done, picked))
                if fallback:
                    self.stats["fallback_docs"] += len(fallback)
                    yield from self._stream_candidates(iter(fallback))
                while waiting and (waiting[0][2] is None or waiting[0][2].done()):
                    yield from self._release(waiting.popleft())
            while waiting:
                yield from self._release(waiting.popleft())

    def _cut_local(self, index: int, text: str, encs, seg_starts: list[int]) -> list[Chunk] | None:
        """Chunks of one document from its segments' encodings; None when the encoding
        does not fit the method (special-token text, a literal `▁`, lengths that do not
        add up, a word longer than a chunk)."""
        import numpy as np

        if "\u2581" in text:  # a literal `▁` would pass for a space at a cut
            return None
        table, word_start, _, lead_space = self._local
        ids: list[int] = []
        parts = []  # per token: its start in the normalized text ("▁" + text)
        # A segment starting at text index t0 (after a dropped space) maps its normalized
        # position j to the document's normalized position t0 + j; it holds end - t0 - 1
        # characters of text, `end` being the next segment's start (or len + 1).
        segments = self._segment_arrays(encs, seg_starts, len(text) + 1)
        if segments is None:
            return None
        for seg_ids, _, lens, ends, t0 in segments:
            ends -= np.maximum(lens, 1)  # a continuation byte starts where its character does
            ends += t0
            parts.append(ends)
            if ids:
                ids.extend(seg_ids)
            else:
                ids = seg_ids
        if not parts:
            return []
        starts = parts[0] if len(parts) == 1 else np.concatenate(parts)
        n = len(ids)
        chunks: list[Chunk] = []
        m = self.max_tokens
        s = 0
        while s < n:
            a = int(starts[s])
            if a == 0 or word_start[ids[s]]:
                # A word start: the chunk (after the space) encodes to the document's tokens.
                cstart, head, t_q = a, 0, s
                if cstart >= len(text):  # only the text's trailing space is left
                    break
                if not lead_space and text[a : a + 1] == " ":
                    return None  # this tokenizer prepends no `▁` to a chunk opening with a space
            else:
                # Inside a word: the rest of the word is encoded on its own; from the next
                # word start on, the tokens are the document's.
                cstart = a - 1
                q = text.find(" ", cstart + 1)
                if q < 0:
                    word, t_q = text[cstart:], n
                else:
                    word = text[cstart:q]
                    t_q = int(starts.searchsorted(q + 1))
                    if t_q >= n or starts[t_q] != q + 1:
                        return None
                head = self._fresh(word)
                if head >= m:
                    return None
            e = t_q + m - head
            if e >= n:
                chunks.append(Chunk(index, len(chunks), text[cstart:], head + n - t_q))
                break
            while e > t_q and not table[ids[e]]:  # a continuation byte: cut before its character
                e -= 1
            chunks.append(
                Chunk(index, len(chunks), text[cstart : int(starts[e]) - 1], head + e - t_q)
            )
            nxt = e - self.overlap if self.overlap else e
            while nxt < e and not table[ids[nxt]]:
                nxt += 1
            s = max(nxt, s + 1)
        return chunks

    def _segment_arrays(self, encs, seg_starts: list[int], total: int):
        """Per non-empty segment: its ids, their array, per-token character counts, their
        running sums, and its start; None when a segment's counts do not add up to its
        characters (up to the next segment's start, or `total`) or it holds an added token."""
        import numpy as np

        table_np, _, special_np = self._tables_np
        out = []
        for enc, t0, end in zip(encs, seg_starts, [*seg_starts[1:], total], strict=True):
            seg_ids = enc.ids
            if not seg_ids:
                continue
            arr = np.frombuffer(array("q", seg_ids), dtype=np.int64)
            lens = table_np[arr]
            ends = np.cumsum(lens)
            if int(ends[-1]) != end - t0 or special_np[arr].any():
                return None
            out.append((seg_ids, arr, lens, ends, t0))
        return out

    def _fresh(self, text: str) -> int:
        """Tokens of `text` encoded on its own (cached: partial words repeat)."""
        n = self._partials.get(text)
        if n is None:
            n = len(self.tok.encode(text, add_special_tokens=False))
            self.stats["partials_encoded"] += 1
            if len(self._partials) > 200_000:
                self._partials.clear()
            self._partials[text] = n
        return n

    def _cut_word_start(
        self, index: int, text: str, encs, seg_starts: list[int]
    ) -> list[Chunk] | None:
        """Chunks of one document from a byte-level encoding. Word starts (a space and a
        non-space) begin pre-tokens, so between two of them a chunk has the document's
        tokens; a partial word at either end of a chunk is encoded on its own. None when
        the encoding does not fit (special-token text, lengths that do not add up)."""
        import numpy as np

        flags_np = self._tables_np[1]
        starts_parts, word_parts, boundary_parts = [], [], []
        n = 0
        segments = self._segment_arrays(encs, seg_starts, len(text))
        if segments is None:
            return None
        for seg_ids, arr, lens, ends, t0 in segments:
            starts_parts.append(ends - lens + t0)  # exact where a token starts a character
            word_parts.append(np.flatnonzero(flags_np[arr]) + n)
            boundary_parts.append(self._boundary_np[arr])
            n += len(seg_ids)
        if not n:
            return []
        starts = np.concatenate(starts_parts)
        words = np.concatenate(word_parts)
        boundary = np.concatenate(boundary_parts)
        n_words = len(words)

        def start(i: int) -> int:
            return int(starts[i]) if i < n else len(text)

        def next_word(i: int) -> int:  # the first word start at or after token i
            j = int(words.searchsorted(i))
            return int(words[j]) if j < n_words else n

        chunks: list[Chunk] = []
        m = self.max_tokens
        s = 0
        while s < n:
            begin = start(s) if s else 0
            w1 = s if s == 0 else next_word(s)
            head = self._fresh(text[begin : start(w1)]) if w1 > s else 0
            if head >= m:
                return None  # one word longer than a chunk
            if head + n - w1 <= m:
                chunks.append(Chunk(index, len(chunks), text[begin:], head + n - w1))
                break
            e = w1 + m - head  # where the budget ends, in the document's tokens
            j = int(words.searchsorted(e, side="right")) - 1
            w = max(int(words[j]) if j >= 0 else 0, w1)  # the word that holds token e
            cut, total = w, head + w - w1
            if w < e:  # end inside that word: its first part encoded on its own
                k = e
                while k > w:
                    if boundary[k]:
                        tail = self._fresh(text[start(w) : start(k)])
                        if head + w - w1 + tail <= m:
                            cut, total = k, head + w - w1 + tail
                            break
                    k -= 1
            if cut <= s:
                return None
            chunks.append(Chunk(index, len(chunks), text[begin : start(cut)], total))
            nxt = cut
            if self.overlap:
                nxt = cut - self.overlap
                while nxt < cut and not boundary[nxt]:
                    nxt += 1
            s = max(nxt, s + 1)
            while s < cut and not boundary[s]:
                s += 1
        return chunks

    def _verify(self, pool, done: list[tuple[Any, list[Chunk]]], picked: list[list[Chunk]]):
        """Queue the re-encoding of the picked chunks of finished documents."""
        texts = [c.text for p in picked for c in p]
        return done, picked, (pool.submit(self.encode_len, texts) if texts else None)

    def _release(self, entry) -> Iterator[tuple[Any, list[Chunk]]]:
        done, picked, check = entry
        lengths = iter(check.result() if check is not None else ())
        for (key, chunks), p in zip(done, picked, strict=True):
            self._finish(chunks, p, [next(lengths) for _ in p])
            yield key, chunks

    def _candidate(self, d: _Doc) -> tuple[str, bool]:
        text, p = d.text, d.pos
        while p < len(text) and text[p].isspace():
            p += 1
        d.pos = p
        end = p + int(self.max_tokens * d.cpt * self.margin * d.boost) + 2
        if end < len(text):
            sp = text.find(" ", end, end + 200)
            end = sp if sp >= 0 else end
        return text[p:end], end >= len(text)

    def _advance(self, d: _Doc, cand: str, at_end: bool, enc) -> bool:
        """Take a chunk from the encoded candidate; True when the document is finished."""
        n = len(enc)
        if not cand:  # candidates start at a non-space character, so only the end is empty
            return True
        if n <= self.max_tokens:
            if at_end or n >= self.max_tokens * (1 - self.tolerance):
                # The rest of the document, or a candidate within `tolerance` of full.
                d.chunks.append(Chunk(d.index, len(d.chunks), cand, n))
                d.pos += len(cand)
                d.boost = 1.0
                return at_end
            # The estimate was short: widen the window and try again.
            self.stats["retries"] += 1
            d.boost *= 1.1 * self.max_tokens / max(n, 1)
            return False
        k = self.max_tokens
        if self._lens is not None:
            lens = self._lens
            ids = enc.ids
            if sum(map(lens.__getitem__, ids)) - self._prefix == len(cand):
                while k > 0 and not lens[ids[k]]:  # a continuation byte: cut before its character
                    k -= 1
                cut = len(cand) - sum(map(lens.__getitem__, ids[k:]))
                if cut > 0:
                    nxt = cut
                    if self.overlap:
                        nxt = len(cand) - sum(map(lens.__getitem__, ids[k - self.overlap :]))
                    return self._take(d, cand, cut, k, nxt)
                k = self.max_tokens
            # The lengths do not add up for this text (a normalizer that changes lengths,
            # an unknown character), or no cut was found: encode it again with offsets.
            enc = self.tok.encode(cand, add_special_tokens=False)
        span = enc.token_to_chars(k)
        while k > 1 and span and span == enc.token_to_chars(k - 1):  # inside one character
            k -= 1
        cut = span[0] if span else len(cand)
        if self.paragraph:
            para = cand.rfind("\n\n", 0, cut)
            if para > cut // 2:
                j = enc.char_to_token(para)
                if j is not None and (span := enc.token_to_chars(j)) and span[0] > 0:
                    k, cut = j, span[0]
        if cut <= 0:  # a single token wider than the window; cannot happen for sane input
            cut, k = len(cand), n
        nxt = cut
        if self.overlap:
            span = enc.token_to_chars(k - self.overlap)
            if span and span[0] > 0:
                nxt = span[0]
        return self._take(d, cand, cut, k, nxt)

    def _take(self, d: _Doc, cand: str, cut: int, k: int, nxt: int) -> bool:
        """Emit `cand[:cut]` (k tokens); the next candidate starts at `nxt`."""
        d.chunks.append(Chunk(d.index, len(d.chunks), cand[:cut], k))
        seen = cut / max(k, 1)
        d.cpt = max(0.5, self.smoothing * d.cpt + (1 - self.smoothing) * seen)
        self.chars_per_token = 0.99 * self.chars_per_token + 0.01 * seen
        d.boost = 1.0
        d.pos += nxt if nxt > 0 else cut
        return False

    def chunk_texts(self, texts: list[str]) -> Iterator[Chunk]:
        """Chunks of a list of documents, in document order."""
        done = dict(self.stream(enumerate(texts)))
        for i in range(len(texts)):
            yield from done.get(i, [])

    def _pick(self, chunks: list[Chunk]) -> list[Chunk]:
        """The chunks of a finished document to verify."""
        if self.verify == "none" or not chunks:
            return []
        first = self._emitted
        self._emitted += len(chunks)
        if self.verify == "sample":
            return [c for i, c in enumerate(chunks, first) if i % 50 == 0]
        return list(chunks)

    def _finish(self, chunks: list[Chunk], picked: list[Chunk], lengths: list[int]) -> None:
        """Apply the verified lengths of `picked`; after a disagreement, verify the rest."""
        self.stats["verified"] += len(picked)
        for c, n in zip(picked, lengths, strict=True):
            if n != c.tokens:
                if self.verify == "sample":
                    log.warning(
                        "chunk re-encodes to %d tokens, not %d: verifying every chunk from now on",
                        n,
                        c.tokens,
                    )
                    self.verify = "all"
                c.tokens = n
        if self.verify == "all" and len(picked) < len(chunks):
            seen = {id(c) for c in picked}
            rest = [c for c in chunks if id(c) not in seen]
            self.stats["verified"] += len(rest)
            for c, n in zip(rest, self.encode_len([c.text for c in rest]), strict=True):
                c.tokens = n
        for c in chunks:
            if c.tokens > self.max_tokens:
                self.stats["over_budget"] += 1

    def chunk(self, texts: Iterable[str]) -> Iterator[Chunk]:
        """Chunks of a stream of documents, each document's together, in finishing order."""
        for _, chunks in self.stream(enumerate(texts)):
            yield from chunks


def packing_efficiency(
    lengths: Iterable[int] | Mapping[int, int], sequence_len: int, specials: int = 2
) -> float:
    """Share of packed-row positions holding tokens when records of `lengths` tokens (a
    list, or a histogram {length: count}) plus BOS/EOS are packed into rows of
    `sequence_len` by best-fit decreasing, as a sample-packing trainer does."""
    import bisect
    from collections import Counter

    hist = lengths if isinstance(lengths, Mapping) else Counter(lengths)
    used = rows = 0
    free: list[int] = []  # remaining room of open rows, sorted
    for n in sorted(hist, reverse=True):
        s = min(int(n) + specials, sequence_len)
        count = int(hist[n])
        used += s * count
        if s == sequence_len:
            rows += count
            continue
        for _ in range(count):
            i = bisect.bisect_left(free, s)
            if i < len(free):
                room = free.pop(i) - s
            else:
                rows += 1
                room = sequence_len - s
            if room > 0:
                bisect.insort(free, room)
    return used / (rows * sequence_len) if rows else 1.0
