"""Near duplicates across shards on datatrove's MinHash stages, for `--executor`.

Each shard task's first pass has already fingerprinted its kept documents (the
`minhash` of its `prepared/r.docs.jsonl`: our signatures, with the calibrated
shingles, permutations and bands). Then, as datatrove's stages, with bounded memory:

1. `SidecarSignatures` (in each shard task): datatrove's signature stage, fed those
   signatures instead of recomputing them, writes them into its sorted per-band files,
   and the whole signatures, one fixed-size row per document, into the shard's
   `SignatureFile` (read back by position, so no later task holds them all);
2. datatrove's `MinhashDedupBuckets` (one task per band) lists every pair of documents
   that share a band: the LSH candidates;
3. `CheckedPairs` (in the same band task, after it) takes each group of documents that
   share a band value (datatrove lists it as neighbours in sorted order) and keeps every
   pair in it whose estimated Jaccard similarity of the two full signatures reaches the
   threshold
   (datatrove's stage takes every candidate, which at these bands drops unrelated
   documents that share boilerplate: docs/corpus.md), reading the two signatures from
   the shards' signature files: its memory does not grow with the corpus;
4. `FlatClusters`, datatrove's cluster stage with its union-find in flat arrays, joins
   the checked pairs into clusters (a revision chain is one cluster) and writes each
   clustered document's cluster in datatrove's `.clusters` files (the same bytes as
   datatrove's `MinhashDedupCluster`): 4 bytes a document of the corpus, where
   datatrove's dict holds a few hundred bytes a clustered document;
5. in the same task, the verdicts keep the first document of each cluster in shard
   order and name the others for the shards' second pass (executors.CrossShardVerdicts
   with merge_shards.ClusterFirsts), reading one shard's clusters at a time.
"""

from __future__ import annotations

import struct
from array import array
from collections import OrderedDict
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupCluster,
    MinhashDedupSignature,
)
from datatrove.utils.binaryio import read_tuples_from_file
from datatrove.utils.hashing import HashConfig

from cosmosage.dataprep.corpus.dedup import lsh_params
from cosmosage.dataprep.env import peak_memory_mb, release_memory, reset_peak_memory
from cosmosage.dataprep.io import read_jsonl

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


def signatures(out: str | Path, rank: int):
    """(line index, signature) of shard `rank`'s kept documents, in their order, then of the
    near duplicates it dropped (its first pass's fingerprints): a dropped one joins its
    cluster to a later shard's version that matches only it, as one process's index
    does, and the verdicts never name it."""
    from cosmosage.dataprep.corpus.pipeline import decode_signature
    from cosmosage.dataprep.corpus.prepared import prepared_path

    index = -1
    for _, rec in read_jsonl(prepared_path(out, rank, "docs.jsonl")):
        index += 1
        if isinstance(rec, dict) and rec.get("minhash"):
            yield index, decode_signature(rec["minhash"])


class SidecarSignatures(MinhashDedupSignature):
    """Datatrove's signature stage over the signatures a shard task wrote in its sidecar
    (the document's index in the sidecar is its id in datatrove's files)."""

    name = "sidecar signatures"

    def __init__(self, out: str | Path, folder: str, whole: str, config: MinhashConfig):
        PipelineStep.__init__(self)  # the parent's would load a word tokenizer it needs not
        self.out = str(out)
        self.output_folder = get_datafolder(folder)
        self.whole = whole
        self.config = config
        self.num_hashes = config.num_buckets * config.hashes_per_bucket
        self._parameters = None
        self.skip_existing_sigs = False

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        self._sigs = dict(signatures(self.out, rank))
        # datatrove numbers documents by their place in the stream: one per sidecar line,
        # the line's index as the text the shingles are looked up by
        count = max(self._sigs, default=-1) + 1
        SignatureFile.write(self.whole, rank, count, self._sigs)
        stream = (Document(text=str(i), id=str(i)) for i in range(count))
        return super().run(stream, rank, world_size)

    def get_shingles(self, text: str) -> np.ndarray:
        sig = self._sigs.get(int(text))
        return np.empty((0, 1), np.uint64) if sig is None else sig.reshape(-1, 1)

    def get_signature(self, shingles: np.ndarray) -> list[list[int]]:
        rows = self.config.hashes_per_bucket
        flat = shingles.ravel()
        return [flat[b * rows : (b + 1) * rows].tolist() for b in range(self.config.num_buckets)]


