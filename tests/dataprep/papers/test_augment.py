import json
from collections import Counter

import pytest

from cosmosage.dataprep.papers.augment import augment, render
from cosmosage.dataprep.papers.build import build_augment
from cosmosage.dataprep.papers.documents import parse_paper, split_sentences
from cosmosage.dataprep.records import DataError

PAPER = """# The Orvane Survey

## Abstract

We present the Orvane Survey. It found 412 groups at redshift 1.7 with the Kettle Array.
The survey ran for six years.

## Results

The Mabel Quist catalogue lists 9 voids. Each void spans 30 megaparsecs. The largest is the Tarn Void.
"""


def body_sentences(text: str) -> Counter:
    """Sentences of a rendering, headings aside."""
    out = Counter()
    for block in text.split("\n\n"):
        if not block.startswith("#"):
            out.update(split_sentences(block.split("\n")[-1]))
    return out


@pytest.mark.parametrize("rendering", ["original", "shuffled", "reordered"])
def test_a_rendering_neither_loses_nor_invents_a_sentence(rendering):
    paper = parse_paper(PAPER, "orvane.md")
    for rec in render(paper, rendering, copies=3, seed=1):
        assert body_sentences(rec["text"]) == Counter(paper.sentences)
        assert rec["text"].startswith("# The Orvane Survey")


def test_permuted_copies_differ_and_are_seeded():
    paper = parse_paper(PAPER, "orvane.md")
    a = [r["text"] for r in render(paper, "shuffled", copies=4, seed=0)]
    b = [r["text"] for r in render(paper, "shuffled", copies=4, seed=0)]
    assert a == b
    assert len(set(a)) > 1
    assert a != [r["text"] for r in render(paper, "shuffled", copies=4, seed=5)]


def test_sentence_records_carry_title_and_section_once_each():
    paper = parse_paper(PAPER, "orvane.md")
    recs = list(render(paper, "sentences"))
    assert len(recs) == len(paper.sentences)
    assert recs[-1]["text"] == "The Orvane Survey, Results: The largest is the Tarn Void."
    assert [r["text"].split(": ", 1)[1] for r in recs] == paper.sentences


def test_build_writes_manifest_and_counts(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "orvane.md").write_text(PAPER)
    out = tmp_path / "aug.jsonl"
    result = build_augment([tmp_path / "p"], out, copies=2)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert result["by_rendering"] == {"original": 1, "shuffled": 2, "reordered": 2, "sentences": 6}
    assert len(recs) == result["records"] == 11
    manifest = json.loads((tmp_path / "aug.manifest.json").read_text())
    assert manifest["kept"] == 11 and manifest["inputs"][0]["path"].endswith("orvane.md")
    with pytest.raises(DataError, match="--rendering bogus"):
        build_augment([tmp_path / "p"], out, renderings=("bogus",))
    assert list(augment([], copies=1)) == []


def test_papers_with_no_text_fail_and_leave_the_last_good_outputs(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "orvane.md").write_text(PAPER)
    out = tmp_path / "aug.jsonl"
    build_augment([tmp_path / "p"], out)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("aug*")}
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "e.md").write_text("")
    with pytest.raises(DataError, match="no papers with text .*aug.failed.rejects.jsonl"):
        build_augment([tmp_path / "empty"], out)
    after = {p.name: p.read_bytes() for p in tmp_path.glob("aug*")}
    assert json.loads(after.pop("aug.failed.rejects.jsonl"))["reason"].startswith("empty paper")
    assert after == before
    build_augment([tmp_path / "p"], out)
    assert not (tmp_path / "aug.failed.rejects.jsonl").exists()
