"""Readers: LaTeX, source tarballs, PDF, and every kind of bad input file."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from cosmosage.dataprep.corpus.latex import latex_to_text, strip_comments
from cosmosage.dataprep.corpus.pdf import pdf_to_text
from cosmosage.dataprep.corpus.sources import (
    archive_text,
    read_file_documents,
)
from cosmosage.dataprep.records import DataError, Reject
from tests.dataprep.corpus.fixtures import LATEX_MAIN, LATEX_METHOD, make_pdf, make_tarball, prose


def test_latex_to_text_keeps_math_and_sections_drops_the_rest():
    text = latex_to_text(LATEX_MAIN, {"sections/method.tex": LATEX_METHOD})
    assert text.startswith("# Sound Waves in the Early Universe")
    assert "## Abstract" in text and "## Introduction" in text and "### Method" in text
    assert "\\begin{equation}\nr_d = \\int_{z_d}^{\\infty} \\frac{c_s(z)}{H(z)} dz" in text
    assert "$\\alpha = D_V / r_d$ and 20\\% precision." in text
    for gone in (
        "documentclass",
        "newcommand",
        "private note",
        "hidden comment",
        "FIGURE CAPTION",
        "TABLE CELL",
        "BIBLIOGRAPHY ENTRY",
        "\\citep",
        "\\label",
        "A. Writer",
    ):
        assert gone not in text, gone


def test_strip_comments_keeps_escaped_percent():
    assert strip_comments("50\\% of it % comment\nnext") == "50\\% of it \nnext"


def test_source_tarball_with_input_files(tmp_path):
    tar = make_tarball(
        tmp_path / "2101.00001.tar.gz",
        {"ms.tex": LATEX_MAIN, "sections/method.tex": LATEX_METHOD, "peak.pdf": "x"},
    )
    text, kind = archive_text(tar)
    assert kind == "markdown" and "### Method" in text and "Sound Waves" in text


def test_gzipped_single_tex_file(tmp_path):
    path = tmp_path / "2101.00002.tar.gz"
    path.write_bytes(gzip.compress(LATEX_MAIN.encode()))
    text, _ = archive_text(path)
    assert "## Introduction" in text


def test_pdf_text_by_page():
    data = make_pdf([["Header", "First page text."], ["Header", "Second (page) text."]])
    assert pdf_to_text(data) == "Header\nFirst page text.\n\fHeader\nSecond (page) text.\n"


@pytest.mark.parametrize(
    "data,message",
    [
        (b"%PDF-1.4\n1 0 obj\n<< /Type /Cat", "unreadable PDF"),
        (b"<html>not a pdf</html>", "not a PDF"),
    ],
)
def test_bad_pdf_raises_a_clear_error(data, message):
    with pytest.raises(DataError, match=message):
        pdf_to_text(data, "paper.pdf")


def test_pdf_without_text_is_an_error():
    with pytest.raises(DataError, match="no extractable text"):
        pdf_to_text(make_pdf([[]]), "scan.pdf")


def test_bad_inputs_become_rejects_with_reasons(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "good.md").write_text("# Good\n\n" + prose(1, 200))
    (d / "empty.md").write_bytes(b"  \n")
    (d / "latin1.txt").write_bytes(("caf\xe9 " * 200).encode("latin-1"))
    (d / "utf16.txt").write_bytes(prose(2).encode("utf-16"))
    (d / "some_nul.md").write_bytes(prose(3).encode() + b"\x00\x00 tail")
    (d / "truncated.pdf").write_bytes(make_pdf([["Page text here."]])[:120])
    tar = make_tarball(tmp_path / "full.tar.gz", {"ms.tex": LATEX_MAIN * 50})
    (d / "truncated.tar.gz").write_bytes(tar.read_bytes()[: len(tar.read_bytes()) // 2])
    (d / "long_line.txt").write_text("word " * 200_000)
    items = {
        (x.source if isinstance(x, Reject) else x.source).rsplit("/", 1)[-1]: x
        for x in read_file_documents([d])
    }
    reasons = {k: v.reason for k, v in items.items() if isinstance(v, Reject)}
    assert reasons["empty.md"] == "empty file"
    assert "latin1.txt:1: not UTF-8" in reasons["latin1.txt"]
    assert "utf16.txt:1: binary or UTF-16 file" in reasons["utf16.txt"]
    assert "unreadable PDF" in reasons["truncated.pdf"]
    assert "truncated or corrupt archive" in reasons["truncated.tar.gz"]
    assert all(r.startswith(("empty file", "unreadable input")) for r in reasons.values())
    kept = {k for k, v in items.items() if not isinstance(v, Reject)}
    assert kept == {"good.md", "some_nul.md", "long_line.txt"}
    assert "\x00" not in items["some_nul.md"].text
    assert items["good.md"].meta["sha256"] and items["good.md"].meta["kind"] == "markdown"


def test_sharding_is_stable_and_complete(tmp_path):
    for i in range(12):
        (tmp_path / f"doc{i}.md").write_text(prose(i))
    seen = []
    for s in range(3):
        seen += [x.id for x in read_file_documents([tmp_path], (s, 3))]
    assert sorted(seen) == sorted(f"{tmp_path.name}/doc{i}.md" for i in range(12))


def test_files_of_other_kinds_in_a_folder_are_listed_and_said(tmp_path, tiny_model):
    import json

    from click.testing import CliRunner

    from cosmosage.tools.cli.main import main

    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "a.md").write_text(prose(1, 200))
    (folder / "notes.jsonl").write_text('{"text": "x"}\n')
    (folder / "sub").mkdir()
    (folder / "sub" / "table.csv").write_text("a,b\n1,2\n")
    (folder / ".hidden").write_text("ignored")
    out = tmp_path / "c.jsonl"
    res = CliRunner().invoke(
        main,
        [
            "data",
            "corpus",
            str(folder),
            "--tokenizer",
            str(tiny_model),
            "--sequence-len",
            "64",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "warning: skipped 2 file(s) of kinds it does not read" in res.output
    manifest = json.loads((tmp_path / "c.manifest.json").read_text())
    assert [s["path"] for s in manifest["skipped_files"]] == [
        str(folder / "notes.jsonl"),
        str(folder / "sub" / "table.csv"),
    ]
    assert manifest["skipped_files"][0]["reason"].startswith(".jsonl is not a kind it reads")
    assert manifest["dropped"]["skipped file"] == 2
    rejects = [json.loads(x) for x in (tmp_path / "c.rejects.jsonl").read_text().splitlines()]
    assert {r["source"] for r in rejects if r["reason"].startswith("skipped file")} == {
        str(folder / "notes.jsonl"),
        str(folder / "sub" / "table.csv"),
    }


def test_symlinked_sub_folders_are_read_and_a_link_cycle_ends(tmp_path):
    import os

    from cosmosage.dataprep.corpus.sources import iter_input_files

    shelf = tmp_path / "shelf"
    (shelf / "papers").mkdir(parents=True)
    (shelf / "papers" / "a.md").write_text("# A\n")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "b.md").write_text("# B\n")
    os.symlink(shelf / "papers", corpus / "linked")  # a corpus assembled from links
    os.symlink(corpus, corpus / "linked_again")  # a cycle back to the top
    keys = [k for _, k in iter_input_files([corpus])]
    assert keys == ["corpus/b.md", "corpus/linked/a.md"]


def test_the_walk_streams_what_os_walk_finds_in_its_order(tmp_path):
    """The plan's walk lists a folder as it reads it (os.walk would hold every name of a
    folder of a million files): the same files, in os.walk's order."""
    import os

    from cosmosage.dataprep.corpus.sources import _walk

    for i in range(60):
        sub = tmp_path / ("", "x", "x/y", "z")[i % 4]
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.md").write_text("x")
    expected = [Path(top) / f for top, _, files in os.walk(tmp_path) for f in files]
    assert list(_walk(tmp_path)) == expected
    assert len(expected) == 60


