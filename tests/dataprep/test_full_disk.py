"""A full disk or a read-only folder: every data command says in one line which output
could not be written, leaves no temporary file and no half set of outputs, and prints
no traceback. The disk fills through a fault-injected writer (each command's files are
opened through dataprep/io.py, the one module that writes), after `budget` bytes."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cosmosage.dataprep.io as dio
from cosmosage.tools.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
REAL_OPEN = open


class FullDisk:
    """A file whose writes fail with ENOSPC once `budget` bytes are spent; closing it
    fails again while anything is unwritten, as flushing a full disk does."""

    def __init__(self, fh, budget: list[int]):
        self.fh, self.budget, self.dirty = fh, budget, False

    def write(self, data):
        self.budget[0] -= len(data)
        if self.budget[0] < 0:
            self.dirty = True
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.fh.write(data)

    def close(self):
        self.fh.close()
        if self.dirty:
            self.dirty = False
            raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getattr__(self, name):
        return getattr(self.fh, name)


@pytest.fixture
def full_disk(monkeypatch):
    budget = [0]

    def fake_open(path, mode="r", *args, **kwargs):
        fh = REAL_OPEN(path, mode, *args, **kwargs)
        return FullDisk(fh, budget) if ("w" in mode or "a" in mode) else fh

    monkeypatch.setattr(dio, "open", fake_open, raising=False)
    return budget


def commands(tmp: Path, tiny_model: Path) -> dict[str, list[str]]:
    chat = tmp / "in.jsonl"
    chat.write_text(
        "".join(
            json.dumps({"conversations": [{"from": "human", "value": f"Question {i}?"},
                                          {"from": "gpt", "value": f"Answer number {i}."}]}) + "\n"
            for i in range(200)
        )
    )  # fmt: skip
    spec = tmp / "mix.yaml"
    spec.write_text(
        f"seed: 0\ntokenizer: {tiny_model}\nsequence_len: 256\nvalidation: 0.1\n"
        f"out: {tmp / 'out' / 'mix.jsonl'}\nval_out: {tmp / 'out' / 'mix.val.jsonl'}\n"
        f"sources:\n  - {{name: s, path: {chat}, weight: 1.0}}\n"
    )
    out = tmp / "out"
    return {
        "convert": ["data", "convert", str(chat), "--out", str(out / "c.jsonl")],
        "structured": ["data", "structured", str(ROOT / "samples/structured/canto_refs.jsonl"),
                       "--schema", str(ROOT / "samples/structured/canto_refs.schema.yaml"),
                       "--instruction", "As JSON.", "--out", str(out / "s.jsonl")],
        "mix": ["data", "mix", str(spec)],
        "facts": ["data", "facts", str(ROOT / "samples/facts/cosmology_facts.yaml"), "--out-dir", str(out)],
        "corpus": ["data", "corpus", str(ROOT / "samples/textbook"), "--tokenizer", str(tiny_model),
                   "--sequence-len", "128", "--out", str(out / "corpus.jsonl"),
                   "--val-out", str(out / "corpus.val.jsonl"), "--val-fraction", "0.2"],
    }  # fmt: skip


@pytest.mark.parametrize("name", ["convert", "structured", "mix", "facts", "corpus"])
@pytest.mark.parametrize("budget", [0, 3000])
def test_a_full_disk_is_one_line_and_leaves_nothing_behind(
    name, budget, full_disk, tmp_path, tiny_model
):
    args = commands(tmp_path, tiny_model)[name]
    (tmp_path / "out").mkdir()
    full_disk[0] = budget
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and res.exception is not None
    error = [x for x in res.output.splitlines() if x.startswith("Error:")]
    assert len(error) == 1 and error[0].endswith(
        "could not be written: No space left on device; nothing was kept"
    )
    assert str(tmp_path / "out") in error[0] and ".tmp" not in error[0]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == []


def test_a_read_only_output_folder_is_refused_before_any_work(tmp_path, tiny_model, monkeypatch):
    args = commands(tmp_path, tiny_model)
    real_access = dio.os.access
    ro = tmp_path / "out"
    ro.mkdir()

    def access(path, mode, **kw):  # a read-only file system: nothing may be written there
        return False if Path(path) == ro and mode & dio.os.W_OK else real_access(path, mode, **kw)

    monkeypatch.setattr(dio.os, "access", access)
    for name in ("convert", "mix", "facts", "corpus"):
        res = CliRunner().invoke(main, args[name])
        assert res.exit_code == 1 and "Traceback" not in res.output, (name, res.output)
        assert f"cannot write into {ro} (a read-only file system or no permission)" in res.output, (
            name
        )


def test_the_executors_first_pass_files_fail_as_every_output_does(full_disk, tmp_path):
    """The cleaned texts a shard's first pass keeps for its second go through the same
    atomic writer: a full disk is one error naming the file, and nothing is left."""
    from cosmosage.dataprep.corpus.prepared import PickleWriter
    from cosmosage.dataprep.records import DataError

    full_disk[0] = 64
    writer = PickleWriter(tmp_path / "00003.text.pkl")
    with pytest.raises(DataError, match=r"00003\.text\.pkl.* could not be written: No space"):
        writer.write(("a.md", "text " * 50, "in/a.md", {"kind": "markdown"}))
    assert sorted(tmp_path.iterdir()) == []


def test_a_shards_held_sidecar_lines_fail_as_every_output_does(full_disk, tmp_path):
    """The near duplicates a shard dropped wait in a temporary file beside its sidecar
    and follow its kept documents there; a full disk, while they wait or when they are
    flushed, is one error naming the sidecar, and nothing is left."""
    from cosmosage.dataprep.corpus.pipeline import HeldLines
    from cosmosage.dataprep.io import JsonlWriter
    from cosmosage.dataprep.records import DataError

    sidecar = tmp_path / "c.shard-00000-of-00002.docs.jsonl"
    full_disk[0] = 10**6
    held, docs = HeldLines(sidecar), JsonlWriter(sidecar)
    held.write({"doc_id": "v2.md", "dropped": True})
    docs.write({"doc_id": "v1.md"})
    held.write_into(docs)
    docs.commit()
    assert [json.loads(x)["doc_id"] for x in sidecar.read_text().splitlines()] == ["v1.md", "v2.md"]
    assert sorted(tmp_path.iterdir()) == [sidecar]

    sidecar.unlink()
    full_disk[0] = 64
    held = HeldLines(sidecar)
    with pytest.raises(DataError, match=r"docs\.jsonl.* could not be written: No space"):
        held.write({"doc_id": "v2.md", "dropped": True, "minhash": "A" * 100})
    assert sorted(tmp_path.iterdir()) == []

    full_disk[0] = 10**6
    held, docs = HeldLines(sidecar), JsonlWriter(sidecar)
    held.write({"doc_id": "v2.md", "dropped": True})
    held._fh.dirty = True  # the line is buffered, and flushing it finds the disk full
    with pytest.raises(DataError, match=r"docs\.jsonl.* could not be written: No space"):
        held.write_into(docs)
    docs.abort()
    assert sorted(tmp_path.iterdir()) == []