class SignatureFile:
    """Every shard's whole signatures, one row of `width` little-endian uint32 per sidecar
    line (zeros where a document has none), after a header that gives the width: any
    document's signature is one read at a known place, on any filesystem datatrove
    reaches. `get` keeps a few files open (the least recently used is closed)."""

    HEADER = struct.Struct("<I")

    def __init__(self, folder: str, keep_open: int = 16):
        self.folder, self.keep_open = get_datafolder(folder), keep_open
        self.open_files: OrderedDict[int, tuple[object, int]] = OrderedDict()

    @staticmethod
    def name(rank: int) -> str:
        return f"{rank:06d}.sigs"

    @classmethod
    def write(cls, folder: str, rank: int, count: int, sigs: dict[int, np.ndarray]) -> None:
        width = len(next(iter(sigs.values()))) if sigs else 0
        rows = np.zeros((count, width), "<u4")
        for index, sig in sigs.items():
            rows[index] = sig
        with get_datafolder(folder).open(cls.name(rank), "wb") as fh:
            fh.write(cls.HEADER.pack(width))
            fh.write(rows.tobytes())

    def get(self, rank: int, index: int) -> np.ndarray:
        if rank in self.open_files:
            self.open_files.move_to_end(rank)
        else:
            if len(self.open_files) >= self.keep_open:
                self.open_files.popitem(last=False)[1][0].close()
            fh = self.folder.open(self.name(rank), "rb")
            (width,) = self.HEADER.unpack(fh.read(self.HEADER.size))
            self.open_files[rank] = (fh, width)
        fh, width = self.open_files[rank]
        fh.seek(self.HEADER.size + 4 * width * index)
        return np.frombuffer(fh.read(4 * width), "<u4")

    def close(self) -> None:
        while self.open_files:
            self.open_files.popitem()[1][0].close()


