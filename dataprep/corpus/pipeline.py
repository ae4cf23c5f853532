"""The corpus pipeline: documents -> clean -> quality filters -> dedup -> token-exact
chunks -> decontamination -> train/validation JSONL, streaming.

Memory stays flat in corpus size: documents flow through in batches, outputs are written
line by line to temp files renamed at the end. What grows is the dedup index: one hash
per kept document and one MinHash signature (num_perm x 4 bytes) with its LSH entries per
document seen (duplicates stay indexed, so revision chains are one cluster).

Beside each output: `<name>.manifest.json`, and beside the train output
`<name>.rejects.jsonl` (every dropped document or chunk with its reason) and
`<name>.docs.jsonl` (kept documents with hash, signature and license, which the shard
merge uses to deduplicate across shards; a shard's also lists, after them, the near
duplicates it dropped, each marked `"dropped": true`, so that the merge joins clusters
through them as one process's index does: a later version whose only near match was
dropped inside an earlier shard is still found).
"""

from __future__ import annotations

import base64
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cosmosage.dataprep.corpus.chunk import Chunker, packing_efficiency
from cosmosage.dataprep.corpus.clean import clean_text
from cosmosage.dataprep.corpus.dedup import (
    NEAR_THRESHOLD,
    NUM_PERM,
    SHINGLE,
    Decontaminator,
    MinHasher,
    exact_key,
    read_eval_prompts,
)
from cosmosage.dataprep.corpus.filters import QualityConfig, quality_reason
from cosmosage.dataprep.corpus.sources import Document, is_validation
from cosmosage.dataprep.io import (
    WRITE_ERRNOS,
    JsonlWriter,
    Manifest,
    manifest_path,
    rejects_path,
    sibling,
    write_failed,
)
from cosmosage.dataprep.records import Reject

# Manifests list at most this many inputs (memory stays flat); the `.docs.jsonl`
# sidecar lists every kept document with path, hash and license.
MAX_LISTED_INPUTS = 10_000


@dataclass
class CorpusConfig:
    sequence_len: int
    overlap: int = 0
    paragraph: bool = False
    val_fraction: float = 0.0
    seed: int = 0
    clean: bool = True
    quality: QualityConfig = field(default_factory=QualityConfig)
    filter: bool = True
    dedup: bool = True
    near_dedup: bool = True
    near_threshold: float = NEAR_THRESHOLD
    num_perm: int = NUM_PERM
    shingle: int = SHINGLE
    decontam_n: int = 8
    verify: str = "sample"
    workers: int = 1
    batch_docs: int = 256  # documents in flight in the chunker
    # With a validation output and no document drawn for it, move the last one there
    # (tiny corpora); off for shards, where each shard would do it.
    val_fallback: bool = True
    # Shards: the document sidecar also lists the near duplicates dropped (after the kept
    # documents), for the dedup across shards.
    list_near_dropped: bool = False

    def describe(self) -> dict:
        return asdict(self)


def docs_path(output: str | Path) -> Path:
    return sibling(output, ".docs.jsonl")


def encode_signature(sig: np.ndarray) -> str:
    return base64.b64encode(sig.astype("<u4").tobytes()).decode("ascii")


def decode_signature(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<u4").astype(np.uint32)


class HeldLines(JsonlWriter):
    """JSON lines kept aside in a temporary file beside `path` (not in memory, with the
    writer's errors on a full disk) and written into another writer of the same outputs
    when they commit: a shard's near duplicates dropped, after its kept documents in the
    sidecar. The file itself is removed, never committed."""

    def write_into(self, writer: JsonlWriter) -> None:
        try:
            self._fh.close()  # flushing may find the disk full
        except OSError as exc:
            self.abort()
            if exc.errno in WRITE_ERRNOS:
                raise write_failed(self.path, exc) from exc
            raise
        try:
            with open(self._tmp, encoding="utf-8", newline="") as fh:
                for line in fh:
                    writer.write_line(line)
        finally:
            self.abort()


def near_dropped_line(doc: Document, sig: np.ndarray) -> dict:
    """A shard's sidecar line for a near duplicate it dropped: a member of its cluster for
    the dedup across shards (never kept, never written to the corpus)."""
    return {"doc_id": doc.id, "path": doc.place, "dropped": True, "minhash": encode_signature(sig)}


@dataclass
class Prepared:
    doc: Document
    reason: str | None = None
    exact: str | None = None
    sig: np.ndarray | None = None


# Set per worker process by _init_worker (and in the main process for workers=1).
_CFG: CorpusConfig | None = None
_HASHER: MinHasher | None = None


def _init_worker(cfg: CorpusConfig) -> None:
    global _CFG, _HASHER
    _CFG = cfg
    _HASHER = MinHasher(num_perm=cfg.num_perm, shingle=cfg.shingle)


def prepare(item: Document | Reject) -> Prepared | Reject:
    """Clean, filter and fingerprint one document (runs in worker processes); a Reject
    from the reader passes through."""
    if isinstance(item, Reject):
        return item
    cfg, doc = _CFG, item
    text = clean_text(doc.text, doc.meta.get("kind", "markdown")) if cfg.clean else doc.text
    doc = Document(doc.id, text, doc.source, doc.meta, doc.line)
    if not text.strip():
        return Prepared(doc, "empty after cleaning")
    if cfg.filter and (reason := quality_reason(text, cfg.quality)):
        return Prepared(doc, reason)
    exact = exact_key(text) if cfg.dedup else None
    sig = _HASHER.signature(text) if cfg.dedup and cfg.near_dedup else None
    return Prepared(doc, None, exact, sig)


def prepared(items: Iterable[Document | Reject], cfg: CorpusConfig) -> Iterator[Prepared | Reject]:
    """`prepare` over a stream, in order, on `cfg.workers` processes."""
    if cfg.workers <= 1:
        _init_worker(cfg)
        yield from map(prepare, items)
        return
    import multiprocessing as mp

    ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
    with ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg,)) as pool:
        yield from pool.imap(prepare, items, chunksize=4)


