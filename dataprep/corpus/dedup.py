"""Deduplication and decontamination.

- exact: a hash of the normalised text (case, punctuation and whitespace ignored);
- near: MinHash signatures over word shingles, indexed by datasketch's `MinHashLSH`
  and confirmed by the estimated Jaccard similarity. Signatures are computed here with
  numpy over xxhash word hashes (one vectorised pass per document), which is several
  times faster than hashing each shingle with SHA-1; the LSH index is datasketch's.
- decontamination: word n-grams of evaluation prompts; a chunk sharing one is dropped.

The near-duplicate defaults (`NEAR_THRESHOLD`, `SHINGLE`, `NUM_PERM`, and the LSH bands
and rows from `lsh_params`) are defined here once; the pipeline, `merge-shards` and the
CLI take theirs from here. They are calibrated with `bench/dedup_bench.py`: copies that
differ from their original in about 3% of their words, one dropped or repeated sentence
and re-wrapped lines (as arXiv versions do) have a word 4-gram Jaccard of about 0.7-0.85
with it, while unrelated documents that share acknowledgements, license notices and
section headings stay below 0.35.

The index holds one signature per kept document (num_perm x 4 bytes), not its text.
numpy and xxhash are imported where they are used, so reading the defaults is cheap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

_NORM_RE = re.compile(r"[\W_]+")
# Words as UTF-8 bytes: runs of ASCII letters and digits and any non-ASCII bytes (so
# accented letters and symbols stay inside their word); same words as `normalize` gives
# for ASCII text.
_WORD_BYTES_RE = re.compile(rb"[0-9A-Za-z\x80-\xff]+")

# Near-duplicate defaults.
NEAR_THRESHOLD = 0.6  # estimated Jaccard similarity at or above which a document is dropped
SHINGLE = 4  # words per shingle
NUM_PERM = 128  # MinHash permutations (signature length)
LSH_RECALL = 0.95  # chance that a pair exactly at the threshold becomes an LSH candidate


def lsh_params(
    threshold: float = NEAR_THRESHOLD, num_perm: int = NUM_PERM, recall: float = LSH_RECALL
) -> tuple[int, int]:
    """LSH bands and rows for `threshold`: the most rows per band (fewest chance
    candidates) for which a pair at Jaccard `threshold` still becomes a candidate with
    probability `recall` within `num_perm` rows, and the fewest bands that reach it.

    Candidates are confirmed by the estimated Jaccard similarity, so the LSH only has to
    find every pair at or above the threshold; datasketch's own choice balances misses
    against chance candidates at the threshold and, at threshold 0.6, misses about a third
    of the pairs at Jaccard 0.65 (18 bands of 7 rows, against 22 of 4 here)."""
    for r in range(num_perm, 0, -1):
        p = threshold**r
        if p >= 1.0:
            return 1, r
        if p <= 0.0:
            continue
        bands = math.ceil(math.log1p(-recall) / math.log1p(-p))
        if bands * r <= num_perm:
            return bands, r
    return num_perm, 1


def normalize(text: str) -> str:
    """Lowercase, punctuation to spaces, whitespace collapsed."""
    return " ".join(_NORM_RE.sub(" ", text.lower()).split())


def exact_key(text: str) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(normalize(text).encode())


@dataclass
class MinHasher:
    """MinHash over word `shingle`-grams with `num_perm` hash functions.

    Words are hashed with xxh32, shingles combined from word hashes with numpy, and each
    of the `num_perm` functions is a multiply-shift hash of the shingle hash (odd 64-bit
    multiplier, 64-bit offset, top 32 bits), which needs no modulo.
    """

    num_perm: int = NUM_PERM
    shingle: int = SHINGLE
    seed: int = 1

    def __post_init__(self) -> None:
        import numpy as np

        rng = np.random.default_rng(self.seed)
        self._a = rng.integers(0, 1 << 63, size=self.num_perm, dtype=np.uint64) * np.uint64(
            2
        ) + np.uint64(1)
        self._b = rng.integers(0, 1 << 63, size=self.num_perm, dtype=np.uint64)
        # Per-position multipliers that combine word hashes into a shingle hash.
        self._mult = rng.integers(1, 1 << 32, size=self.shingle, dtype=np.uint64) | np.uint64(1)

    def shingle_hashes(self, text: str) -> np.ndarray:
        import numpy as np
        import xxhash

        words = _WORD_BYTES_RE.findall(text.lower().encode("utf-8"))
        if not words:
            return np.zeros(1, dtype=np.uint64)
        h = np.fromiter(map(xxhash.xxh32_intdigest, words), dtype=np.uint64, count=len(words))
        k = min(self.shingle, len(h))
        n = len(h) - k + 1
        acc = np.zeros(n, dtype=np.uint64)
        for i in range(k):
            acc = acc * np.uint64(0x9E3779B97F4A7C15) + h[i : i + n] * self._mult[i]
        return np.unique(acc)

    def signature(self, text: str) -> np.ndarray:
        """uint32 signature of length num_perm."""
        import numpy as np

        h = self.shingle_hashes(text)
        sig = np.full(self.num_perm, (1 << 32) - 1, dtype=np.uint64)
        shift = np.uint64(32)
        buf = np.empty((min(len(h), 4096), self.num_perm), dtype=np.uint64)
        for start in range(0, len(h), 4096):  # bounded memory for very long documents
            block = h[start : start + 4096, None]
            out = buf[: len(block)]
            np.multiply(block, self._a, out=out)  # wraps modulo 2^64, as intended
            out += self._b
            out >>= shift
            np.minimum(sig, out.min(axis=0), out=sig)
        return sig.astype(np.uint32)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """The Jaccard similarity two MinHash signatures estimate: the share of equal values."""
    return float((a == b).mean())


class NearDuplicateIndex:
    """datasketch MinHashLSH over our signatures; `add` answers the earlier duplicate or None.

    `params` (bands, rows) defaults to `lsh_params(threshold, num_perm)`; a candidate
    counts when its estimated Jaccard similarity is at least `threshold` (0 takes every
    candidate, as pipelines without a check do).

    Clusters are transitive: a duplicate is indexed too, under the first document of its
    cluster, so a revision chain (v1, v2 made from v1, v3 from v2) is one cluster even
    when v3 has drifted too far from v1 to match it; `add` names the cluster's first
    document and the member it matched. The index then holds every document it has seen,
    kept or not."""

    def __init__(
        self,
        threshold: float = NEAR_THRESHOLD,
        num_perm: int = NUM_PERM,
        params: tuple[int, int] | None = None,
    ):
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.num_perm = num_perm
        self.params = params or lsh_params(threshold, num_perm)
        self.lsh = MinHashLSH(num_perm=num_perm, params=self.params)
        self._sigs: dict[str, np.ndarray] = {}
        self._first: dict[str, str] = {}  # a duplicate -> the first document of its cluster

    def _lean(self, sig: np.ndarray):
        import numpy as np
        from datasketch import LeanMinHash

        return LeanMinHash(seed=1, hashvalues=sig.astype(np.uint64), scheme="legacy")

    def add(self, key: str, sig: np.ndarray) -> tuple[str, float, str] | None:
        """Insert `key`. When it is a near duplicate of an indexed key: that cluster's
        first document, the estimated Jaccard similarity with the closest member, and
        that member; else None."""
        m = self._lean(sig)
        best = None
        for other in self.lsh.query(m):
            sim = estimated_jaccard(self._sigs[other], sig)
            if sim >= self.threshold and (best is None or sim > best[1]):
                best = (other, sim)
        self.lsh.insert(key, m, check_duplication=False)
        self._sigs[key] = sig
        if best is None:
            return None
        first = self._first.get(best[0], best[0])
        self._first[key] = first
        return first, best[1], best[0]

    def __len__(self) -> int:
        return len(self._sigs)


class Deduplicator:
    """Exact then near-duplicate check across every document it sees, in order."""

    def __init__(
        self,
        near: bool = True,
        threshold: float = NEAR_THRESHOLD,
        num_perm: int = NUM_PERM,
        shingle: int = SHINGLE,
    ):
        self.exact: dict[str, str] = {}
        self.hasher = MinHasher(num_perm=num_perm, shingle=shingle)
        self.index = NearDuplicateIndex(threshold, num_perm) if near else None

    def check(self, key: str, exact: str, sig: np.ndarray | None) -> str | None:
        """A reason when document `key` duplicates an earlier one, else None (and remember it)."""
        if (first := self.exact.get(exact)) is not None:
            return f"exact duplicate: of {first}"
        self.exact[exact] = key
        if self.index is not None and sig is not None:
            if hit := self.index.add(key, sig):
                first, sim, member = hit
                via = "" if member == first else f" through {member}"
                return f"near duplicate: of {first} (Jaccard ~{sim:.2f}{via})"
        return None


# ------------------------------------------------------------------ decontamination


def ngrams(words: list[str], n: int) -> Iterable[tuple[str, ...]]:
    return zip(*(words[i:] for i in range(n)), strict=False)


class Decontaminator:
    """Drops texts that share a word n-gram with any evaluation prompt (or the whole
    prompt, when a prompt is shorter than n words)."""

    def __init__(self, prompts: Iterable[str], n: int = 8):
        self.n = n
        self.grams: set[tuple[str, ...]] = set()
        self.short: set[str] = set()
        for p in prompts:
            words = normalize(p).split()
            if len(words) >= n:
                self.grams.update(ngrams(words, n))
            elif len(words) >= 3:
                self.short.add(" ".join(words))

    def __bool__(self) -> bool:
        return bool(self.grams or self.short)

    def reason(self, text: str) -> str | None:
        norm = normalize(text)
        words = norm.split()
        if self.grams and not self.grams.isdisjoint(ngrams(words, self.n)):
            hit = next(g for g in ngrams(words, self.n) if g in self.grams)
            return f"eval overlap: shares '{' '.join(hit)}'"
        padded = f" {norm} "
        for s in self.short:
            if f" {s} " in padded:
                return f"eval overlap: contains '{s}'"
        return None


_PROMPT_KEYS = ("prompt", "question", "instruction", "input", "text", "query")


def _prompt_texts(obj) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, list):
        for x in obj:
            yield from _prompt_texts(x)
    elif isinstance(obj, dict):
        for k in _PROMPT_KEYS:
            if isinstance(obj.get(k), str):
                yield obj[k]
        for k in ("prompts", "messages", "conversations"):
            if k in obj:
                yield from _prompt_texts(obj[k])
        if isinstance(obj.get("content"), str):
            yield obj["content"]
        if isinstance(obj.get("value"), str):
            yield obj["value"]


def read_eval_prompts(path: str | Path) -> list[str]:
    """Evaluation prompts from a prompt suite (.yaml: `prompts: [{prompt: ...}]`), a
    JSONL file (prompt / question / instruction / messages fields) or plain text (one
    prompt per line)."""
    from cosmosage.dataprep.io import read_jsonl, read_text, read_yaml
    from cosmosage.dataprep.records import DataError, Reject

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml", ".json"):
        return list(_prompt_texts(read_yaml(path)))
    if suffix == ".jsonl":
        out = []
        for lineno, rec in read_jsonl(path):
            if isinstance(rec, Reject):
                raise DataError(f"{path}:{lineno}: {rec.reason}")
            out.extend(_prompt_texts(rec))
        return out
    return [ln.strip() for ln in read_text(path).splitlines() if ln.strip()]
