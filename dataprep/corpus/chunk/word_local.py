"""The word-local method (Llama-2 and Mistral style: BPE with byte fallback, spaces made
`▁` and one prepended, no vocabulary piece with a `▁` after another character).

Each document is encoded once, in segments (see `segmented`). In such a tokenizer every
word start (a `▁` after another character) is a token boundary in any encoding, and BPE
merges on either side of a boundary never depend on the other side; so a chunk that
starts at a word start encodes, on its own, to exactly the document's tokens from there,
and a chunk that starts inside a word differs only in its first partial word (encoded on
its own then, and cached). Cuts are placed from the per-token character table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cosmosage.dataprep.corpus.chunk.probe import WordLocalTable
from cosmosage.dataprep.corpus.chunk.records import Chunk
from cosmosage.dataprep.corpus.chunk.segmented import PartialWords, TokenArrays, segment_tokens


@dataclass
class WordLocalCutter:
    """Cuts one document's chunks from its segments' encodings."""

    table: WordLocalTable
    max_tokens: int
    overlap: int
    partials: PartialWords
    arrays: TokenArrays = field(init=False)

    def __post_init__(self) -> None:
        self.arrays = TokenArrays.of(self.table.lens, self.table.word_start, self.table.special)

    def __call__(
        self, index: int, text: str, encs: list, seg_starts: list[int]
    ) -> list[Chunk] | None:
        """The chunks of document `index`; None when the encoding does not fit the method
        (special-token text, a literal `▁`, lengths that do not add up, a word longer
        than a chunk)."""
        import numpy as np

        if "\u2581" in text:  # a literal `▁` would pass for a space at a cut
            return None
        table, word_start, lead_space = (
            self.table.lens,
            self.table.word_start,
            self.table.lead_space,
        )
        ids: list[int] = []
        parts = []  # per token: its start in the normalized text ("▁" + text)
        # A segment starting at text index t0 (after a dropped space) maps its normalized
        # position j to the document's normalized position t0 + j; it holds end - t0 - 1
        # characters of text, `end` being the next segment's start (or len + 1).
        segments = segment_tokens(encs, seg_starts, len(text) + 1, self.arrays)
        if segments is None:
            return None
        for seg in segments:
            ends = seg.ends
            ends -= np.maximum(seg.lens, 1)  # a continuation byte starts where its character does
            ends += seg.start
            parts.append(ends)
            if ids:
                ids.extend(seg.ids)
            else:
                ids = seg.ids
        if not parts:
            return []
        starts = parts[0] if len(parts) == 1 else np.concatenate(parts)
        n = len(ids)
        chunks: list[Chunk] = []
        m, overlap, fresh = self.max_tokens, self.overlap, self.partials.count
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
                head = fresh(word)
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
            nxt = e - overlap if overlap else e
            while nxt < e and not table[ids[nxt]]:
                nxt += 1
            s = max(nxt, s + 1)
        return chunks
