"""The merge of a corpus's shards (`data corpus --shard`; the naming is dataprep/shard.py's),
and the cross-shard verdicts it shares with `--executor` (`duplicate_check`).

Shard i of n writes `<stem>.shard-0000i-of-0000n.jsonl` (and its val, rejects, docs and
manifest files) beside `<stem>.jsonl`. `merge_shards` checks that all n parts are
there, deduplicates documents across shards (exact hash and MinHash signatures from
the `.docs.jsonl` sidecars, in shard order: the first copy wins), and streams the kept
chunks into one train (and validation) file with one manifest and one rejects file.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cosmosage.dataprep.corpus.chunk import packing_efficiency
from cosmosage.dataprep.corpus.dedup import (
    NEAR_THRESHOLD,
    NUM_PERM,
    Deduplicator,
    estimated_jaccard,
)
from cosmosage.dataprep.corpus.pipeline import (
    MAX_LISTED_INPUTS,
    Repaired,
    decode_signature,
    docs_path,
)
from cosmosage.dataprep.io import JsonlWriter, Manifest, check_outputs, read_jsonl, rejects_path
from cosmosage.dataprep.records import DataError, Reject, reason_group
from cosmosage.dataprep.shard import find_shards, read_manifest


class PartWriter:
    """One merged output (train or val): the kept chunks of each shard's part, streamed
    as the merge reaches the shard, then its manifest with the token count and packing
    efficiency."""

    def __init__(self, manifest: Manifest, sequence_len: int):
        self.m, self.sequence_len = manifest, sequence_len
        self.writer = JsonlWriter(manifest.output)
        self.hist: Counter = Counter()
        self.tokens = 0

    def add(self, part: Path, dropped_docs: set[str]) -> None:
        # a shard's part was written by JsonlWriter: each kept line is passed on as it is
        # (parsing it once, not dumping it again: a third of the merge's time)
        with open(part, encoding="utf-8", newline="") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as exc:
                    raise DataError(
                        f"{part}:{lineno}: not JSON ({exc}); rebuild this shard"
                    ) from None
                if not isinstance(rec, dict):
                    raise DataError(f"{part}:{lineno}: not a JSON object; rebuild this shard")
                if rec.get("doc_id") in dropped_docs:
                    continue
                self.writer.write_line(line)
                n = int(rec.get("tokens", 0))
                self.tokens += n
                self.hist[n] += 1

    def finish(self, **extra) -> None:
        m, seq = self.m, self.sequence_len
        m.kept, m.tokens = self.writer.count, self.tokens
        m.extra = {"sequence_len": seq, **m.extra, **extra}
        m.extra["packing_efficiency"] = packing_efficiency(self.hist, seq) if seq else None
        self.writer.commit()
        m.write()


MANIFEST_FIELDS = ("config", "dropped", "tokenizer", "sequence_len")


def _check_same_minhash(out: str | Path, manifests: list[dict]) -> None:
    """Signatures from different shingle sizes or permutation counts do not compare."""
    kinds = {
        (m.get("config", {}).get("num_perm"), m.get("config", {}).get("shingle")) for m in manifests
    }
    if len(kinds) > 1:
        raise DataError(
            f"{out}: shards were fingerprinted with different MinHash settings "
            f"(num_perm, shingle) {sorted(kinds, key=str)}; rebuild them with one setting"
        )


def _copy_rejects(part: Path, rejects: JsonlWriter) -> None:
    """A shard's own rejects into the merged rejects file."""
    if rejects_path(part).exists():
        for _, rec in read_jsonl(rejects_path(part)):
            if isinstance(rec, dict):
                rejects.write(rec)


