"""The corpus pipeline as datatrove pipeline steps, chained as datatrove chains them.

    CorpusReader -> CleanAndFilter -> [any datatrove filter] -> ShardDedup -> CorpusWriter

Every step is a datatrove `PipelineStep` (the two filters `BaseFilter`s) and passes
datatrove `Document`s, each carrying its `Prepared` record (cleaned text, exact key,
MinHash signature) in `metadata["prepared"]`. Whatever a filter drops goes through its
exclusion writer, a `RejectsWriter`: the document becomes one line of the task's rejects
file with the filter's reason, counted in the manifest, written atomically with the
other outputs when the task ends. So a datatrove filter of a user's (a `RegexFilter`, a
`LanguageFilter`, ...) slots in with its drops and their reasons in the same rejects
file (`run_corpus(..., filters=[...])`).

`run_corpus` (dataprep/corpus/pipeline.py) runs these steps in one process; under
`--executor` each shard does (dataprep/corpus/executors.py), in two passes around the
stages across shards (dataprep/corpus/prepared.py):

    CorpusReader -> CleanAndFilter -> [filters] -> ShardDedup -> PreparedWriter
    PreparedReader -> CrossShardDrop -> CorpusWriter
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from datatrove.data import Document as Doc
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.typeshelper import StatHints

from cosmosage.dataprep.corpus.chunk import Chunker
from cosmosage.dataprep.corpus.dedup import Decontaminator, Deduplicator
from cosmosage.dataprep.corpus.pipeline import (
    CorpusConfig,
    Outputs,
    Prepared,
    near_dropped_line,
    prepared,
    write_chunks,
)
from cosmosage.dataprep.corpus.sources import Document
from cosmosage.dataprep.io import failed_rejects_path
from cosmosage.dataprep.records import DataError, Reject


def carried(item: Document | Prepared | Reject) -> Doc:
    """A datatrove Document carrying one of ours: a document as read, a prepared one, or
    a reader's Reject (`_ours` takes it back out)."""
    if isinstance(item, Reject):
        return Doc(text="", id=item.source, metadata={"reject": item})
    if isinstance(item, Document):
        return Doc(text=item.text, id=item.id, metadata={"document": item})
    return Doc(text=item.doc.text, id=item.doc.id, metadata={"prepared": item})


class Sink:
    """The outputs one run (or one shard task) writes, shared by its writer and the
    exclusion writers of its filters; `CorpusWriter` opens them when the task starts."""

    def __init__(self, out: str | Path, val_out: str | Path | None, meta: dict):
        self.out, self.val_out, self.meta = out, val_out, meta
        self.outs: Outputs | None = None
        self.result: dict | None = None
        self.late: list[Reject] = []  # rejects listed after every document's own
        # the whole corpus, not one shard of it (a shard may hold nothing): keeping nothing
        # is then an error, and no output is replaced
        self.whole = not meta.get("shard")

    def open(self) -> Outputs:
        self.outs = Outputs(self.out, self.val_out, self.meta)
        return self.outs


def plural(reason: str) -> str:
    """ "empty file" -> "empty files": a count's reason, when it names a file."""
    return reason[:-4] + "files" if reason.endswith(" file") else reason


def nothing_kept(out: str | Path, dropped) -> str:
    reasons = ", ".join(
        f"{n} {plural(why) if n > 1 else why}"
        for why, n in sorted(dropped.items(), key=lambda x: -x[1])
    )
    return (
        f"{out}: nothing kept ({reasons or 'no documents read'}); the reasons are in "
        f"{failed_rejects_path(out)}; no output was written"
        + (" and the earlier one is left as it was" if Path(out).exists() else "")
    )


class RejectsWriter(DiskWriter):
    """A filter's exclusion writer: each dropped document becomes a line of the task's
    rejects file, with the reason the filter gave (`metadata["filter_reason"]`) or, for a
    filter that gives none, `reason`. It writes into the task's atomic outputs, which
    commit or roll back together, so entering and leaving it opens and closes nothing.
    With `later`, the lines wait until every document's own rejects are written (the
    order `merge-shards` lists the documents it drops across shards in)."""

    name = "rejects"
    type = "cosmosage"

    def __init__(self, sink: Sink, reason: str = "dropped", later: bool = False):
        PipelineStep.__init__(self)  # datatrove's opens a folder of its own files
        self.sink, self.reason, self.later = sink, reason, later

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        return None

    def close(self):
        return None

    def _write(self, document: dict, file_handler, filename: str):
        raise NotImplementedError("RejectsWriter writes through write()")

    def write(self, document: Doc, rank: int = 0, **kwargs):
        md = document.metadata
        if (rej := md.get("reject")) is None:
            p: Prepared = md["prepared"]
            why = p.reason or md.get("filter_reason") or self.reason
            rej = Reject(p.doc.source, p.doc.line, why, {"doc_id": p.doc.id})
        if self.later:
            self.sink.late.append(rej)
        else:
            self.sink.outs.reject(rej)
        self.stat_update(StatHints.total)


class CorpusReader(PipelineStep):
    """Documents (and the reader's Rejects: unreadable or skipped files) into the pipeline."""

    name = "corpus reader"
    type = "cosmosage"

    def __init__(self, items: Iterable[Document | Reject]):
        super().__init__()
        self.items = items

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        for item in self.items:
            self.stat_update(StatHints.total)
            yield carried(item)


