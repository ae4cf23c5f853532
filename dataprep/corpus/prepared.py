"""The two passes of an executor's shard task: duplicates across shards are dropped
before they are tokenized.

Under `--executor` with dedup on, shard task r runs twice:

1. *prepare* (stage `shards`): read, clean, filter, deduplicate within the shard and
   fingerprint, as `--shard r/N` does, then write what it kept under
   `OUT.datatrove/prepared/`: `r.docs.jsonl` (per kept document, in order: its id,
   path, exact key and MinHash signature; then the near duplicates the shard dropped,
   marked `dropped`, members of their clusters only; datatrove's exact and MinHash
   stages read it),
   `r.text.pkl` (its cleaned text and metadata) and `r.rejects.pkl` (what the pass
   dropped, with the reasons);
2. *write* (stage `chunks`, after the clusters): the documents the cross-shard verdicts
   (`OUT.datatrove/minhash/verdicts/r.jsonl`) leave (`CrossShardDrop`, a datatrove filter
   whose exclusion writer lists the others), tokenized into token-exact chunks and
   written as `--shard r/N` writes them (train, validation, rejects, document sidecar,
   manifest), with the first pass's rejects first and the documents dropped across
   shards last, as `merge-shards` lists them.

So the copies of a document in another shard are never tokenized (the tokenizer is most
of a shard task's time); the merge only joins the shards. Every file is written
atomically when its pass ends. The `.text.pkl` files hold the corpus's cleaned text and
are removed once the merge has written the corpus.
"""

from __future__ import annotations

import itertools
import pickle
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from datatrove.data import Document as Doc
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.typeshelper import StatHints

from cosmosage.dataprep.corpus.datatrove_steps import Sink, carried
from cosmosage.dataprep.corpus.pipeline import (
    HeldLines,
    Prepared,
    decode_signature,
    encode_signature,
)
from cosmosage.dataprep.corpus.sources import Document
from cosmosage.dataprep.io import JsonlWriter, read_jsonl, sibling
from cosmosage.dataprep.records import DataError, Reject, reason_group

PHASES = ("prepare", "write")


def state_dir(out: str | Path) -> Path:
    """Where datatrove keeps its logs, stats and completion markers for OUT, and the
    executor what passes between its stages."""
    return sibling(out, ".datatrove")


def prepared_path(out: str | Path, rank: int, kind: str) -> Path:
    """Shard `rank`'s first-pass file of `kind` (docs.jsonl, text.pkl, rejects.pkl)."""
    return state_dir(out) / "prepared" / f"{rank:05d}.{kind}"


def verdicts_path(out: str | Path, rank: int) -> Path:
    """Shard `rank`'s documents that duplicate one kept in an earlier place, with why."""
    return state_dir(out) / "minhash" / "verdicts" / f"{rank:05d}.jsonl"


@dataclass(frozen=True)
class TwoPass:
    """Which pass of shard `rank` of OUT (the merged output's name) runs."""

    out: str
    rank: int
    phase: str

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ValueError(f"phase {self.phase!r}: one of {PHASES}")


