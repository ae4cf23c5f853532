"""The candidate method (any fast tokenizer; also paragraph alignment, and documents the
word methods do not fit, such as ones holding special-token text).

A candidate piece of text a little longer than `max_tokens` tokens (estimated from the
running characters-per-token) is encoded on its own and cut at the start of token number
`max_tokens`; the text before a BPE token boundary encodes to exactly the tokens before
it, and the surplus is encoded again as the start of the next candidate (about 13% extra
work at 126 tokens). Candidates are encoded without offsets where the per-token character
table fits (checked per candidate), else with them. For tokenizers that are not BPE, use
`verify="all"`.

Up to `batch_docs` documents are in flight in groups; every round encodes one candidate
from each document of a group, so rounds stay large however long some documents are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cosmosage.dataprep.corpus.chunk.records import Chunk, DocText, Finished
from cosmosage.dataprep.corpus.chunk.verify import VerifyQueue


@dataclass
class Doc:
    """A document in flight through the candidate method."""

    key: Any
    text: str
    index: int
    cpt: float  # its characters-per-token estimate
    pos: int = 0  # where its next candidate starts
    boost: float = 1.0  # widening after a candidate fell short
    chunks: list[Chunk] = field(default_factory=list)


class Candidate(NamedTuple):
    text: str
    at_end: bool  # it runs to the end of its document


@dataclass
class Estimate:
    """Characters per token as the cuts have measured them, across documents: new
    documents start from it."""

    chars_per_token: float = 3.0
    smoothing: float = 0.95  # weight of a document's previous estimate


def take(d: Doc, cand: str, cut: int, k: int, nxt: int, estimate: Estimate) -> bool:
    """Emit `cand[:cut]` (k tokens); the next candidate starts at `nxt`. False: the
    document goes on."""
    d.chunks.append(Chunk(d.index, len(d.chunks), cand[:cut], k))
    seen = cut / max(k, 1)
    d.cpt = max(0.5, estimate.smoothing * d.cpt + (1 - estimate.smoothing) * seen)
    estimate.chars_per_token = 0.99 * estimate.chars_per_token + 0.01 * seen
    d.boost = 1.0
    d.pos += nxt if nxt > 0 else cut
    return False


# `take` with its estimate bound: (document, candidate text, cut, tokens, next start).
Take = Callable[[Doc, str, int, int, int], bool]


@dataclass
class CandidateCutter:
    """Sizes each document's next candidate, and cuts a chunk from its encoding."""

    tok: Any
    max_tokens: int
    overlap: int
    paragraph: bool  # cut at a paragraph break in the second half of a candidate
    margin: float  # candidate length over the estimate
    tolerance: float  # a candidate this share short of full is kept as a chunk
    lens: list[int] | None  # the character table; None: cut at the tokenizer's offsets
    prefix: int  # characters the normalizer adds in front of a text
    take: Take
    stats: dict[str, Any]  # counts "retries" and "encoded_chars"

    def candidate(self, d: Doc) -> Candidate:
        text, p = d.text, d.pos
        while p < len(text) and text[p].isspace():
            p += 1
        d.pos = p
        end = p + int(self.max_tokens * d.cpt * self.margin * d.boost) + 2
        if end < len(text):
            sp = text.find(" ", end, end + 200)
            end = sp if sp >= 0 else end
        return Candidate(text[p:end], end >= len(text))

    def advance(self, d: Doc, candidate: Candidate, enc: Any) -> bool:
        """Take a chunk from the encoded candidate; True when the document is finished."""
        cand, at_end = candidate
        n = len(enc)
        if not cand:  # candidates start at a non-space character, so only the end is empty
            return True
        if n <= self.max_tokens:
            if at_end or (not self.paragraph and n >= self.max_tokens * (1 - self.tolerance)):
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
        if self.lens is not None:
            lens = self.lens
            ids = enc.ids
            if sum(map(lens.__getitem__, ids)) - self.prefix == len(cand):
                while k > 0 and not lens[ids[k]]:  # a continuation byte: cut before its character
                    k -= 1
                cut = len(cand) - sum(map(lens.__getitem__, ids[k:]))
                if cut > 0:
                    nxt = cut
                    if self.overlap:
                        nxt = len(cand) - sum(map(lens.__getitem__, ids[k - self.overlap :]))
                    return self.take(d, cand, cut, k, nxt)
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
        return self.take(d, cand, cut, k, nxt)


class _Round(NamedTuple):
    """One group's candidates, being encoded."""

    candidates: list[Candidate]
    encodings: Future


def stream_candidates(
    docs: Iterable[DocText],
    cutter: CandidateCutter,
    estimate: Estimate,
    queue: Callable[[Executor], VerifyQueue],
    batch_docs: int,
    groups: int,
) -> Iterator[Finished]:
    """Finished documents, cut by the candidate method: while one group's round is being
    encoded, this thread cuts the other group's and refills it with new documents."""
    it: Iterator[DocText] | None = iter(docs)
    members: list[list[Doc]] = [[] for _ in range(groups)]
    pending: list[_Round | None] = [None] * groups
    half = max(1, batch_docs // groups)
    tok = cutter.tok
    encode = tok.encode_batch if cutter.lens is None else tok.encode_batch_fast

    def refill(g: int) -> None:
        nonlocal it
        while it is not None and len(members[g]) < half:
            try:
                doc = next(it)
            except StopIteration:
                it = None
                break
            members[g].append(Doc(doc.key, doc.text, doc.index, estimate.chars_per_token))

    def submit(g: int) -> None:
        cands = [cutter.candidate(d) for d in members[g]]
        texts = [c.text for c in cands]
        pending[g] = _Round(cands, pool.submit(encode, texts, add_special_tokens=False))

    with ThreadPoolExecutor(1) as pool:
        verified = queue(pool)
        for g in range(groups):
            refill(g)
            if members[g]:
                submit(g)
        g = 0
        while any(pending):
            current = pending[g]
            if current is None:
                g = (g + 1) % groups
                continue
            encs = current.encodings.result()
            pending[g] = None
            still, done = [], []
            encoded = 0
            for d, cand, enc in zip(members[g], current.candidates, encs, strict=True):
                encoded += len(cand.text)
                (done if cutter.advance(d, cand, enc) else still).append(d)
            del encs
            cutter.stats["encoded_chars"] += encoded
            verified.add([(d.key, d.chunks) for d in done])
            members[g] = still
            refill(g)
            if members[g]:
                submit(g)
            g = (g + 1) % groups
            # Finished documents wait for their verification, encoded after the rounds
            # already submitted, and leave in the order they finished.
            yield from verified.ready()
        yield from verified.drain()
