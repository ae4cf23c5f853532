"""What the chunker reads (a document with its key and position) and hands out (chunks),
and how records of given token counts pack into training rows."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple


class DocText(NamedTuple):
    """A document to chunk: its input position, the caller's key for it, its text."""

    index: int
    key: Any
    text: str


@dataclass
class Chunk:
    """A piece of a document and its token count (verification may correct the count)."""

    doc_index: int
    index: int
    text: str
    tokens: int


# A finished document as the chunker hands it out: (its key, its chunks).
Finished = tuple[Any, list[Chunk]]


def packing_efficiency(
    lengths: Iterable[int] | Mapping[int, int], sequence_len: int, specials: int = 2
) -> float:
    """Share of packed-row positions holding tokens when records of `lengths` tokens (a
    list, or a histogram {length: count}) plus BOS/EOS are packed into rows of
    `sequence_len` by best-fit decreasing, as a sample-packing trainer does."""
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
