from pathlib import Path

from cosmosage.dataprep.papers.documents import load_papers, parse_paper, split_sentences

PAPER = """# The Orvane Survey

## Abstract

We present the Orvane Survey. It found 412 groups at redshift 1.7 with the Kettle Array.

## Results

The Dr. Mabel Quist catalogue lists 9 voids. Each void spans 30 megaparsecs!
Is the trend real? We think so.
"""


def test_sentences_split_at_ends_not_decimals_or_abbreviations():
    assert split_sentences("It lies at redshift 1.7 today. The e.g. case holds. Next one.") == [
        "It lies at redshift 1.7 today.",
        "The e.g. case holds.",
        "Next one.",
    ]


def test_paper_has_title_sections_paragraphs_and_lines():
    paper = parse_paper(PAPER, "orvane.md")
    assert paper.title == "The Orvane Survey"
    assert [p.section for p in paper.paragraphs] == ["Abstract", "Results"]
    assert paper.paragraphs[1].line == 9
    assert paper.sentences[1] == "It found 412 groups at redshift 1.7 with the Kettle Array."
    assert paper.sentences[2] == "The Dr. Mabel Quist catalogue lists 9 voids."
    assert len(paper.sentences) == 6
    # the completion text keeps every sentence, headings included
    text = paper.text()
    assert text.startswith("# The Orvane Survey") and "## Results" in text
    assert all(s in text for s in paper.sentences)


def test_empty_file_is_a_reject_with_reason(tmp_path):
    (tmp_path / "a.md").write_text(PAPER)
    (tmp_path / "b.md").write_text("# Only a title\n")
    (tmp_path / "c.json").write_text("{}")
    papers, rejects = load_papers([tmp_path])
    assert [p.name for p in papers] == ["a.md"]
    assert rejects[0].source.endswith("b.md") and "no sentences" in rejects[0].reason


def test_a_binary_or_mostly_undecodable_file_is_a_reject_and_a_bom_is_not_text(tmp_path):
    """As the corpus reads files: binary (NUL bytes) or mostly-not-UTF-8 files are rejects
    with the line of the first bad byte, never sentences of training data."""
    import random

    rng = random.Random(0)
    (tmp_path / "a.md").write_bytes(b"\xef\xbb\xbf" + PAPER.encode())
    (tmp_path / "binary.md").write_bytes(bytes(rng.randrange(256) for _ in range(5000)))
    (tmp_path / "utf16.md").write_text(PAPER, encoding="utf-16")
    (tmp_path / "latin1.md").write_bytes(("# T\n\n" + "Caf\xe9 na\xefve. " * 200).encode("latin-1"))
    papers, rejects = load_papers([tmp_path])
    assert [p.name for p in papers] == ["a.md"]
    assert "\ufeff" not in papers[0].title and papers[0].title == parse_paper(PAPER, "a.md").title
    reasons = {Path(r.source).name: (r.line, r.reason) for r in rejects}
    assert reasons["binary.md"][1].startswith("not UTF-8 (")
    assert reasons["utf16.md"][1].startswith("binary or UTF-16 file")
    assert reasons["latin1.md"] == (3, reasons["latin1.md"][1])
    assert reasons["latin1.md"][1].startswith("not UTF-8 (400 undecodable bytes")


NAMED = """# First Light of the Brannock Radio Array

## Observations

The Brannock Radio Array was built in 2031. The array stands on the Hollin Plain.
It has 96 antennas. Its correlator is named Pell. The site is dry.
"""


def test_subject_named_in_every_sentence_that_refers_to_it():
    from cosmosage.dataprep.papers.documents import name_subjects, subjects, with_named_subjects

    paper = parse_paper(NAMED, "brannock.md")
    assert subjects(paper) == ["Brannock Radio Array"]
    named = with_named_subjects(paper)
    assert named.sentences == [
        "The Brannock Radio Array was built in 2031.",
        "The Brannock Radio Array stands on the Hollin Plain.",
        "The Brannock Radio Array has 96 antennas.",
        "The Brannock Radio Array's correlator is named Pell.",
        "The site is dry.",
    ]
    assert named.paragraphs[0].originals == paper.sentences
    # a name that is not in the body, or no name at all, changes nothing
    assert name_subjects("The array is cold.", []) == "The array is cold."
    assert subjects(parse_paper("# A Study\n\nThe array is cold.\n", "x.md")) == []
