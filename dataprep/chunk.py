"""Token-exact chunks for continued pretraining.

Each chunk, tokenized on its own (as Axolotl's `type: completion` does), has at most
`max_tokens` tokens: exactly that many for nearly all chunks, up to 2% fewer for a few
(see `tolerance`), and fewer for the last chunk of a document. With
`max_tokens = sequence_len - 2` (room for BOS and EOS) and `sample_packing: true`,
packed rows are full and nothing is truncated.

How: a candidate piece of text a little longer than `max_tokens` tokens (estimated from
the running characters-per-token) is encoded on its own, and cut at the start of token
number `max_tokens`. For BPE the text before a token boundary encodes to exactly the
tokens before it (a merge across the cut never happened, so the merges on its left
side are the same), so the chunk needs no second encoding; the surplus is encoded again
as the start of the next candidate, about 13% extra work at 126 tokens and less for
longer chunks. Candidates of many documents are encoded together with the fast
tokenizer's batch encoder. For tokenizers that are not BPE, use `verify="all"`.

Offsets cost more than the BPE itself on short texts, so candidates are encoded without
them (`encode_batch_fast`) when the tokenizer allows: the cut is placed from a table of
how many characters each token id covers (a byte-fallback token covers its character when
it is the first byte), checked per candidate by the lengths adding up to the candidate's
length, and the candidate is encoded again with offsets when they do not. A cut never
falls between the bytes of one character. With `paragraph=True` offsets are always used.

`verify` re-encodes chunks: "all", "none", or "sample" (every 50th chunk, switching to
"all" for the rest of the run if one sample disagrees). The re-encoding is queued behind
the candidate batches, and documents are handed out, in the order they finished, once
their chunks are verified.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

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
                raise ValueError(
                    f"{tokenizer}: a fast (tokenizers) tokenizer is needed for chunking"
                )
            tok = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok


def _char_lengths(tok):
    """Per token id, how many characters of the text it covers, and how many characters
    the normalizer adds in front of a text; (None, 0) when the tokenizer does not fit this
    (not BPE, or a probe disagrees with the offsets the tokenizer reports). Lets candidates
    be encoded without offsets, which is the costlier part of encoding for short texts.
    A byte-fallback token covers its character when it is the character's first byte."""
    import json
    import re

    import numpy as np

    model = json.loads(tok.to_str()).get("model", {})
    if model.get("type") != "BPE" or model.get("dropout"):
        return None, 0
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
    ):
        if max_tokens < 8:
            raise ValueError(
                f"max_tokens {max_tokens} is too small (sequence_len must leave room for BOS/EOS)"
            )
        if not 0 <= overlap < max_tokens // 2:
            raise ValueError(f"overlap {overlap} must be in [0, {max_tokens // 2})")
        if verify not in ("all", "none", "sample"):
            raise ValueError(f"verify must be all, none or sample, not {verify!r}")
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
        self.stats = {"encoded_chars": 0, "retries": 0, "verified": 0, "over_budget": 0}
        self._emitted = 0
        self._lens, self._prefix = (None, 0) if paragraph else _char_lengths(self.tok)

    def encode_len(self, texts: list[str]) -> list[int]:
        return [len(e) for e in self.tok.encode_batch_fast(texts, add_special_tokens=False)]

    def stream(self, docs: Iterable[tuple[Any, str]]) -> Iterator[tuple[Any, list[Chunk]]]:
        """(key, text) pairs in, (key, chunks of that text) out as each document finishes.

        Up to `batch_docs` documents are in flight in two groups; every round encodes one
        candidate from each document of a group, so rounds stay large however long some
        documents are. While one group is being encoded (the tokenizer releases the GIL
        and uses its own threads), this thread cuts the other group's chunks and reads
        (and cleans) the next documents. Documents finish in a deterministic order that
        is not the input order; `doc_index` of a chunk is its document's input position.
        """
        from concurrent.futures import ThreadPoolExecutor

        it = iter(docs)
        n_in = 0
        ng = self.groups
        groups: list[list[_Doc]] = [[] for _ in range(ng)]
        pending: list = [None] * ng
        half = max(1, self.batch_docs // ng)

        def refill(g: int) -> None:
            nonlocal n_in, it
            while it is not None and len(groups[g]) < half:
                try:
                    key, text = next(it)
                except StopIteration:
                    it = None
                    break
                groups[g].append(_Doc(key, text, n_in, self.chars_per_token))
                n_in += 1

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
                    texts = [c.text for p in picked for c in p]
                    check = pool.submit(self.encode_len, texts) if texts else None
                    waiting.append((done, picked, check))
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

    def _release(self, entry) -> Iterator[tuple[Any, list[Chunk]]]:
        done, picked, check = entry
        lengths = iter(check.result() if check is not None else ())
        for d, p in zip(done, picked, strict=True):
            self._finish(d.chunks, p, [next(lengths) for _ in p])
            yield d.key, d.chunks

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