def test_a_shard_reads_its_plan_as_it_would_walk_the_inputs(tmp_path):
    """The executor walks the inputs once (plan_inputs); a shard reading its plan gets
    the same documents and skipped files in the same order as one walking everything,
    and walks nothing itself (its inputs may be gone from the list)."""
    from cosmosage.dataprep.corpus.sources import plan_inputs

    papers = tmp_path / "papers"
    for sub in ("", "b", "b/deep", "a"):
        (papers / sub).mkdir(parents=True, exist_ok=True)
    for i in range(24):
        sub = ("", "b", "b/deep", "a")[i % 4]
        (papers / sub / f"p{i:02d}.md").write_text(f"# Paper {i}\n\nText of paper {i}.\n")
    (papers / "b" / "figure.png").write_bytes(b"\x89PNG")
    (papers / ".hidden.md").write_text("# hidden\n")
    single = tmp_path / "extra.txt"
    single.write_text("One more document.\n")
    inputs = [str(papers), str(single)]
    plan = tmp_path / "plan"
    assert plan_inputs(inputs, 3, plan) == 26  # 24 papers, the figure, the single file

    def seen(docs):  # a document's source, id and text; a reject's source and reason
        return [(d.source, d.reason) if isinstance(d, Reject) else (d.source, d.id, d.text)
                for d in docs]  # fmt: skip

    for i in range(3):
        walked = seen(read_file_documents(inputs, (i, 3)))
        assert seen(read_file_documents([], (i, 3), plan=plan)) == walked
        assert walked
    every = sorted(s for i in range(3) for s in seen(read_file_documents([], (i, 3), plan=plan)))
    assert every == sorted(seen(read_file_documents(inputs)))
    with pytest.raises(DataError, match="no input plan"):
        list(read_file_documents([], (0, 4), plan=plan))
    # however few lines are held between writes, the plan is the same (the cap is over
    # all shards, so the memory held does not grow with their number)
    from cosmosage.dataprep.corpus import sources

    sources.HELD_PLAN_LINES, held = 2, sources.HELD_PLAN_LINES
    try:
        assert plan_inputs(inputs, 3, tmp_path / "plan-2") == 26
    finally:
        sources.HELD_PLAN_LINES = held
    for name in ("00000-of-00003.jsonl", "00001-of-00003.jsonl", "00002-of-00003.jsonl"):
        assert (tmp_path / "plan-2" / name).read_text() == (plan / name).read_text()
    damaged = plan / "00001-of-00003.jsonl"
    damaged.write_text(damaged.read_text() + '[0, "half a line\n')
    with pytest.raises(DataError, match=r"00001-of-00003.jsonl:\d+: not a plan line"):
        list(read_file_documents([], (1, 3), plan=plan))
