"""The Chunker: checks its settings, reads the tokenizer's profile, and runs the method
that fits (word-local, word-start or candidates) with the verification around it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from typing import Any

from cosmosage.dataprep.corpus.chunk.candidates import (
    CandidateCutter,
    Doc,
    Estimate,
    stream_candidates,
    take,
)
from cosmosage.dataprep.corpus.chunk.probe import backend_tokenizer, probe
from cosmosage.dataprep.corpus.chunk.records import Chunk, DocText, Finished
from cosmosage.dataprep.corpus.chunk.segmented import Batching, PartialWords, stream_segmented
from cosmosage.dataprep.corpus.chunk.verify import MODES, Verifier, VerifyQueue
from cosmosage.dataprep.corpus.chunk.word_local import WordLocalCutter
from cosmosage.dataprep.corpus.chunk.word_start import WordStartCutter
from cosmosage.dataprep.records import DataError


class Chunker:
    """Cuts documents into token-exact chunks; `stats` counts the work it did.

    The batching and candidate settings (`batch_docs`, `batch_chars`, `segment_chars`,
    `groups`, `margin`, `tolerance`) are read when a stream starts."""

    def __init__(
        self,
        tokenizer: Any,
        max_tokens: int,
        overlap: int = 0,
        paragraph: bool = False,
        verify: str = "sample",
        batch_docs: int = 256,
        method: str = "auto",
    ) -> None:
        if max_tokens < 8:
            raise DataError(
                f"the sequence length leaves {max_tokens} token(s) a chunk after BOS/EOS; "
                "at least 8 are needed: raise --sequence-len"
            )
        if not 0 <= overlap < max_tokens // 2:
            raise DataError(f"overlap {overlap} must be in [0, {max_tokens // 2})")
        if verify not in MODES:
            raise DataError(f"verify must be all, none or sample, not {verify!r}")
        self.tok = backend_tokenizer(tokenizer)
        self.max_tokens = max_tokens
        self.overlap = overlap
        self.paragraph = paragraph
        self.batch_docs = batch_docs
        self.groups = 2  # candidate groups in flight: one being encoded while this thread cuts
        # Candidate length over the estimate: larger wastes encoding on the surplus,
        # smaller means more candidates that fall short and are encoded again.
        # The spread of characters per token shrinks with chunk length (about 7% at 126
        # tokens of the tiny tokenizer), so long chunks need less room.
        self.margin = max(1.03, 1 + 1.1 / max_tokens**0.5)
        # A candidate that falls short by at most this share is kept as an (almost full)
        # chunk instead of being encoded again; packing absorbs the few missing tokens.
        self.tolerance = 0.02
        self.profile = probe(self.tok, method, paragraph)
        self.method = self.profile.method
        # The character table candidates are cut with (None: the tokenizer's offsets).
        self._lens, self._prefix = self.profile.chars or (None, 0)
        # word-local and word-start: documents are encoded in pieces of about this many
        # characters, and batches hold about this many (memory)
        self.segment_chars = 16384
        self.batch_chars = 1_000_000
        self.stats: dict[str, Any] = {
            "method": self.method,
            "encoded_chars": 0,
            "retries": 0,
            "verified": 0,
            "over_budget": 0,
            "partials_encoded": 0,
            "fallback_docs": 0,
        }
        self._estimate = Estimate()
        self._verifier = Verifier(verify, max_tokens, self.encode_len, self.stats)
        partials = PartialWords(self.tok, self.stats)
        # The cutter of the word method that fits the tokenizer, if one does.
        local, start = self.profile.word_local, self.profile.word_start
        self._cut_local = WordLocalCutter(local, max_tokens, overlap, partials) if local else None
        self._cut_word_start = (
            WordStartCutter(start, max_tokens, overlap, partials) if start else None
        )

    @property
    def verify(self) -> str:
        """The verification mode now ("sample" turns "all" after a disagreement)."""
        return self._verifier.mode

    def encode_len(self, texts: list[str]) -> list[int]:
        return [len(e) for e in self.tok.encode_batch_fast(texts, add_special_tokens=False)]

    def stream(self, docs: Iterable[tuple[Any, str]]) -> Iterator[Finished]:
        """(key, text) pairs in, (key, chunks of that text) out as each document finishes.

        Documents are read in batches; while one batch is being encoded (the tokenizer
        releases the GIL and uses its own threads), this thread cuts the previous batch's
        chunks and reads (and cleans) the next documents. Documents come out in a
        deterministic order that need not be the input order; `doc_index` of a chunk is
        its document's input position.
        """
        items = (DocText(i, key, text) for i, (key, text) in enumerate(docs))
        if self.method == "candidates":
            yield from self._stream_candidates(items)
            return
        batching = Batching(
            self.batch_docs, self.batch_chars, self.segment_chars, self.method == "word-start"
        )
        cut = self._cut_local or self._cut_word_start
        yield from stream_segmented(
            items, self.tok, cut, batching, self._queue, self._stream_candidates, self.stats
        )

    def chunk(self, texts: Iterable[str]) -> Iterator[Chunk]:
        """Chunks of a stream of documents, each document's together, in finishing order."""
        for _, chunks in self.stream(enumerate(texts)):
            yield from chunks

    def chunk_texts(self, texts: list[str]) -> Iterator[Chunk]:
        """Chunks of a list of documents, in document order."""
        done = dict(self.stream(enumerate(texts)))
        for i in range(len(texts)):
            yield from done.get(i, [])

    def _stream_candidates(self, docs: Iterator[DocText]) -> Iterator[Finished]:
        cutter = CandidateCutter(
            self.tok,
            self.max_tokens,
            self.overlap,
            paragraph=self.paragraph,
            margin=self.margin,
            tolerance=self.tolerance,
            lens=self._lens,
            prefix=self._prefix,
            take=self._take,
            stats=self.stats,
        )
        yield from stream_candidates(
            docs, cutter, self._estimate, self._queue, self.batch_docs, self.groups
        )

    def _queue(self, pool: Executor) -> VerifyQueue:
        return VerifyQueue(pool, self._verifier, self._pick)

    def _pick(self, chunks: list[Chunk]) -> list[Chunk]:
        """The chunks of a finished document to verify (called once per document)."""
        return self._verifier.pick(chunks)

    def _take(self, d: Doc, cand: str, cut: int, k: int, nxt: int) -> bool:
        """Emit a candidate's first `cut` characters (k tokens) as a chunk."""
        return take(d, cand, cut, k, nxt, self._estimate)
