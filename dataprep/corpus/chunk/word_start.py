"""The word-start method (byte-level BPE with a regex pre-tokenizer without look-behind:
Llama-3, GPT-2).

Each document is encoded once, in segments (see `segmented`). A space followed by a
non-space character always begins a pre-token there, a regex scan started at a pre-token
start splits the rest as the whole scan did, and BPE never merges across pre-tokens; so
a chunk has the document's tokens between the first and last word start it holds, and a
partial word at either end is encoded on its own (cached).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cosmosage.dataprep.corpus.chunk.probe import WordStartTable
from cosmosage.dataprep.corpus.chunk.records import Chunk
from cosmosage.dataprep.corpus.chunk.segmented import PartialWords, TokenArrays, segment_tokens

if TYPE_CHECKING:
    import numpy as np


@dataclass
class WordStartCutter:
    """Cuts one document's chunks from its segments' encodings."""

    table: WordStartTable
    max_tokens: int
    overlap: int
    partials: PartialWords
    arrays: TokenArrays = field(init=False)
    boundary: np.ndarray = field(init=False)  # per token id: its first byte starts a character

    def __post_init__(self) -> None:
        import numpy as np

        self.arrays = TokenArrays.of(self.table.lens, self.table.starts, self.table.special)
        self.boundary = np.array(self.table.boundary, dtype=bool)

    def __call__(
        self, index: int, text: str, encs: list, seg_starts: list[int]
    ) -> list[Chunk] | None:
        """The chunks of document `index`; None when the encoding does not fit the method
        (special-token text, lengths that do not add up, a word longer than a chunk)."""
        import numpy as np

        starts_parts, word_parts, boundary_parts = [], [], []
        n = 0
        segments = segment_tokens(encs, seg_starts, len(text), self.arrays)
        if segments is None:
            return None
        for seg in segments:
            starts_parts.append(
                seg.ends - seg.lens + seg.start
            )  # exact where a token starts a character
            word_parts.append(np.flatnonzero(self.arrays.word_start[seg.arr]) + n)
            boundary_parts.append(self.boundary[seg.arr])
            n += len(seg.ids)
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
        m, overlap, fresh = self.max_tokens, self.overlap, self.partials.count
        s = 0
        while s < n:
            begin = start(s) if s else 0
            w1 = s if s == 0 else next_word(s)
            head = fresh(text[begin : start(w1)]) if w1 > s else 0
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
                        tail = fresh(text[start(w) : start(k)])
                        if head + w - w1 + tail <= m:
                            cut, total = k, head + w - w1 + tail
                            break
                    k -= 1
            if cut <= s:
                return None
            chunks.append(Chunk(index, len(chunks), text[begin : start(cut)], total))
            nxt = cut
            if overlap:
                nxt = cut - overlap
                while nxt < cut and not boundary[nxt]:
                    nxt += 1
            s = max(nxt, s + 1)
            while s < cut and not boundary[s]:
                s += 1
        return chunks