class ClusterFirsts:
    """The near-duplicate verdicts of clusters found elsewhere (datatrove's stages): the
    first member of a cluster met in shard order is kept, a later one is named a
    duplicate of it, with its similarity to the closest earlier member, as the in-memory
    index names it. `clusters(shard)` gives a shard's {sidecar index: cluster}, read as
    the verdicts reach the shard; `signature(shard, index)` reads an earlier member's
    signature back. Holds one shard's clusters and, per clustered document met, its place
    and name in flat arrays (about 20 bytes and the name's), not its signature."""

    def __init__(
        self,
        clusters: Callable[[int], dict[int, int]],
        signature: Callable[[int, int], object],
    ):
        self.clusters_of, self.signature = clusters, signature
        self.shard, self.clusters = None, {}
        # member k: its shard, index, the member met before it in its cluster (or -1),
        # and its name, names[name_end[k - 1]:name_end[k]]
        self.m_shard, self.m_index, self.m_prev = array("i"), array("i"), array("i")
        self.name_end, self.names = array("q"), bytearray()
        self.last = array("i")  # per cluster id: its latest member, or -1

    def _name(self, k: int) -> str:
        return self.names[self.name_end[k - 1] if k else 0 : self.name_end[k]].decode()

    def check(self, shard: int, index: int, doc_id: str, sig) -> str | None:
        if shard != self.shard:
            self.shard, self.clusters = shard, self.clusters_of(shard)
        cluster = self.clusters.get(index)
        if cluster is None or sig is None:
            return None
        if cluster >= len(self.last):
            self.last.extend([-1] * (cluster + 1 - len(self.last)))
        prev = self.last[cluster]
        self.last[cluster] = len(self.m_shard)
        self.m_shard.append(shard)
        self.m_index.append(index)
        self.m_prev.append(prev)
        self.names += doc_id.encode()
        self.name_end.append(len(self.names))
        if prev < 0:
            return None
        earlier = []
        while prev >= 0:
            earlier.append(prev)
            prev = self.m_prev[prev]
        earlier.reverse()  # in the order met
        first = self._name(earlier[0])
        sim, member = max(
            (estimated_jaccard(self.signature(self.m_shard[k], self.m_index[k]), sig),
             self._name(k))
            for k in earlier
        )  # fmt: skip
        via = "" if member == first else f" through {member}"
        return f"near duplicate: of {first} (Jaccard ~{sim:.2f}{via})"


class ExactFirsts:
    """The exact-duplicate verdicts of datatrove's exact stages: `firsts` and `duplicates`
    ({shard: sidecar indices}) are the kept first and the later copies of every group of
    equal keys; a copy is named a duplicate of the first met with its key. Holds the
    keys of firsts only."""

    def __init__(self, firsts: dict[int, set[int]], duplicates: dict[int, set[int]]):
        self.firsts, self.duplicates = firsts, duplicates
        self.first_of: dict[str, str] = {}

    def check(self, shard: int, index: int, doc_id: str, key: str) -> str | None:
        if index in self.firsts.get(shard, ()):
            self.first_of.setdefault(key, doc_id)
        elif index in self.duplicates.get(shard, ()) and (first := self.first_of.get(key)):
            return f"exact duplicate: of {first}"
        return None


def duplicate_check(dedup: bool, threshold: float, num_perm: int, clusters=None, exact=None):
    """check(shard, sidecar index, record) -> why the document is a duplicate, or None:
    exact then near duplicates, here in memory (`merge-shards`) or from what datatrove's
    stages found (executors.CrossShardVerdicts; `exact`: ExactFirsts' two maps;
    `clusters`: a ClusterFirsts). A near duplicate its shard dropped (`"dropped": true`,
    listed after the shard's kept documents) joins its cluster and is never named."""
    if not dedup:
        return lambda shard, index, rec: None
    if (clusters is None) != (exact is None):
        raise ValueError("clusters and exact come together, from datatrove's stages")
    if clusters is None:
        deduper = Deduplicator(near=True, threshold=threshold, num_perm=num_perm)

        def in_memory(shard: int, index: int, rec: dict) -> str | None:
            if rec.get("dropped"):
                if (sig := signature(rec)) is not None:  # as ClusterFirsts: none, no link
                    deduper.index.add(rec["doc_id"], sig)
                return None
            return deduper.check(rec["doc_id"], rec.get("exact") or rec["doc_id"], signature(rec))

        return in_memory
    exact_found = ExactFirsts(*exact)

    def check(shard: int, index: int, rec: dict) -> str | None:
        if rec.get("dropped"):
            clusters.check(shard, index, rec["doc_id"], signature(rec))
            return None
        key = rec.get("exact") or rec["doc_id"]
        reason = exact_found.check(shard, index, rec["doc_id"], key)
        return reason or clusters.check(shard, index, rec["doc_id"], signature(rec))

    return check


def signature(rec: dict):
    return decode_signature(rec["minhash"]) if rec.get("minhash") else None


@dataclass
class KeptDocs:
    """The documents the merge keeps on one side (train or val): their number, licenses
    and the first MAX_LISTED_INPUTS of them, for the manifest."""

    count: int = 0
    licenses: Counter = field(default_factory=Counter)
    inputs: list[dict] = field(default_factory=list)
    repaired: Repaired = field(default_factory=Repaired)

    def add(self, rec: dict) -> None:
        self.count += 1
        self.licenses[rec.get("license", "unknown")] += 1
        self.repaired.add(rec)
        if len(self.inputs) < MAX_LISTED_INPUTS:
            keys = ("path", "doc_id", "license", "sha256", "undecodable_bytes")
            self.inputs.append({k: rec[k] for k in keys if k in rec})