class PickleWriter(JsonlWriter):
    """JsonlWriter's atomic file (and its errors on a full disk), holding objects pickled
    one after another (any text, as cleaned, round-trips exactly)."""

    binary = True

    def write(self, obj) -> None:
        self._put(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def read_pickles(path: Path) -> Iterator:
    if not path.exists():
        raise DataError(
            f"{path}: missing; the first pass of this shard (stage shards) did not finish"
        )
    with open(path, "rb") as fh:
        for n in itertools.count(1):
            try:
                yield pickle.load(fh)
            except EOFError:
                return
            except (pickle.UnpicklingError, ValueError) as exc:
                raise DataError(
                    f"{path}: record {n}: cut or corrupt ({exc}); delete it and the shard's "
                    "completion marker under shards/completions/, and run the command again"
                ) from None


class PreparedOutputs:
    """What the first pass writes (in place of `Outputs`; the filters' `RejectsWriter`s
    write their drops through `reject`)."""

    def __init__(self, where: TwoPass):
        out, rank = where.out, where.rank
        self.docs = JsonlWriter(prepared_path(out, rank, "docs.jsonl"))
        self.text = PickleWriter(prepared_path(out, rank, "text.pkl"))
        self.rejects = PickleWriter(prepared_path(out, rank, "rejects.pkl"))
        self.dropped: Counter = Counter()
        self.kept = 0
        self.near_dropped = HeldLines(prepared_path(out, rank, "docs.jsonl"))  # after the kept

    def reject(self, rej: Reject) -> None:
        self.rejects.write(rej)
        self.dropped[reason_group(rej.reason)] += 1

    def write(self, p: Prepared) -> None:
        d = p.doc
        rec = {"doc_id": d.id, "path": d.place, "exact": p.exact}
        if p.sig is not None:
            rec["minhash"] = encode_signature(p.sig)
        self.docs.write(rec)
        self.text.write((d.id, d.text, d.source, d.meta, d.line))
        self.kept += 1

    def commit(self) -> dict:
        self.near_dropped.write_into(self.docs)
        for w in (self.docs, self.text, self.rejects):
            w.commit()
        return {"documents": self.kept, "dropped": dict(self.dropped)}

    def abort(self) -> None:
        self.near_dropped.abort()
        for w in (self.docs, self.text, self.rejects):
            w.abort()


class PreparedWriter(PipelineStep):
    """The end of the first pass: the documents the shard keeps, cleaned and fingerprinted,
    written for the second (and for datatrove's dedup stages)."""

    name = "prepared writer"
    type = "cosmosage"

    def __init__(self, sink: Sink, where: TwoPass):
        super().__init__()
        self.sink, self.where = sink, where

    def run(self, data, rank: int = 0, world_size: int = 1):
        outs = self.sink.outs = PreparedOutputs(self.where)
        try:
            for doc in data:
                outs.write(doc.metadata["prepared"])
                self.stat_update(StatHints.forwarded)
            self.sink.result = outs.commit()
        except BaseException:
            outs.abort()
            raise
        return None


class PreparedReader(PipelineStep):
    """The start of the second pass: the first pass's rejects into this shard's rejects,
    then the documents it kept, each with its index in the shard (what the verdicts name
    it by); the near duplicates it dropped, listed after them in its fingerprints, go
    into this shard's sidecar again, as `--shard` lists them."""

    name = "prepared reader"
    type = "cosmosage"

    def __init__(self, sink: Sink, where: TwoPass):
        super().__init__()
        self.sink, self.where = sink, where

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> Iterator[Doc]:
        out, r = self.where.out, self.where.rank
        outs = self.sink.outs  # opened by the writer before it asks for documents
        for rej in read_pickles(prepared_path(out, r, "rejects.pkl")):
            outs.reject(rej)
        texts = read_pickles(prepared_path(out, r, "text.pkl"))
        kept, record = 0, ()  # record: None once a kept line finds no text
        for index, (lineno, fp) in enumerate(read_jsonl(prepared_path(out, r, "docs.jsonl"))):
            if isinstance(fp, Reject):
                raise DataError(f"{fp.source}:{lineno}: {fp.reason}")
            if fp.get("dropped"):  # a near duplicate the first pass dropped: listed again
                outs.near_dropped.write(fp)
                continue
            if (record := next(texts, None)) is None:
                break
            kept += 1
            doc_id, text, source, meta, *line = record  # no line: written before lines were kept
            sig = decode_signature(fp["minhash"]) if fp.get("minhash") else None
            doc = Document(doc_id, text, source, meta, line[0] if line else None)
            doc = carried(Prepared(doc, None, fp.get("exact"), sig))
            doc.metadata["index"] = index
            self.stat_update(StatHints.total)
            yield doc
        if record is None or next(texts, None) is not None:
            raise DataError(
                f"{prepared_path(out, r, 'docs.jsonl')}: its kept documents and the records "
                f"of {prepared_path(out, r, 'text.pkl')} differ in number (from record "
                f"{kept + 1}): run this shard's first pass again"
            )


class CrossShardDrop(BaseFilter):
    """The second pass's filter: a document the cross-shard verdicts name is dropped, with
    their reason and "(across shards)", through its exclusion writer (a RejectsWriter that
    lists them after the shard's own rejects)."""

    name = "cross-shard drop"
    type = "cosmosage"

    def __init__(self, where: TwoPass, exclusion_writer):
        super().__init__(exclusion_writer)
        self.where, self.verdicts = where, None

    def filter(self, doc: Doc) -> bool | tuple[bool, str]:
        if (why := self.verdicts.get(doc.metadata["index"])) is None:
            return True
        return False, f"{why} (across shards)"

    def run(self, data, rank: int = 0, world_size: int = 1):
        path = verdicts_path(self.where.out, self.where.rank)
        if not path.exists():
            raise DataError(f"{path}: missing; the clusters stage did not finish")
        self.verdicts = {}
        for lineno, rec in read_jsonl(path):
            if isinstance(rec, Reject) or not {"index", "reason"} <= rec.keys():
                why = rec.reason if isinstance(rec, Reject) else "no index or reason"
                raise DataError(f"{path}:{lineno}: {why}")
            self.verdicts[rec["index"]] = rec["reason"]
        yield from super().run(data, rank, world_size)


def remove_texts(out: str | Path) -> None:
    """The first passes' cleaned texts, once the corpus is written (the size of the corpus)."""
    for f in (state_dir(out) / "prepared").glob("*.text.pkl"):
        f.unlink(missing_ok=True)
