"""Near duplicates across shards on datatrove's MinHash stages, for `--executor`.

Each shard task has already fingerprinted its kept documents (the `minhash` of its
`.docs.jsonl` sidecar: our signatures, with the calibrated shingles, permutations and
bands). Then, as datatrove's stages, with bounded memory:

1. `SidecarSignatures` (in each shard task): datatrove's signature stage, fed those
   signatures instead of recomputing them, writes them into its sorted per-band files;
2. datatrove's `MinhashDedupBuckets` (one task per band) lists every pair of documents
   that share a band: the LSH candidates;
3. `CheckedPairs` keeps a candidate pair only when the estimated Jaccard similarity of
   the two full signatures reaches the threshold (datatrove's stage takes every
   candidate, which at these bands drops unrelated documents that share boilerplate:
   docs/corpus.md), loading only the signatures of documents that are in a pair;
4. datatrove's `MinhashDedupCluster` joins the checked pairs into clusters (union-find:
   a revision chain is one cluster) and names each document's cluster;
5. the merge keeps the first document of each cluster in shard order and drops the
   others (dataprep/corpus/merge_shards.py, `clusters=`).
"""

from __future__ import annotations

import struct
from collections import defaultdict
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.utils.binaryio import read_tuples_from_file
from datatrove.utils.hashing import HashConfig

from cosmosage.dataprep.corpus.dedup import estimated_jaccard, lsh_params
from cosmosage.dataprep.io import read_jsonl
from cosmosage.dataprep.shard import shard_output

PAIR = struct.Struct("<4I")


def minhash_config(threshold: float, num_perm: int, shingle: int) -> MinhashConfig:
    """Datatrove's configuration for our signatures: our bands and rows, 32-bit values."""
    bands, rows = lsh_params(threshold, num_perm)
    return MinhashConfig(
        n_grams=shingle,
        num_buckets=bands,
        hashes_per_bucket=rows,
        hash_config=HashConfig(precision=32),
    )


def sidecar(out: str | Path, rank: int, tasks: int) -> Path:
    from cosmosage.dataprep.corpus.pipeline import docs_path

    return docs_path(shard_output(out, (rank, tasks)))


def signatures(out: str | Path, rank: int, tasks: int, wanted: set[int] | None = None):
    """(line index, signature) of shard `rank`'s kept documents, in sidecar order."""
    from cosmosage.dataprep.corpus.pipeline import decode_signature

    index = -1
    for _, rec in read_jsonl(sidecar(out, rank, tasks)):
        index += 1
        if isinstance(rec, dict) and rec.get("minhash") and (wanted is None or index in wanted):
            yield index, decode_signature(rec["minhash"])


class SidecarSignatures(MinhashDedupSignature):
    """Datatrove's signature stage over the signatures a shard task wrote in its sidecar
    (the document's index in the sidecar is its id in datatrove's files)."""

    name = "sidecar signatures"

    def __init__(self, out: str | Path, tasks: int, folder: str, config: MinhashConfig):
        PipelineStep.__init__(self)  # the parent's would load a word tokenizer it needs not
        self.out, self.tasks = str(out), tasks
        self.output_folder = get_datafolder(folder)
        self.config = config
        self.num_hashes = config.num_buckets * config.hashes_per_bucket
        self._parameters = None
        self.skip_existing_sigs = False

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        self._sigs = dict(signatures(self.out, rank, self.tasks))
        # datatrove numbers documents by their place in the stream: one per sidecar line,
        # the line's index as the text the shingles are looked up by
        count = max(self._sigs, default=-1) + 1
        stream = (Document(text=str(i), id=str(i)) for i in range(count))
        return super().run(stream, rank, world_size)

    def get_shingles(self, text: str) -> np.ndarray:
        sig = self._sigs.get(int(text))
        return np.empty((0, 1), np.uint64) if sig is None else sig.reshape(-1, 1)

    def get_signature(self, shingles: np.ndarray) -> list[list[int]]:
        rows = self.config.hashes_per_bucket
        flat = shingles.ravel()
        return [flat[b * rows : (b + 1) * rows].tolist() for b in range(self.config.num_buckets)]


class CheckedPairs(PipelineStep):
    """The candidate pairs whose estimated Jaccard similarity reaches `threshold`,
    written where datatrove's cluster stage reads them (same file names)."""

    name = "checked pairs"
    type = "cosmosage"

    def __init__(
        self, out: str | Path, tasks: int, candidates: str, checked: str, threshold: float
    ):
        super().__init__()
        self.out, self.tasks, self.threshold = str(out), tasks, threshold
        self.candidates, self.checked = get_datafolder(candidates), get_datafolder(checked)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        files = self.candidates.list_files(glob_pattern="*.dups")
        wanted: dict[int, set[int]] = defaultdict(set)
        for name in files:
            with self.candidates.open(name, "rb") as fh:
                for f1, d1, f2, d2 in read_tuples_from_file(fh, "4I"):
                    wanted[f1].add(d1)
                    wanted[f2].add(d2)
        sigs = {
            (rank_, i): sig
            for rank_, docs in wanted.items()
            for i, sig in signatures(self.out, rank_, self.tasks, docs)
        }
        for name in files:
            with self.candidates.open(name, "rb") as fh, self.checked.open(name, "wb") as out:
                for f1, d1, f2, d2 in read_tuples_from_file(fh, "4I"):
                    sim = estimated_jaccard(sigs[(f1, d1)], sigs[(f2, d2)])
                    self.stat_update("candidates")
                    if sim >= self.threshold:
                        out.write(PAIR.pack(f1, d1, f2, d2))
                        self.stat_update("duplicates")
        return None


def read_clusters(folder: str, tasks: int) -> dict[int, dict[int, int]]:
    """{shard: {sidecar index: cluster id}} from datatrove's `.clusters` files."""
    root = get_datafolder(folder)
    found: dict[int, dict[int, int]] = {}
    for rank in range(tasks):
        if root.exists(f"{rank:06d}.clusters"):
            with root.open(f"{rank:06d}.clusters", "rb") as fh:
                found[rank] = dict(read_tuples_from_file(fh, "I", "I"))
    return found