class CheckedPairs(PipelineStep):
    """Every pair of documents that share a band value in a band task's candidates whose
    estimated Jaccard similarity reaches `threshold`, written where datatrove's cluster
    stage reads them (same file names);
    runs after `MinhashDedupBuckets` in the same task, on the files it wrote."""

    name = "checked pairs"
    type = "cosmosage"

    def __init__(self, whole: str, candidates: str, checked: str, threshold: float, bands: int):
        super().__init__()
        self.whole, self.threshold, self.bands = whole, threshold, bands
        self.candidates, self.checked = get_datafolder(candidates), get_datafolder(checked)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        for _ in data or ():  # the steps before this one in the task
            pass
        bucket, worker = divmod(rank, world_size // self.bands)
        name = f"{bucket:05d}_{worker:02d}.dups"  # what the bucket stage's task wrote
        sigs = SignatureFile(self.whole)
        with self.track_time():
            try:
                with (
                    self.candidates.open(name, "rb") as fh,
                    self.checked.open(name, "wb") as out,
                ):
                    # datatrove lists the documents that share a band value as a chain of
                    # neighbours in sorted order (A-B, B-C, ...): one group at a time
                    group: list[tuple[int, int]] = []
                    for f1, d1, f2, d2 in read_tuples_from_file(fh, "4I"):
                        if group and group[-1] == (f1, d1):
                            group.append((f2, d2))
                        else:
                            self._check(group, sigs, out)
                            group = [(f1, d1), (f2, d2)]
                    self._check(group, sigs, out)
            finally:
                sigs.close()
        # the whole band task's peak (buckets, exact finder, check); the next task a pool
        # worker runs starts its own
        self.stat_update("peak_rss_mb", value=round(peak_memory_mb()))
        reset_peak_memory()
        return None

    def _check(self, group: list[tuple[int, int]], sigs: SignatureFile, out) -> None:
        """Every pair of one group of documents that share a band value, each pair whose
        estimated Jaccard similarity reaches the threshold written (earlier, later), as
        the one-process index checks every candidate: checking neighbours only would
        lose A-C when an unrelated B (shared boilerplate) sorts between them."""
        if not group:
            return
        held = np.stack([sigs.get(f, d) for f, d in group])  # 512 bytes a document
        self.stat_update("candidates", value=len(group) * (len(group) - 1) // 2)
        self.stat_update("largest group", value=len(group), unit="group")
        for j in range(1, len(group)):
            sims = (held[:j] == held[j]).mean(axis=1)  # estimated_jaccard against each earlier one
            for i in np.flatnonzero(sims >= self.threshold).tolist():
                out.write(PAIR.pack(*group[i], *group[j]))
                self.stat_update("duplicates")


def _pair_chunks(folder, name: str, rows: int = 1 << 16):
    """A `.dups` file's pairs, `rows` at a time, as rows (file 1, doc 1, file 2, doc 2)."""
    with folder.open(name, "rb") as fh:
        while chunk := fh.read(PAIR.size * rows):
            yield np.frombuffer(chunk, "<u4").reshape(-1, 4).astype(np.int64)


def _find(parent, x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


class FlatClusters(MinhashDedupCluster):
    """datatrove's cluster stage (same `.dups` input, the same `.clusters` output bytes)
    with its union-find in flat arrays over every document's place in shard order: the
    root of a cluster is its first document, a document costs 4 bytes whether it is in a
    pair or not, and nothing is held per pair (a band file is read 65,536 pairs at a
    time). datatrove's own holds a dict entry and a tuple per clustered document, a few
    hundred bytes each, so it grew with the near duplicates."""

    name = "flat clusters"

    def __init__(self, input_folder: str, output_folder: str, config: MinhashConfig):
        super().__init__(input_folder, output_folder, config=config, save_cluster_id=True)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        for _ in data or ():  # the steps before this one in the task
            pass
        release_memory()
        reset_peak_memory()
        names = self.input_folder.list_files(glob_pattern="*.dups")
        with self.track_time():
            tops = np.zeros(0, np.int64)  # per shard: 1 + the highest document a pair names
            for name in names:
                for rows in _pair_chunks(self.input_folder, name):
                    need = int(max(rows[:, 0].max(), rows[:, 2].max())) + 1
                    tops = np.pad(tops, (0, max(0, need - len(tops))))
                    np.maximum.at(tops, rows[:, 0], rows[:, 1] + 1)
                    np.maximum.at(tops, rows[:, 2], rows[:, 3] + 1)
            files = np.flatnonzero(tops).tolist()
            counts = {f: int(tops[f]) for f in files}
            offsets = np.cumsum([0] + [counts[f] for f in files]).tolist()
            starts = dict(zip(files, offsets[:-1], strict=True))
            parent, unions = array("i", range(sum(counts.values()))), 0
            for name in names:
                for rows in _pair_chunks(self.input_folder, name):
                    for f1, d1, f2, d2 in rows.tolist():
                        a = _find(parent, starts[f1] + d1)
                        b = _find(parent, starts[f2] + d2)
                        if a != b:
                            parent[max(a, b)] = min(a, b)  # the first in shard order: root
                            unions += 1
            self.stat_update("unions", value=unions)
            self._write(np.frombuffer(parent, np.int32), files, starts, counts)
        self.stat_update("peak_rss_mb", value=round(peak_memory_mb()))

    def _write(self, parent: np.ndarray, files: list[int], starts: dict, counts: dict) -> None:
        while not np.array_equal(parent[parent], parent):  # every document to its root
            parent[:] = parent[parent]
        place = np.arange(len(parent), dtype=np.int32)
        clustered = parent != place
        clustered[parent[clustered]] = True
        # cluster ids as datatrove numbers them: by each cluster's first document in order
        cluster_of_root = np.cumsum(clustered & (parent == place), dtype=np.int32) - 1
        for f in files:
            part = slice(starts[f], starts[f] + counts[f])
            docs = np.flatnonzero(clustered[part])
            if not len(docs):
                continue
            rows = np.empty((len(docs), 2), "<u4")
            rows[:, 0], rows[:, 1] = docs, cluster_of_root[parent[part][docs]]
            with self.output_folder.open(f"{f:06d}.clusters", "wb") as fh:
                fh.write(rows.tobytes())
            self.stat_update("duplicates", value=len(docs))
        self.stat_update("clusters", value=int(cluster_of_root[-1] + 1) if len(parent) else 0)


def read_clusters(folder: str, rank: int) -> dict[int, int]:
    """{sidecar index: cluster id} of shard `rank`, from datatrove's `.clusters` file."""
    root = get_datafolder(folder)
    if not root.exists(f"{rank:06d}.clusters"):
        return {}
    with root.open(f"{rank:06d}.clusters", "rb") as fh:
        return dict(read_tuples_from_file(fh, "I", "I"))
