"""Metadata Q&A: identifiers, titles, authors and topics, with no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.records import DataError
from cosmosage.dataprep.synth.metaqa import build_metaqa, clean_id, find_topic, format_authors
from cosmosage.tools.cli.main import main

ROOT = Path(__file__).resolve().parents[3]


def test_helpers():
    assert clean_id("arXiv:2401.00001v3") == "2401.00001"
    assert clean_id("https://arxiv.org/abs/astro-ph/0601001v1") == "astro-ph/0601001"
    assert format_authors("A. One and B. Two") == "A. One and B. Two"
    assert format_authors(["A", "B", "C", "D"]) == "A, B, C et al."
    assert (
        find_topic("We present a new estimator of the lensing potential, which is fast.")
        == "a new estimator of the lensing potential"
    )
    assert find_topic("We measure things.") is None


def test_snapshot_and_papers(tmp_path):
    meta = tmp_path / "meta.jsonl"
    rows = [
        {
            "id": "1807.06209",
            "title": "Planck 2018 results.\n  VI. Cosmological parameters",
            "authors": "Planck Collaboration",
            "abstract": "We present cosmological parameter results.",
        },
        {
            "id": "astro-ph/9805201",
            "title": "Observational Evidence from Supernovae",
            "authors": ["A. G. Riess", "A. V. Filippenko"],
            "abstract": "",
        },
        {"id": "1807.06209", "title": "duplicate"},
        {"id": "not an id", "title": "x"},
        {"id": "2001.00001"},
    ]
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    out = tmp_path / "metaqa.jsonl"
    res = build_metaqa([str(meta), str(ROOT / "samples" / "papers")], out)
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert res["papers"] == 6 and res["records"] == len(recs)
    by_id = {r["id"]: r for r in recs}
    title_q = by_id["arxiv:1807.06209:id_of_title"]["messages"]
    assert (
        "Planck 2018 results. VI. Cosmological parameters" in title_q[0]["content"]
        and "1807.06209" in title_q[1]["content"]
    )
    assert (
        "A. G. Riess and A. V. Filippenko"
        in by_id["arxiv:astro-ph/9805201:authors_of_id"]["messages"][1]["content"]
    )
    assert "arxiv:2401.00001:introduced_by" in by_id  # "We describe a reconstruction pipeline ..."
    assert all(
        r["messages"][0]["role"] == "user" and r["generator"]["kind"] == "metaqa" for r in recs
    )
    rejects = [
        json.loads(x)["reason"]
        for x in (tmp_path / "metaqa.rejects.jsonl").read_text().splitlines()
    ]
    assert sorted(r.split(":")[0] for r in rejects) == [
        "duplicate paper",
        "invalid JSON",
        "no arXiv id",
        "no title",
    ]
    manifest = json.loads((tmp_path / "metaqa.manifest.json").read_text())
    assert manifest["kept"] == len(recs) and manifest["dropped_total"] == 4


def test_the_snapshot_under_its_own_name_is_metadata_and_nothing_kept_is_an_error(tmp_path):
    """The arXiv bulk snapshot is JSON lines named `.json`: its lines are papers, not a
    markdown paper with no id. A run that keeps no record fails and writes no output."""
    snap = tmp_path / "arxiv-metadata-oai-snapshot.json"
    snap.write_text(json.dumps({"id": "1807.06209", "title": "Planck 2018", "authors": "P"}) + "\n")
    res = build_metaqa([str(snap)], tmp_path / "m.jsonl")
    assert res["papers"] == 1 and res["records"] > 0 and res["rejects"] == 0
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"id": "not an id", "title": "x"}) + "\n")
    with pytest.raises(
        DataError,
        match=r"nothing kept: all 1 records were rejected \(first: .*empty.jsonl:1: no arXiv id",
    ):
        build_metaqa([str(empty)], tmp_path / "n.jsonl")
    assert not (tmp_path / "n.jsonl").exists()


def test_cli_is_reproducible(tmp_path):
    args = ["data", "metaqa", str(ROOT / "samples" / "papers"), "--out"]
    r1 = CliRunner().invoke(main, [*args, str(tmp_path / "a.jsonl")])
    r2 = CliRunner().invoke(main, [*args, str(tmp_path / "b.jsonl")])
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output
    assert json.loads(r1.output)["papers"] == 4
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    r3 = CliRunner().invoke(main, [*args, str(tmp_path / "c.jsonl"), "--seed", "7"])
    assert (
        r3.exit_code == 0
        and (tmp_path / "c.jsonl").read_text() != (tmp_path / "a.jsonl").read_text()
    )
