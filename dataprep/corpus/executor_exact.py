"""Exact duplicates across shards on datatrove's exact-dedup stages, for `--executor`.

Each shard task's first pass has already removed exact copies within its shard and
written each kept document's exact key (a hash of its normalised text) in its
`prepared/r.docs.jsonl`. Then,
as datatrove's stages, with memory that does not grow with the corpus:

1. `SidecarExactHashes` (in each shard task): datatrove's exact signature stage over those
   keys, one 64-bit hash per document, split by hash range into one file per finder task;
2. datatrove's `ExactFindDedups` (one task per hash range, beside the MinHash buckets)
   merges the sorted files and names, for each hash met more than once, the documents
   after the first (the first: highest priority, then lowest index; the priority is the
   shard order, so the first copy in shard order wins, as in `merge-shards`) and the first
   itself (its cluster count);
3. the cluster task's verdicts name the duplicates, each with the first met with its key
   (merge_shards.ExactFirsts): only documents that are in a group are held, and a 64-bit
   collision between different keys drops nothing.
"""

from __future__ import annotations

from pathlib import Path

from datatrove.data import Document
from datatrove.io import get_datafolder
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupSignature
from datatrove.utils.binaryio import read_tuples_from_file
from datatrove.utils.hashing import HashConfig
from datatrove.utils.typeshelper import ExtensionHelperSD

from cosmosage.dataprep.io import read_jsonl
from cosmosage.dataprep.records import DataError

TOP_PRIORITY = 65535  # datatrove keeps the copy of highest priority: shard r has TOP - r


def _text(doc: Document) -> str:
    return doc.text


def exact_config() -> ExactDedupConfig:
    """64-bit hashes of the exact keys (datatrove's sha1, no further dependency)."""
    return ExactDedupConfig(content_getter=_text, hash_config=HashConfig(64, "sha1"))


def exact_keys(out: str | Path, rank: int):
    """(line index, exact key) of shard `rank`'s kept documents (its first pass's
    fingerprints; the near duplicates it dropped, listed after them, have none)."""
    from cosmosage.dataprep.corpus.prepared import prepared_path

    for index, (_, rec) in enumerate(read_jsonl(prepared_path(out, rank, "docs.jsonl"))):
        if isinstance(rec, dict) and not rec.get("dropped"):
            yield index, rec.get("exact") or rec["doc_id"]


class SidecarExactHashes(ExactDedupSignature):
    """Datatrove's exact signature stage over the keys a shard task wrote in its sidecar
    (a document's line index in the sidecar is its id in datatrove's files)."""

    name = "sidecar exact hashes"

    def __init__(self, out: str | Path, tasks: int, folder: str, finders: int):
        if tasks > TOP_PRIORITY:
            raise DataError(f"--tasks {tasks}: at most {TOP_PRIORITY} with --executor")
        super().__init__(folder, exact_config(), finder_workers=finders)
        self.out = str(out)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        for _ in data or ():  # the steps before this one in the task
            pass
        hashes = []
        with self.track_time():
            for index, key in exact_keys(self.out, rank):
                hashes.append((self.hash_fc(key), TOP_PRIORITY - rank, index))
                self.stat_update("documents")
            self.save_hashes(rank, hashes)


def _indices(root, ext: str, rank: int, fmt: str) -> set[int]:
    """The first field of every record in the finder files named for shard `rank`."""
    found: set[int] = set()
    for folder in root.list_files(include_directories=True, recursive=False):
        name = f"{folder}/{rank:05d}{ext}"
        if root.exists(name):
            with root.open(name, "rb") as fh:
                found.update(rec[0] for rec in read_tuples_from_file(fh, fmt))
    return found


class OneShard:
    """{shard: sidecar indices} read from the finder files as the merge reaches a shard
    (`.get(shard, default)`), holding one shard's at a time."""

    def __init__(self, root, ext: str, fmt: str):
        self.root, self.ext, self.fmt = root, ext, fmt
        self.shard, self.held = None, set()

    def get(self, shard: int, default=()):
        if shard != self.shard:
            self.shard, self.held = shard, _indices(self.root, self.ext, shard, self.fmt)
        return self.held or default


def read_exact(folder: str) -> tuple[OneShard | dict, OneShard | dict]:
    """({shard: sidecar indices kept as the first of a group}, {shard: indices that
    duplicate an earlier one}) from datatrove's exact finder files, read a shard at a
    time as they are asked for."""
    root = get_datafolder(folder)
    if not root.exists(""):
        return {}, {}
    return (
        OneShard(root, ExtensionHelperSD.stage_2_counts, "2I"),
        OneShard(root, ExtensionHelperSD.stage_2_duplicates, "I"),
    )
