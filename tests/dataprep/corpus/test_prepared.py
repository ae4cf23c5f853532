"""The two passes of an executor's shard task (dataprep/corpus/prepared.py): what the
first writes, the second reads back exactly, less the documents the cross-shard
verdicts name, which join the rejects last; a pass that did not run is named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cosmosage.dataprep.corpus.datatrove_steps import RejectsWriter, Sink, carried
from cosmosage.dataprep.corpus.pipeline import Prepared
from cosmosage.dataprep.corpus.prepared import (
    CrossShardDrop,
    PreparedReader,
    PreparedWriter,
    TwoPass,
    prepared_path,
    verdicts_path,
)
from cosmosage.dataprep.corpus.sources import Document
from cosmosage.dataprep.records import DataError, Reject


def test_the_second_pass_reads_back_what_the_first_kept(tmp_path):

    out = tmp_path / "c.jsonl"
    sig = (np.arange(7, 7 + 128, dtype=np.uint64) * 2654435761 % 2**32).astype(np.uint32)
    kept = [
        Prepared(Document("a.md", "Caf\u00e9 $\\alpha_s$ \u2014 \U0001d4d7\n\nline\r\n", "in/a.md",
                          {"license": "cc-by-4.0", "kind": "markdown"}), None, "key-a", sig),
        Prepared(Document("b.md", "b text", "in/b.md", {}), None, "key-b", None),
        Prepared(Document("c.md", "c text", "in/c.md", {"kind": "latex"}), None, "key-c", sig),
    ]  # fmt: skip
    short = Reject("in/d.md", None, "too short: 3 words", {"doc_id": "d.md"})
    first = Sink(out, None, {})

    def stream():  # as the filters' exclusion writers reject while the writer pulls
        first.outs.reject(short)
        yield from map(carried, kept)

    PreparedWriter(first, TwoPass(str(out), 2, "prepare")).run(stream())
    assert first.result == {"documents": 3, "dropped": {"too short": 1}}
    fingerprints = [
        json.loads(x) for x in prepared_path(out, 2, "docs.jsonl").read_text().splitlines()
    ]
    assert [f["doc_id"] for f in fingerprints] == ["a.md", "b.md", "c.md"]
    assert "minhash" not in fingerprints[1] and fingerprints[0]["exact"] == "key-a"

    second = Sink(out, None, {})

    class Outs:
        rejected: list = []

        def reject(self, rej):
            self.rejected.append(rej)

    second.outs = Outs()
    where = TwoPass(str(out), 2, "write")
    reader = PreparedReader(second, where)

    def second_pass():  # the reader, then the verdicts' filter with its exclusion writer
        drop = CrossShardDrop(where, RejectsWriter(second, later=True))
        return [d.metadata["prepared"] for d in drop.run(reader.run())]

    with pytest.raises(Exception, match=r"verdicts/00002\.jsonl: missing"):
        second_pass()
    why = "near duplicate: of z.md (Jaccard ~0.91)"
    verdicts_path(out, 2).parent.mkdir(parents=True)
    verdicts_path(out, 2).write_text(json.dumps({"index": 1, "doc_id": "b.md", "reason": why}))
    second.outs.rejected.clear()
    got = second_pass()
    assert [p.doc for p in got] == [kept[0].doc, kept[2].doc]
    assert [p.exact for p in got] == ["key-a", "key-c"] and all(p.reason is None for p in got)
    assert all(np.array_equal(p.sig, sig) for p in got)
    assert second.outs.rejected == [short], "the first pass's rejects, in place"
    assert second.late == [Reject("in/b.md", None, f"{why} (across shards)", {"doc_id": "b.md"})]

    prepared_path(out, 2, "text.pkl").unlink()
    with pytest.raises(Exception, match=r"00002\.text\.pkl: missing; the first pass"):
        list(reader.run())  # the reader alone
    with pytest.raises(ValueError, match="phase"):
        TwoPass(str(out), 0, "tokenize")


def test_a_cut_or_mismatched_first_pass_file_is_named(tmp_path):
    """The second pass reads files the first wrote atomically; should one be cut or the
    two disagree, the error names the file (and line or record) and what to run."""

    out = tmp_path / "c.jsonl"
    docs = [Prepared(Document(f"{k}.md", f"text {k}", f"in/{k}.md", {}), None, f"key-{k}", None)
            for k in "abc"]  # fmt: skip
    first = Sink(out, None, {})
    PreparedWriter(first, TwoPass(str(out), 0, "prepare")).run(map(carried, docs))
    where = TwoPass(str(out), 0, "write")

    def second_pass():
        sink = Sink(out, None, {})
        sink.outs = type("Outs", (), {"reject": lambda self, rej: None})()
        drop = CrossShardDrop(where, RejectsWriter(sink, later=True))
        return list(drop.run(PreparedReader(sink, where).run()))

    verdicts = verdicts_path(out, 0)
    verdicts.parent.mkdir(parents=True)
    verdicts.write_text('{"index": 1}\n')
    with pytest.raises(DataError, match=r"verdicts/00000\.jsonl:1: no index or reason"):
        second_pass()
    verdicts.write_text("")
    assert len(second_pass()) == 3

    text = prepared_path(out, 0, "text.pkl")
    whole = text.read_bytes()
    text.write_bytes(whole[: len(whole) - 5])
    with pytest.raises(DataError, match=r"00000\.text\.pkl: record 3: cut or corrupt"):
        second_pass()
    fingerprints = prepared_path(out, 0, "docs.jsonl")
    text.write_bytes(whole)
    lines = fingerprints.read_text().splitlines()
    fingerprints.write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(DataError, match=r"differ in number \(from record 3\)"):
        second_pass()
    fingerprints.write_text(lines[0] + "\n" + lines[1][:20] + "\n" + lines[2] + "\n")
    with pytest.raises(DataError, match=r"00000\.docs\.jsonl:2: "):
        second_pass()