class CleanAndFilter(BaseFilter):
    """Cleaning, the quality filters and the fingerprints (`pipeline.prepare`, on
    `cfg.workers` processes); the reader's Rejects and the documents a filter refuses go
    to the exclusion writer."""

    name = "clean and filter"
    type = "cosmosage"

    def __init__(self, cfg: CorpusConfig, exclusion_writer: DiskWriter):
        super().__init__(exclusion_writer)
        self.cfg = cfg

    def filter(self, doc: Doc) -> bool | tuple[bool, str]:
        (item,) = prepared([_ours(doc)], replace(self.cfg, workers=1))  # no pool per document
        doc.metadata = carried(item).metadata
        return True if item.reason is None else (False, item.reason)

    def run(self, data, rank: int = 0, world_size: int = 1):
        with self.exclusion_writer as writer:
            for item in prepared((_ours(d) for d in data), self.cfg):
                self.stat_update(StatHints.total)
                doc = carried(item)
                if isinstance(item, Reject) or item.reason is not None:
                    self.stat_update(StatHints.dropped)
                    writer.write(doc, rank)
                    continue
                self.stat_update(StatHints.forwarded)
                yield doc


def _ours(doc: Doc) -> Document | Reject:
    md = doc.metadata
    if "reject" in md:
        return md["reject"]
    if "prepared" in md:
        return md["prepared"].doc
    return md["document"]


class ShardDedup(BaseFilter):
    """Exact and near duplicates among the documents of this run (or shard task), first
    copy kept; across shards the executor's datatrove stages or `merge-shards` take over,
    from the shard's document sidecar (with `cfg.list_near_dropped`, the near duplicates
    dropped here are listed there too, as members of their clusters)."""

    name = "dedup"
    type = "cosmosage"

    def __init__(self, cfg: CorpusConfig, exclusion_writer: DiskWriter, sink: Sink):
        super().__init__(exclusion_writer)
        self.cfg, self.sink = cfg, sink
        self.dedup: Deduplicator | None = None

    def filter(self, doc: Doc) -> bool | tuple[bool, str]:
        p: Prepared = doc.metadata["prepared"]
        if reason := self.dedup.check(p.doc.id, p.exact, p.sig):
            if self.cfg.list_near_dropped and reason.startswith("near duplicate"):
                self.sink.outs.near_dropped.write(near_dropped_line(p.doc, p.sig))
            return False, reason
        return True

    def run(self, data, rank: int = 0, world_size: int = 1):
        cfg = self.cfg
        self.dedup = Deduplicator(cfg.near_dedup, cfg.near_threshold, cfg.num_perm, cfg.shingle)
        yield from super().run(data, rank, world_size)


class CorpusWriter(PipelineStep):
    """Token-exact chunks, decontamination and the train/validation split, written with
    the manifests, rejects and document sidecar. Runs when called (it drains the steps
    before it), then commits every output at once, or none on an error."""

    name = "corpus writer"
    type = "cosmosage"

    def __init__(self, sink: Sink, tokenizer, cfg: CorpusConfig, prompts: Iterable[str]):
        super().__init__()
        self.sink, self.tokenizer, self.cfg, self.prompts = sink, tokenizer, cfg, list(prompts)

    def run(self, data, rank: int = 0, world_size: int = 1):
        cfg = self.cfg
        chunker = Chunker(self.tokenizer, cfg.sequence_len - 2, cfg.overlap, cfg.paragraph,
                          cfg.verify, cfg.batch_docs)  # fmt: skip
        decon = Decontaminator(self.prompts, cfg.decontam_n)
        outs = self.sink.open()
        try:
            documents = ((d.metadata["prepared"], d.text) for d in data)
            held = None  # the last train document, kept back for the tiny-corpus val fallback
            for p, chunks in chunker.stream(documents):
                held = write_chunks(p, chunks, chunker, decon, outs, cfg, held)
                self.stat_update(StatHints.forwarded)
            if held is not None:
                fallback = (cfg.val_fallback and outs.val is not None and cfg.val_fraction > 0
                            and outs.val.count == 0 and outs.documents["train"] >= 1)  # fmt: skip
                outs.write_doc("val" if fallback else "train", *held)
            if chunker.stats["over_budget"]:
                outs.manifest.dropped["chunk over budget"] += chunker.stats["over_budget"]
            outs.manifest.extra["chunker"] = dict(chunker.stats)
            for rej in self.sink.late:
                outs.reject(rej)
            if self.sink.whole and not outs.train.count and not (outs.val and outs.val.count):
                outs.rejects.path = failed_rejects_path(self.sink.out)  # the rest is not kept
                outs.rejects.commit()
                outs.rejects = None
                raise DataError(nothing_kept(self.sink.out, outs.manifest.dropped))
            self.sink.result = outs.commit(cfg.sequence_len)
        except BaseException:
            outs.abort()
            raise
        return None


def corpus_steps(
    items: Iterable[Document | Reject],
    sink: Sink,
    tokenizer,
    cfg: CorpusConfig,
    prompts: Iterable[str] = (),
    filters: Iterable[BaseFilter] = (),
) -> list[PipelineStep]:
    """The steps of one run over `items`. `filters` (datatrove filters) run after the
    project's own, each with a `RejectsWriter` as its exclusion writer unless it has one
    (a filter that gives no reason is named by its class)."""
    steps: list[PipelineStep] = [
        CorpusReader(items),
        CleanAndFilter(cfg, RejectsWriter(sink)),
    ]
    for f in filters:
        f.exclusion_writer = f.exclusion_writer or RejectsWriter(sink, type(f).__name__)
        steps.append(f)
    if cfg.dedup:
        steps.append(ShardDedup(cfg, RejectsWriter(sink), sink))
    steps.append(CorpusWriter(sink, tokenizer, cfg, prompts))
    return steps


def run_steps(steps: list[PipelineStep], rank: int = 0, world_size: int = 1) -> None:
    """Chain the steps as a datatrove task does: each takes the one before's output."""
    data = None
    for step in steps:
        data = step(data, rank, world_size)
    if data:
        deque(data, maxlen=0)