@dataclass
class Repaired:
    """The kept documents whose undecodable bytes were replaced (`decode_text` allows a
    few; cleaning then drops the replacement characters), counted for the manifest."""

    documents: int = 0
    bytes: int = 0

    def add(self, entry: dict) -> None:
        if n := entry.get("undecodable_bytes"):
            self.documents, self.bytes = self.documents + 1, self.bytes + n

    def fields(self) -> dict:
        """The manifest's `undecodable_bytes` entry, only when a document had some."""
        return {"undecodable_bytes": asdict(self)} if self.documents else {}


class Outputs:
    """Train/val writers, rejects, document sidecar and manifests, all atomic."""

    def __init__(self, out: str | Path, val_out: str | Path | None, meta: dict):
        self.out, self.val_out = Path(out), Path(val_out) if val_out else None
        self.train = JsonlWriter(self.out)
        self.val = JsonlWriter(self.val_out) if self.val_out else None
        self.rejects = JsonlWriter(rejects_path(self.out))
        self.docs = JsonlWriter(docs_path(self.out))
        self.manifest = Manifest(str(self.out), extra=dict(meta))
        self.val_manifest = Manifest(str(self.val_out), extra=dict(meta)) if self.val_out else None
        self.tokens = Counter()
        self.lengths = {"train": Counter(), "val": Counter()}
        self.documents = Counter()
        self.licenses = {"train": Counter(), "val": Counter()}
        self.repaired = {"train": Repaired(), "val": Repaired()}
        self.near_dropped = HeldLines(docs_path(self.out))  # after the kept documents

    def reject(self, rej: Reject) -> None:
        self.rejects.write(rej.to_json())
        self.manifest.drop(rej.reason)
        if rej.reason.startswith("skipped file"):
            self.manifest.extra.setdefault("skipped_files", []).append(
                {"path": rej.source, "reason": rej.reason.split(": ", 1)[1]}
            )

    def write_doc(
        self, side: str, doc: Document, chunks: list[dict], exact: str | None, sig
    ) -> None:
        writer = self.val if side == "val" else self.train
        manifest = self.val_manifest if side == "val" else self.manifest
        for rec in chunks:
            writer.write(rec)
            self.tokens[side] += rec["tokens"]
            self.lengths[side][rec["tokens"]] += 1
        self.documents[side] += 1
        entry = {
            "path": doc.place,
            "doc_id": doc.id,
            "license": doc.meta.get("license", "unknown"),
        }
        for key in ("sha256", "undecodable_bytes"):
            if key in doc.meta:
                entry[key] = doc.meta[key]
        self.repaired[side].add(entry)
        if len(manifest.inputs) < MAX_LISTED_INPUTS:
            manifest.inputs.append(entry)
        self.licenses[side][entry["license"]] += 1
        side_rec = {"doc_id": doc.id, "split": side, "exact": exact, "chunks": len(chunks), **entry}
        if sig is not None:
            side_rec["minhash"] = encode_signature(sig)
        self.docs.write(side_rec)

    def commit(self, sequence_len: int) -> dict:
        self.near_dropped.write_into(self.docs)
        for w in (self.train, self.val, self.rejects, self.docs):
            if w is not None:
                w.commit()
        m = self.manifest
        m.kept = self.train.count
        m.tokens = self.tokens["train"]
        m.extra.update(
            documents=self.documents["train"],
            packing_efficiency=packing_efficiency(self.lengths["train"], sequence_len),
            licenses=dict(self.licenses["train"]),
            rejects=str(rejects_path(self.out)),
            docs=str(docs_path(self.out)),
            inputs_listed=f"{len(m.inputs)} of {self.documents['train']} (all in docs)",
            **self.repaired["train"].fields(),
        )
        m.write()
        result = {
            "output": str(self.out),
            "records": m.kept,
            "tokens": m.tokens,
            "documents": self.documents["train"],
            "dropped": dict(m.dropped),
        }
        result.update(self.repaired["train"].fields())
        if m.extra.get("skipped_files"):
            result["skipped_files"] = [s["path"] for s in m.extra["skipped_files"]]
        if self.val is not None:
            vm = self.val_manifest
            vm.kept = self.val.count
            vm.tokens = self.tokens["val"]
            vm.extra.update(
                documents=self.documents["val"],
                licenses=dict(self.licenses["val"]),
                dropped_see=str(manifest_path(self.out)),
                docs=str(docs_path(self.out)),
                **self.repaired["val"].fields(),
            )
            vm.write()
            result.update(val_output=str(self.val_out), val_records=vm.kept, val_tokens=vm.tokens)
        return result

    def abort(self) -> None:
        self.near_dropped.abort()
        for w in (self.train, self.val, self.rejects, self.docs):
            if w is not None:
                w.abort()


