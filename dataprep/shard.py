"""One `--shard I/N` for every data command, so a Slurm array (or any batch scheduler)
runs shard I of N of a job on each task.

The rule: an item belongs to shard `crc32(key) % N`, the same on every machine, Python
and run (no salted `hash()`). The key depends on the kind of input:

| input                                    | key                                             |
|------------------------------------------|-------------------------------------------------|
| files given as folders or paths (corpus) | the path inside the folder given (`papers/a.md`) |
| arXiv papers (cache, metadata snapshot)  | the arXiv id                                     |
| records (convert rows, synth/grade chunks) | the record's content hash (sha256)             |

So a folder mounted elsewhere, or a record file re-ordered, shards the same way. Every
output of shard I of N is named `OUT.shard-0000I-of-0000N.jsonl`; `data merge-shards`
puts them together.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from pathlib import Path
from typing import NamedTuple

from cosmosage.dataprep.io import DataError, sibling

_SPEC_RE = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


class Shard(NamedTuple):
    index: int
    count: int

    @classmethod
    def parse(cls, spec: str | None) -> Shard | None:
        """ "3/8" -> Shard(3, 8); None or "" -> None (the whole input)."""
        if not spec:
            return None
        m = _SPEC_RE.fullmatch(str(spec))
        if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
            raise DataError(f"--shard {spec!r}: expected I/N with 0 <= I < N, e.g. 0/8")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(key: str, count: int) -> int:
    """The shard number of `key` among `count` shards."""
    return zlib.crc32(key.encode("utf-8")) % count


def in_shard(key: str, shard: Shard | tuple[int, int] | None) -> bool:
    """Whether `key` belongs to `shard` (everything belongs to no shard)."""
    return shard is None or shard_of(key, shard[1]) == shard[0]


def record_key(record: dict) -> str:
    """The shard key of a record: the sha256 of its canonical JSON."""
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def shard_output(path: str | Path | None, shard: Shard | tuple[int, int] | None) -> Path | None:
    """corpus.jsonl + 3/8 -> corpus.shard-00003-of-00008.jsonl (no shard: the path itself)."""
    if path is None or shard is None:
        return Path(path) if path else None
    return sibling(path, f".shard-{shard[0]:05d}-of-{shard[1]:05d}.jsonl")
