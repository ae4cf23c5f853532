"""One `--shard I/N` for every data command, so a Slurm array (or any batch scheduler)
runs shard I of N of a job on each task, and one `data merge-shards` that puts the parts
together.

The rule: an item belongs to shard `crc32(key) % N`, the same on every machine, Python
and run (no salted `hash()`). The key depends on the kind of input:

| input                                      | key                                             |
|--------------------------------------------|-------------------------------------------------|
| files given as folders or paths (corpus)   | the path inside the folder given (`papers/a.md`) |
| arXiv papers (cache, metadata snapshot)    | the arXiv id                                     |
| records (`data convert` rows, `data synth` chunks) | the record's content hash (sha256; a chunk's `chunk_sha`) |
| an input line that cannot be read          | its file and line (`qa.csv:17`), so each shard reports its own |

So a folder mounted elsewhere, or a record file re-ordered, shards the same way. Every
command that takes `--shard` names the outputs of shard I of N
`OUT.shard-0000I-of-0000N.jsonl` (its manifest, rejects and other files follow that
name). `data merge-shards --out OUT` puts them together: a corpus's parts with
cross-shard deduplication (dataprep/corpus/merge_shards.py), any other command's
records by `merge_records` below, in shard order, with one manifest and rejects file.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from pathlib import Path
from typing import NamedTuple

from cosmosage.dataprep.io import (
    JsonlWriter,
    Manifest,
    check_outputs,
    manifest_path,
    read_jsonl,
    read_text,
    rejects_path,
    sibling,
)
from cosmosage.dataprep.records import DataError, Reject

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


def reject_key(reject: Reject) -> str:
    """The shard key of an input line that could not be read: its file and line."""
    return f"{reject.source}:{reject.line}"


def shard_output(path: str | Path | None, shard: Shard | tuple[int, int] | None) -> Path | None:
    """corpus.jsonl + 3/8 -> corpus.shard-00003-of-00008.jsonl (no shard: the path itself)."""
    if path is None or shard is None:
        return Path(path) if path else None
    return sibling(path, f".shard-{shard[0]:05d}-of-{shard[1]:05d}.jsonl")


def find_shards(path: str | Path, count: int | None = None) -> list[Path]:
    """All shard parts of output `path`, in order; DataError when some are missing. With
    `count` (a run that knows how many it wrote), only the parts `-of-{count}`: parts an
    earlier run of another shard count left are not this run's."""
    path = Path(path)
    stem = sibling(path, "").name
    pat = re.compile(rf"{re.escape(stem)}\.shard-(\d{{5}})-of-(\d{{5}})\.jsonl")
    found: dict[int, Path] = {}
    totals = set()
    for f in path.parent.glob(f"{stem}.shard-*-of-*.jsonl"):
        if (m := pat.fullmatch(f.name)) and count in (None, int(m.group(2))):
            found[int(m.group(1))] = f
            totals.add(int(m.group(2)))
    if not found:
        raise DataError(f"{path}: no shard outputs like {stem}.shard-00000-of-0000N.jsonl")
    if len(totals) != 1:
        raise DataError(
            f"{path}: shard parts from different shard counts {sorted(totals)}; remove the "
            f"parts of the earlier run ({stem}.shard-*-of-NNNNN.*) before merging"
        )
    n = totals.pop()
    if missing := [i for i in range(n) if i not in found]:
        raise DataError(f"{path}: shards {missing} of {n} are missing (did their jobs finish?)")
    return [found[i] for i in range(n)]


def read_manifest(output: Path) -> dict:
    mp = manifest_path(output)
    if not mp.exists():
        raise DataError(f"{mp}: missing manifest (the shard job did not finish)")
    return json.loads(read_text(mp))


# Manifest fields the merge writes itself, and the counts it adds up over the shards
# (every other field is the first shard's: the settings every shard shared).
OWN_KEYS = {"output", "command", "inputs", "kept", "dropped", "dropped_total", "tokens", "shard"}
SUMMED_KEYS = {
    "kept_per_input",
    "chunks",
    "chunks_with_pairs",
    "requests_all_runs",
    "tokens_all_runs",
    "usage_this_run",
}


def _summed(values: list):
    """Numbers added up; mappings key by key; anything else as the first shard had it."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return sum(values)
    if all(isinstance(v, dict) for v in values):
        keys = list(dict.fromkeys(k for v in values for k in v))
        return {k: _summed([v[k] for v in values if k in v]) for k in keys}
    return values[0]


def merge_records(out: str | Path) -> dict:
    """The shards of a record-writing command (`data convert`, `data synth`) as one
    output: records in shard order, rejects likewise, one manifest whose counts are the
    shards' sums (an item is in exactly one shard, so nothing is counted twice)."""
    check_outputs([], {"--out": out})
    out = Path(out)
    parts = find_shards(out)
    manifests = [read_manifest(p) for p in parts]
    merged = Manifest(str(out))
    merged.extra = {k: v for k, v in manifests[0].items() if k not in OWN_KEYS}
    for key in SUMMED_KEYS & set(merged.extra):
        merged.extra[key] = _summed([m.get(key) for m in manifests])
    inputs: dict[str, dict] = {}
    tokens = 0 if all("tokens" in m for m in manifests) else None
    for m in manifests:
        for entry in m.get("inputs") or []:
            inputs.setdefault(entry.get("path", json.dumps(entry, sort_keys=True)), entry)
        merged.dropped.update(m.get("dropped") or {})
        if tokens is not None:
            tokens += int(m.get("tokens") or 0)
    merged.inputs, merged.tokens = list(inputs.values()), tokens
    merged.extra["shards"] = [str(p) for p in parts]
    records, rejects = JsonlWriter(out), JsonlWriter(rejects_path(out))
    try:
        for part in parts:
            for lineno, rec in read_jsonl(part):
                if isinstance(rec, Reject):
                    raise DataError(f"{rec.source}:{lineno}: {rec.reason}")
                records.write(rec)
            if rejects_path(part).exists():
                for _, rec in read_jsonl(rejects_path(part)):
                    if isinstance(rec, dict):
                        rejects.write(rec)
        merged.kept = records.count
        records.commit()
        rejects.commit()
    except BaseException:
        records.abort()
        rejects.abort()
        raise
    merged.write()
    return {
        "output": str(out),
        "shards": len(parts),
        "records": merged.kept,
        "rejected": rejects.count,
    }
