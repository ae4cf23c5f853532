"""Text the encoders refuse: a lone surrogate or a NaN in an input line is rejected with
its line by every data command that reads JSONL, and the rest of the input is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.io import read_jsonl, write_jsonl
from cosmosage.tools.cli.main import main
from tests.dataprep.corpus.fixtures import prose

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]}
# json.dumps writes the lone surrogate as the escape \\ud800, as a careless tool would
SURROGATE = json.dumps(
    {"conversations": [{"from": "human", "value": "bad \ud800"}, {"from": "gpt", "value": "x"}]}
)


def rejects_of(out: Path) -> list[dict]:
    path = out.with_name(out.stem + ".rejects.jsonl")
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_read_jsonl_rejects_lone_surrogates_and_non_json_numbers(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps(GOOD) + "\n" + SURROGATE + "\n" + '{"score": NaN}\n{"x": -Infinity}\n'
    )
    got = list(read_jsonl(src))
    assert got[0] == (1, GOOD)
    assert got[1][1].reason == "text holds a lone surrogate (\\ud800), which is not a character"
    assert got[2][1].reason == "not JSON: NaN is not a JSON number"
    assert got[3][1].reason == "not JSON: -Infinity is not a JSON number"
    # what is written is strict JSON
    with pytest.raises(ValueError):
        write_jsonl(tmp_path / "o.jsonl", [{"x": float("inf")}])


@pytest.mark.parametrize("command", ["convert", "structured", "mix"])
def test_a_surrogate_is_one_rejected_line_and_the_rest_is_kept(tmp_path, command, tiny_model):
    src = tmp_path / "in.jsonl"
    out = tmp_path / "out.jsonl"
    if command == "structured":
        good = json.dumps(
            {"text": "Canto 3, line 9", "target": {"references": [{"canto": 3, "lines": [9]}]}}
        )
        bad = json.dumps({"text": "Canto \ud800", "target": {"references": []}})
        src.write_text(good + "\n" + bad + "\n")
        args = [
            "data",
            "structured",
            str(src),
            "--schema",
            str(ROOT / "samples/structured/canto_refs.schema.yaml"),
            "--instruction",
            "References as JSON.",
            "--out",
            str(out),
        ]
    elif command == "convert":
        src.write_text(json.dumps(GOOD) + "\n" + SURROGATE + "\n")
        args = ["data", "convert", str(src), "--format", "sharegpt", "--out", str(out)]
    else:
        src.write_text(json.dumps(GOOD) + "\n" + SURROGATE + "\n")
        spec = tmp_path / "mix.yaml"
        spec.write_text(
            f"seed: 0\ntokenizer: {tiny_model}\nsequence_len: 256\nvalidation: 0\nout: {out}\n"
            f"sources:\n  - {{name: s, path: {src}, weight: 1.0}}\n"
        )
        args = ["data", "mix", str(spec)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert len(out.read_text().splitlines()) == 1
    assert any(r["line"] == 2 and "lone surrogate" in r["reason"] for r in rejects_of(out))


@pytest.mark.parametrize("command", ["convert", "structured"])
def test_a_run_that_keeps_nothing_fails_and_keeps_the_reasons(tmp_path, command):
    src = tmp_path / "junk.jsonl"
    src.write_text("this is not json\n" * 5)
    out = tmp_path / "out.jsonl"
    args = ["data", command, str(src), "--out", str(out)]
    if command == "structured":
        args += [
            "--schema",
            str(ROOT / "samples/structured/canto_refs.schema.yaml"),
            "--instruction",
            "x",
        ]
    good = ROOT / ("samples/qa/cosmology_qa.jsonl" if command == "convert" else
                   "samples/structured/canto_refs.jsonl")  # fmt: skip
    assert CliRunner().invoke(main, [*args[:2], str(good), *args[3:]]).exit_code == 0
    before = {p.name: p.read_bytes() for p in tmp_path.glob("out*")}
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"{out}: nothing kept: all 5 records were rejected (first: {src}:1: " in res.output
    assert "every reason is in" in res.output and "left as they were" in res.output
    # the earlier run's output, manifest and rejects stay as they were, whole
    assert {
        p.name: p.read_bytes() for p in tmp_path.glob("out*") if "failed" not in p.name
    } == before
    failed = [
        json.loads(x) for x in (tmp_path / "out.failed.rejects.jsonl").read_text().splitlines()
    ]
    assert [r["line"] for r in failed] == [1, 2, 3, 4, 5]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = CliRunner().invoke(main, [*args[:2], str(empty), *args[3:]])
    assert res.exit_code == 1 and "the inputs hold no records" in res.output
    assert {
        p.name: p.read_bytes() for p in tmp_path.glob("out*") if "failed" not in p.name
    } == before
    # with no earlier output, the error names no file that is not there
    alone = CliRunner().invoke(
        main, [str(tmp_path / "new.jsonl") if a == str(out) else a for a in args]
    )
    assert alone.exit_code == 1 and "(no output written)" in alone.output
    # a later run that keeps something outdates the failed run's reasons
    assert CliRunner().invoke(main, [*args[:2], str(good), *args[3:]]).exit_code == 0
    assert not (tmp_path / "out.failed.rejects.jsonl").exists()


def test_a_corpus_that_keeps_nothing_fails_and_replaces_no_output(tmp_path, tiny_model):
    good = ROOT / "samples" / "papers"
    empty = tmp_path / "empty.md"
    empty.write_text("")
    out = tmp_path / "c.jsonl"
    args = ["--tokenizer", str(tiny_model), "--sequence-len", "64", "--out", str(out)]
    assert CliRunner().invoke(main, ["data", "corpus", str(good), *args]).exit_code == 0
    before = {p.name: p.read_bytes() for p in tmp_path.glob("c.*")}
    res = CliRunner().invoke(main, ["data", "corpus", str(empty), *args])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"{out}: nothing kept (1 empty file); the reasons are in" in res.output
    failed = tmp_path / "c.failed.rejects.jsonl"
    assert [json.loads(x)["reason"] for x in failed.read_text().splitlines()] == ["empty file"]
    assert {p.name: p.read_bytes() for p in tmp_path.glob("c.*") if p != failed} == before
    assert CliRunner().invoke(main, ["data", "corpus", str(good), *args]).exit_code == 0
    assert not failed.exists()  # the good run's set is all that is left


def test_a_few_bytes_that_are_not_utf8_are_counted_and_said(tmp_path, tiny_model):
    """Under decode_text's bound a file is kept with its bad bytes replaced: the manifest,
    the docs listing and the terminal say which document lost how many bytes."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in/mostly.md").write_bytes(("# Caf\xe9\n\n" + prose(1, 300)).encode("latin-1"))
    (tmp_path / "in/clean.md").write_text("# Clean\n\n" + prose(2, 300))
    out = tmp_path / "c.jsonl"
    args = ["data", "corpus", str(tmp_path / "in"), "--tokenizer", str(tiny_model)]
    res = CliRunner().invoke(main, [*args, "--sequence-len", "64", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "warning: 1 kept document(s) held 1 byte(s) that are not UTF-8" in res.output
    manifest = json.loads((tmp_path / "c.manifest.json").read_text())
    assert manifest["undecodable_bytes"] == {"documents": 1, "bytes": 1}
    docs = [json.loads(x) for x in (tmp_path / "c.docs.jsonl").read_text().splitlines()]
    listed = {Path(d["path"]).name: d.get("undecodable_bytes") for d in docs}
    assert listed == {"mostly.md": 1, "clean.md": None}
    assert "\ufffd" not in out.read_text()  # cleaning dropped the replacement character


def test_options_that_cannot_work_are_refused_in_one_line(tmp_path, tiny_model):
    doc = tmp_path / "d.md"
    doc.write_text("# A\n\nSome words about the sky and the stars tonight.\n")
    out = str(tmp_path / "c.jsonl")
    base = [
        "data",
        "corpus",
        str(doc),
        "--tokenizer",
        str(tiny_model),
        "--sequence-len",
        "64",
        "--out",
        out,
    ]
    for extra, message in [
        (
            ["--val-out", str(tmp_path / "v.jsonl"), "--val-fraction", "1.5"],
            "1.5 is not in the range",
        ),
        (["--val-fraction", "0.2"], "--val-fraction needs --val-out"),
        (["--val-out", str(tmp_path / "v.jsonl")], "--val-out needs --val-fraction"),
    ]:
        res = CliRunner().invoke(main, base + extra)
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    empty = tmp_path / "no_tokenizer"
    empty.mkdir()
    res = CliRunner().invoke(main, ["data", "corpus", str(doc), "--tokenizer", str(empty),
                                    "--sequence-len", "64", "--out", out])  # fmt: skip
    assert res.exit_code == 1 and f"--tokenizer {empty}: no tokenizer could be loaded" in res.output
    binary = tmp_path / "vocab.gguf"  # a file that is not a tokenizer.json
    binary.write_bytes(b"GGUF\x03\x00\xff\xfe" * 64)
    res = CliRunner().invoke(main, ["data", "corpus", str(doc), "--tokenizer", str(binary),
                                    "--sequence-len", "64", "--out", out])  # fmt: skip
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert f"--tokenizer {binary}: not a tokenizer.json file" in res.output
    # a path that is not there is named as such, for the corpus and for `model init`
    gone = tmp_path / "models" / "gone"
    for args in (
        [
            "data",
            "corpus",
            str(doc),
            "--tokenizer",
            str(gone),
            "--sequence-len",
            "64",
            "--out",
            out,
        ],
        [
            "model",
            "init",
            "--preset",
            "tiny",
            "--tokenizer",
            str(gone),
            "--out",
            str(tmp_path / "m"),
        ],
    ):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1 and f"--tokenizer {gone}: no such folder" in res.output, (
            res.output
        )
    spec = tmp_path / "mix.yaml"
    spec.write_text(
        f"out: {tmp_path / 'm.jsonl'}\nsources:\n  - {{name: s, path: {tmp_path / 'gone.jsonl'}, weight: 1}}\n"
    )
    res = CliRunner().invoke(main, ["data", "mix", str(spec)])
    assert (
        res.exit_code == 1 and f"source s: {tmp_path / 'gone.jsonl'} does not exist" in res.output
    )


def test_no_data_command_writes_over_its_own_input(tmp_path, tiny_model):
    import shutil

    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps(GOOD) + "\n")
    table = tmp_path / "out" / "recall.yaml"  # a fact table inside its own --out-dir
    table.parent.mkdir()
    shutil.copy(ROOT / "samples/facts/cosmology_facts.yaml", table)
    doc = tmp_path / "doc.jsonl"
    doc.write_text("")
    link = tmp_path / "link.jsonl"
    link.symlink_to(chat)
    cases = {
        "convert": ["data", "convert", str(chat), "--out", str(link)],  # through a symlink
        "structured": ["data", "structured", str(chat), "--schema",
                       str(ROOT / "samples/structured/canto_refs.schema.yaml"), "--out", str(chat)],
        "facts": ["data", "facts", str(table), "--out-dir", str(table.parent)],
        "corpus": ["data", "corpus", str(doc), "--tokenizer", str(tiny_model), "--sequence-len", "64",
                   "--out", str(tmp_path / "c.jsonl"), "--val-out", str(tmp_path / "c.jsonl"),
                   "--val-fraction", "0.2"],
    }  # fmt: skip
    before = {p: p.read_bytes() for p in (chat, table)}
    for name, args in cases.items():
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1, (name, res.output)
        assert "would overwrite the input" in res.output or "the same file as" in res.output, name
    assert {p: p.read_bytes() for p in (chat, table)} == before


def test_synth_grade_metaqa_and_merge_shards_refuse_an_output_over_an_input(tmp_path):
    chunks = tmp_path / "chunks.jsonl"
    chunks.write_text(json.dumps({"text": "x"}) + "\n")
    meta = tmp_path / "meta.jsonl"
    meta.write_text(json.dumps({"id": "2401.00001", "title": "T", "authors": "A"}) + "\n")
    cases = {
        "synth": ["data", "synth", "--input", str(chunks), "--out", str(chunks), "--base-url", "http://127.0.0.1:9/v1",
                  "--model", "m"],
        "grade": ["data", "grade", "--input", str(chunks), "--out", str(chunks), "--base-url", "http://127.0.0.1:9/v1",
                  "--model", "m"],
        "metaqa": ["data", "metaqa", str(meta), "--out", str(meta)],
        "merge-shards": ["data", "merge-shards", "--out", str(tmp_path / "c.jsonl"),
                         "--val-out", str(tmp_path / "c.jsonl")],
    }  # fmt: skip
    for name, args in cases.items():
        before = chunks.read_bytes(), meta.read_bytes()
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1, (name, res.output)
        assert "would overwrite the input" in res.output or "the same file as" in res.output, (
            name,
            res.output,
        )
        assert (chunks.read_bytes(), meta.read_bytes()) == before
