"""The re-encoding check: some or all chunks are encoded again on their own, and their
counts corrected where they differ.

Modes: "all", "none", or "sample" (every 50th chunk, switching to "all" for the rest of
the run if one sample disagrees). The re-encoding is queued on the encoding thread behind
the batches already submitted, and finished documents are handed out, in the order they
finished, once their chunks are verified.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, NamedTuple

from cosmosage.dataprep.corpus.chunk.records import Chunk, Finished

log = logging.getLogger(__name__)

MODES = ("all", "none", "sample")
SAMPLE_EVERY = 50


@dataclass
class Verifier:
    """Which chunks to re-encode, and what the re-encoded counts change."""

    mode: str  # one of MODES; "sample" turns "all" after a disagreement
    max_tokens: int
    encode_len: Callable[[list[str]], list[int]]  # token counts of texts, each on its own
    stats: dict[str, Any]  # counts "verified" and "over_budget"
    emitted: int = 0  # chunks of finished documents seen so far (the sampling position)

    def pick(self, chunks: list[Chunk]) -> list[Chunk]:
        """The chunks of a finished document to verify."""
        if self.mode == "none" or not chunks:
            return []
        first = self.emitted
        self.emitted += len(chunks)
        if self.mode == "sample":
            return [c for i, c in enumerate(chunks, first) if i % SAMPLE_EVERY == 0]
        return list(chunks)

    def finish(self, chunks: list[Chunk], picked: list[Chunk], lengths: list[int]) -> None:
        """Apply the verified lengths of `picked`; after a disagreement, verify the rest."""
        self.stats["verified"] += len(picked)
        for c, n in zip(picked, lengths, strict=True):
            if n != c.tokens:
                if self.mode == "sample":
                    log.warning(
                        "chunk re-encodes to %d tokens, not %d: verifying every chunk from now on",
                        n,
                        c.tokens,
                    )
                    self.mode = "all"
                c.tokens = n
        if self.mode == "all" and len(picked) < len(chunks):
            seen = {id(c) for c in picked}
            rest = [c for c in chunks if id(c) not in seen]
            self.stats["verified"] += len(rest)
            for c, n in zip(rest, self.encode_len([c.text for c in rest]), strict=True):
                c.tokens = n
        for c in chunks:
            if c.tokens > self.max_tokens:
                self.stats["over_budget"] += 1


class _Pending(NamedTuple):
    """Finished documents waiting for the re-encoding of their picked chunks."""

    docs: list[Finished]
    picked: list[list[Chunk]]  # per document, the chunks being re-encoded
    check: Future | None  # their token counts, in order; None when nothing was picked


class VerifyQueue:
    """Finished documents of one stream, held until their verification is done."""

    def __init__(
        self, pool: Executor, verifier: Verifier, pick: Callable[[list[Chunk]], list[Chunk]]
    ) -> None:
        self._pool = pool
        self._verifier = verifier
        self._pick = pick  # a finished document's chunks -> those to verify
        self._waiting: deque[_Pending] = deque()

    def add(self, docs: list[Finished]) -> None:
        """Pick the chunks of these finished documents and queue their re-encoding."""
        if not docs:
            return
        picked = [self._pick(chunks) for _, chunks in docs]
        texts = [c.text for p in picked for c in p]
        check = self._pool.submit(self._verifier.encode_len, texts) if texts else None
        self._waiting.append(_Pending(docs, picked, check))

    def ready(self) -> Iterator[Finished]:
        """The documents at the head of the queue whose verification is done."""
        waiting = self._waiting
        while waiting and (waiting[0].check is None or waiting[0].check.done()):
            yield from self._release(waiting.popleft())

    def drain(self) -> Iterator[Finished]:
        """All documents still queued, waiting for their verification."""
        while self._waiting:
            yield from self._release(self._waiting.popleft())

    def _release(self, entry: _Pending) -> Iterator[Finished]:
        lengths = iter(entry.check.result() if entry.check is not None else ())
        for (key, chunks), p in zip(entry.docs, entry.picked, strict=True):
            self._verifier.finish(chunks, p, [next(lengths) for _ in p])
            yield key, chunks
