"""The pass the word methods share: each batch of documents is encoded in one call, in
segments of about `segment_chars` cut at single spaces, without offsets; each document's
chunks are then cut from its segments' tokens, and a document they do not fit goes
through the candidate method. Partial words at chunk ends are encoded on their own."""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from cosmosage.dataprep.corpus.chunk.records import Chunk, DocText, Finished
from cosmosage.dataprep.corpus.chunk.verify import VerifyQueue

if TYPE_CHECKING:
    import numpy as np

# One document's chunks from (its input position, text, its segments' encodings, the
# segments' starts in the text); None when the method does not fit the document.
Cutter = Callable[[int, str, list, list[int]], "list[Chunk] | None"]


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


def split_segments(text: str, size: int, keep_space: bool = False) -> list[tuple[int, str]]:
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


class TokenArrays(NamedTuple):
    """Per token id, as arrays: characters covered, whether it starts a word, whether it
    is an added token."""

    lens: np.ndarray
    word_start: np.ndarray
    special: np.ndarray

    @classmethod
    def of(cls, lens: list[int], word_start: list[bool], special: list[bool]) -> TokenArrays:
        import numpy as np

        return cls(
            np.array(lens, dtype=np.int64),
            np.array(word_start, dtype=bool),
            np.array(special, dtype=bool),
        )


class SegmentTokens(NamedTuple):
    """One encoded segment: its token ids (as a list and an array), the characters each
    covers, their running sums, and where the segment starts."""

    ids: list[int]
    arr: np.ndarray
    lens: np.ndarray
    ends: np.ndarray
    start: int


def segment_tokens(
    encs: list, seg_starts: list[int], total: int, arrays: TokenArrays
) -> list[SegmentTokens] | None:
    """The non-empty segments of one document; None when a segment's counts do not add up
    to its characters (up to the next segment's start, or `total`) or it holds an added
    token."""
    import numpy as np

    out = []
    for enc, t0, end in zip(encs, seg_starts, [*seg_starts[1:], total], strict=True):
        seg_ids = enc.ids
        if not seg_ids:
            continue
        arr = np.frombuffer(array("q", seg_ids), dtype=np.int64)
        lens = arrays.lens[arr]
        ends = np.cumsum(lens)
        if int(ends[-1]) != end - t0 or arrays.special[arr].any():
            return None
        out.append(SegmentTokens(seg_ids, arr, lens, ends, t0))
    return out


class PartialWords:
    """Token counts of texts encoded on their own, cached (partial words repeat)."""

    limit = 200_000  # cached texts; the cache is emptied when it outgrows this

    def __init__(self, tok: Any, stats: dict[str, Any]) -> None:
        self._tok = tok
        self._stats = stats  # counts "partials_encoded"
        self._counts: dict[str, int] = {}

    def count(self, text: str) -> int:
        n = self._counts.get(text)
        if n is None:
            n = len(self._tok.encode(text, add_special_tokens=False))
            self._stats["partials_encoded"] += 1
            if len(self._counts) > self.limit:
                self._counts.clear()
            self._counts[text] = n
        return n


@dataclass(frozen=True)
class Batching:
    """How documents are read and encoded."""

    batch_docs: int  # documents in a batch, at most
    batch_chars: int  # characters in a batch, about (memory)
    segment_chars: int  # characters in a segment, about
    keep_space: bool  # segments open with the space they were cut at (byte-level)


class _Span(NamedTuple):
    """Where a document's segments are in its batch's encodings."""

    first: int
    starts: list[int]  # each segment's start in the document's text


class _Batch(NamedTuple):
    docs: list[DocText]
    spans: list[_Span]
    encodings: Future


def stream_segmented(
    docs: Iterable[DocText],
    tok: Any,
    cut: Cutter,
    batching: Batching,
    queue: Callable[[Executor], VerifyQueue],
    fallback: Callable[[Iterator[DocText]], Iterator[Finished]],
    stats: dict[str, Any],
) -> Iterator[Finished]:
    """Finished documents, cut by `cut` from batches encoded in segments; documents it
    does not fit go to `fallback`. One batch is encoded while the previous one is cut."""
    it = iter(docs)

    def read() -> list[DocText]:
        batch, size = [], 0
        for doc in it:
            batch.append(doc)
            size += len(doc.text)
            if len(batch) >= batching.batch_docs or size >= batching.batch_chars:
                break
        return batch

    def submit(batch: list[DocText]) -> _Batch:
        segs: list[str] = []
        spans = []
        for doc in batch:
            parts = split_segments(doc.text, batching.segment_chars, batching.keep_space)
            spans.append(_Span(len(segs), [start for start, _ in parts]))
            segs.extend(seg for _, seg in parts)
        stats["encoded_chars"] += sum(map(len, segs))
        return _Batch(
            batch, spans, pool.submit(tok.encode_batch_fast, segs, add_special_tokens=False)
        )

    with ThreadPoolExecutor(1) as pool:
        verified = queue(pool)
        inflight: deque[_Batch] = deque()
        for _ in range(2):  # one batch encoding while the previous one is cut
            if batch := read():
                inflight.append(submit(batch))
        while inflight:
            batch_docs, spans, fut = inflight.popleft()
            encs = fut.result()
            if nxt := read():
                inflight.append(submit(nxt))
            done: list[Finished] = []
            unfit: list[DocText] = []
            for doc, (first, starts) in zip(batch_docs, spans, strict=True):
                chunks = cut(doc.index, doc.text, encs[first : first + len(starts)], starts)
                if chunks is None:
                    unfit.append(doc)
                else:
                    done.append((doc.key, chunks))
            del encs
            verified.add(done)
            if unfit:
                stats["fallback_docs"] += len(unfit)
                yield from fallback(iter(unfit))
            yield from verified.ready()
        yield from verified.drain()