def _shard_docs(shard: int, part: Path, duplicate, rejects: JsonlWriter, docs_out: JsonlWriter,
                kept: dict[str, KeptDocs], dropped: Counter) -> set[str]:  # fmt: skip
    """One shard's documents through the duplicate check: the kept ones into the merged
    sidecar, the others into the rejects; returns the ids of the dropped ones."""
    dropped_docs: set[str] = set()
    for index, (lineno, rec) in enumerate(read_jsonl(docs_path(part))):
        if isinstance(rec, Reject):
            raise DataError(f"{rec.source}:{lineno}: {rec.reason}")
        reason = duplicate(shard, index, rec)
        if rec.get("dropped"):  # dropped in its shard: a member of its cluster only
            continue
        if reason:
            dropped_docs.add(rec["doc_id"])
            dropped[reason_group(reason)] += 1
            rejects.write(
                Reject(rec.get("path", str(part)), None, f"{reason} (across shards)",
                       {"doc_id": rec["doc_id"]}).to_json()
            )  # fmt: skip
            continue
        docs_out.write(rec)
        kept[rec.get("split", "train")].add(rec)
    return dropped_docs


def merge_shards(
    out: str | Path,
    val_out: str | Path | None = None,
    dedup: bool = True,
    near_threshold: float = NEAR_THRESHOLD,
    shards: int | None = None,
) -> dict:
    """Join the shards of OUT (and VAL_OUT), dropping (with `dedup`) documents that
    duplicate one in an earlier shard, found here in memory: the first copy in shard
    order is kept. (Under `--executor` the shards' second pass has already left out
    what datatrove's stages found, and the join runs without `dedup`, of the `shards`
    parts its tasks wrote.)"""
    check_outputs([], {"--out": out, "--val-out": val_out})
    parts = find_shards(out, shards)
    val_parts = find_shards(val_out, shards) if val_out else []
    # what the merge uses of each shard's manifest: not its list of inputs (up to 10,000
    # entries a shard, which held for every shard made the merge grow with the corpus)
    manifests = [{k: v for k, v in read_manifest(p).items() if k in MANIFEST_FIELDS} for p in parts]
    cfg = manifests[0].get("config", {})
    num_perm = int(cfg.get("num_perm", NUM_PERM))
    if dedup:
        _check_same_minhash(out, manifests)
    sequence_len = int(manifests[0].get("sequence_len") or cfg.get("sequence_len") or 0)
    duplicate = duplicate_check(dedup, near_threshold, num_perm)

    out, val_out = Path(out), Path(val_out) if val_out else None
    if val_out and len(val_parts) != len(parts):
        raise DataError(f"{val_out}: {len(val_parts)} shard parts, {out} has {len(parts)}")
    sides = {"train": PartWriter(Manifest(str(out)), sequence_len)}
    if val_out:
        sides["val"] = PartWriter(Manifest(str(val_out)), sequence_len)
    rejects = JsonlWriter(rejects_path(out))
    docs_out = JsonlWriter(docs_path(out))
    writers = [rejects, docs_out, *(side.writer for side in sides.values())]
    dropped, across = Counter(), 0
    kept = {"train": KeptDocs(), "val": KeptDocs()}
    try:
        for shard, (part, man) in enumerate(zip(parts, manifests, strict=True)):
            dropped.update(man.get("dropped", {}))
            _copy_rejects(part, rejects)
            # this shard's dropped documents: its chunks follow below
            dropped_docs = _shard_docs(shard, part, duplicate, rejects, docs_out, kept, dropped)
            across += len(dropped_docs)
            sides["train"].add(part, dropped_docs)
            if "val" in sides:
                sides["val"].add(val_parts[shard], dropped_docs)
        result = {"shards": len(parts), "dropped_across_shards": across}
        for side, writer in sides.items():
            writer.m.inputs = kept[side].inputs
            writer.m.dropped = dropped if side == "train" else Counter()
            writer.finish(
                config=cfg,
                tokenizer=manifests[0].get("tokenizer"),
                documents=kept[side].count,
                licenses=dict(kept[side].licenses),
                docs=str(docs_path(out)),
                shards=[str(p) for p in (parts if side == "train" else val_parts)],
                **kept[side].repaired.fields(),
            )
            result[f"{side}_records"] = writer.m.kept
            result[f"{side}_tokens"] = writer.m.tokens
        rejects.commit()
        docs_out.commit()
    except BaseException:
        for w in writers:
            w.abort()
        raise
    result["output"] = str(out)
    return result