def run_corpus(
    items: Iterable[Document | Reject],
    out: str | Path,
    tokenizer,
    cfg: CorpusConfig,
    val_out: str | Path | None = None,
    prompts: Iterable[str] = (),
    meta: dict | None = None,
    filters: Iterable = (),
    two_pass=None,
) -> dict:
    """Run the whole pipeline over `items` and write outputs, rejects and manifests: the
    datatrove steps of dataprep/corpus/datatrove_steps.py, chained in this process. `filters`:
    datatrove filters to run after the project's own (their drops join the rejects).
    `two_pass` (a prepared.TwoPass, for an executor's shard task): its first pass stops
    before tokenizing and writes what it kept; its second reads that back (not `items`)
    and writes the shard's outputs."""
    from cosmosage.dataprep.corpus.datatrove_steps import (
        CorpusWriter,
        RejectsWriter,
        Sink,
        corpus_steps,
        run_steps,
    )
    from cosmosage.dataprep.corpus.prepared import CrossShardDrop, PreparedReader, PreparedWriter

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    info = {"sequence_len": cfg.sequence_len, "config": cfg.describe(), **(meta or {})}
    sink = Sink(out, val_out, info)
    sink.whole = sink.whole and two_pass is None  # an executor's task is one shard
    if two_pass is None:
        steps = corpus_steps(items, sink, tokenizer, cfg, prompts, filters)
    elif two_pass.phase == "prepare":
        steps = [*corpus_steps(items, sink, tokenizer, cfg, (), filters)[:-1],
                 PreparedWriter(sink, two_pass)]  # fmt: skip
    else:
        steps = [
            PreparedReader(sink, two_pass),
            CrossShardDrop(two_pass, RejectsWriter(sink, later=True)),
            CorpusWriter(sink, tokenizer, cfg, prompts),
        ]
    run_steps(steps)
    return sink.result


def write_chunks(
    p: Prepared,
    chunks: list,
    chunker: Chunker,
    decon: Decontaminator,
    outs: Outputs,
    cfg: CorpusConfig,
    held,
):
    """Decontaminate one document's chunks and write them to its side of the split."""
    doc = p.doc
    records = []
    for c in chunks:
        if c.tokens > chunker.max_tokens:
            why = f"chunk over budget: chunk {c.index} has {c.tokens} tokens > {chunker.max_tokens}"
            outs.reject(Reject(doc.source, doc.line, why, {"doc_id": doc.id}))
            continue
        if decon and (why := decon.reason(c.text)):
            outs.reject(
                Reject(
                    doc.source, doc.line, why, {"doc_id": doc.id, "chunk": c.index, "text": c.text}
                )
            )
            continue
        records.append({"text": c.text, "doc_id": doc.id, "chunk": c.index, "tokens": c.tokens})
    if not records:
        outs.reject(Reject(doc.source, doc.line, "no chunks left", {"doc_id": doc.id}))
        return held
    if outs.val is not None and is_validation(doc.id, cfg.val_fraction, cfg.seed):
        outs.write_doc("val", doc, records, p.exact, p.sig)
        return held
    if held is not None:
        outs.write_doc("train", *held)
    return (doc, records, p.exact, p.sig)


def build_files(
    inputs: list[str],
    out: str | Path,
    tokenizer: str,
    cfg: CorpusConfig,
    val_out: str | Path | None = None,
    shard: tuple[int, int] | None = None,
    prompts_files: Iterable[str | Path] = (),
) -> dict:
    """Files and folders (md, mmd, txt, tex, pdf, source archives) -> corpus outputs."""
    from cosmosage.dataprep.corpus.sources import read_file_documents

    prompts = [p for f in prompts_files for p in read_eval_prompts(f)]
    meta = {
        "tokenizer": str(tokenizer),
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
        "prompt_files": [str(f) for f in prompts_files],
    }
    return run_corpus(
        read_file_documents(inputs, shard), out, tokenizer, cfg, val_out, prompts, meta
    )
