import json

import pytest

from cosmosage.dataprep.papers.build import build_cloze
from cosmosage.dataprep.papers.cloze import BLANK, cloze_items, find_spans, mask
from cosmosage.dataprep.papers.documents import parse_paper
from cosmosage.dataprep.records import DataError

PAPER = """# The Orvane Survey

## Results

The Orvane Survey found 412 groups at redshift 1.7 with the Kettle Array.
Its lead scientist was Mabel van Quist, who chose the name in 2031.
The largest void lies in the direction of Corvel.
"""


def test_spans_are_numbers_and_names_not_the_first_word():
    spans = find_spans("The Orvane Survey found 412 groups at redshift 1.7 with the Kettle Array.")
    assert [(s.text, s.kind) for s in spans] == [
        ("Orvane Survey", "name"),
        ("412", "number"),
        ("1.7", "number"),
        ("Kettle Array", "name"),
    ]
    assert [s.text for s in find_spans("Its lead scientist was Mabel van Quist, in 2031.")] == [
        "Mabel van Quist",
        "2031",
    ]
    assert find_spans("Observations began late.") == []


def test_every_item_answers_with_its_masked_span():
    paper = parse_paper(PAPER, "orvane.md")
    items = [item for _, item in cloze_items([paper])]
    assert len(items) == 7  # 4 + 2 + 1
    for item in items:
        question, answer = (m["content"] for m in item["messages"])
        assert answer == item["span"]
        masked = question.split("): ", 1)[1]
        assert masked.count(BLANK) == 1
        assert masked.replace(BLANK, answer) == item["sentence"]
        assert item["sentence"][item["start"] :].startswith(answer)


def test_sentence_answers_and_limits():
    paper = parse_paper(PAPER, "orvane.md")
    items = [i for _, i in cloze_items([paper], answer="sentence", max_per_sentence=1)]
    assert len(items) == 3
    assert all(i["messages"][1]["content"] == i["sentence"] for i in items)


def test_held_out_and_excluded_sentences_never_train(tmp_path):
    (tmp_path / "orvane.md").write_text(PAPER)
    excluded = "The largest void lies in the direction of Corvel."
    out, suite = tmp_path / "cloze.jsonl", tmp_path / "heldout.yaml"
    result = build_cloze([tmp_path], out, hold_out=0.5, exclude=[excluded], suite_out=suite, seed=3)
    trained = [json.loads(line) for line in out.read_text().splitlines()]
    import yaml

    held = yaml.safe_load(suite.read_text())["prompts"]
    trained_sentences = {r["sentence"] for r in trained}
    held_sentences = {p["sentence"] for p in held}
    assert excluded not in trained_sentences | held_sentences
    assert not trained_sentences & held_sentences
    assert result["excluded"] == 1 and result["held_out"] == len(held)
    assert len(trained) + len(held) + 1 == 7
    assert all(p["group"] == "held_out_sentence" and p["expect"][0] in p["sentence"] for p in held)
    manifest = json.loads((tmp_path / "cloze.manifest.json").read_text())
    assert manifest["dropped"].get("excluded sentence") == 1


def test_hold_out_without_a_suite_is_refused(tmp_path):
    (tmp_path / "orvane.md").write_text(PAPER)
    with pytest.raises(DataError, match="--suite-out"):
        build_cloze([tmp_path], tmp_path / "c.jsonl", hold_out=0.2)
    assert mask("abc 12 d", find_spans("abc 12 d")[0]) == f"abc {BLANK} d"


def test_variants_ask_each_blank_in_several_wordings_with_one_answer():
    paper = parse_paper(PAPER, "orvane.md")
    items = [i for _, i in cloze_items([paper], variants=3)]
    assert len(items) == 21
    by_blank: dict = {}
    for item in items:
        question, answer = (m["content"] for m in item["messages"])
        assert (
            mask(
                item["sentence"],
                next(s for s in find_spans(item["sentence"]) if s.start == item["start"]),
            )
            in question
        )
        assert answer == item["span"]
        by_blank.setdefault((item["sentence"], item["start"]), set()).add(question)
    assert all(len(qs) == 3 for qs in by_blank.values())
    with pytest.raises(ValueError, match="variants"):
        list(cloze_items([paper], variants=9))


def test_named_subjects_reach_cloze_items_and_keep_the_paper_sentence(tmp_path):
    (tmp_path / "b.md").write_text(
        "# First Light of the Brannock Radio Array\n\nThe Brannock Radio Array was built in 2031."
        " The array stands on the Hollin Plain.\n"
    )
    out = tmp_path / "c.jsonl"
    build_cloze([tmp_path], out, name_subjects=True)
    items = [json.loads(x) for x in out.read_text().splitlines()]
    hollin = next(i for i in items if i["span"] == "Hollin Plain")
    assert "The Brannock Radio Array stands on the ___." in hollin["messages"][0]["content"]
    assert hollin["paper_sentence"] == "The array stands on the Hollin Plain."


def test_prefix_context_shows_only_the_words_before_the_blank():
    paper = parse_paper(PAPER, "orvane.md")
    items = [i for _, i in cloze_items([paper], context="prefix", answer="sentence")]
    questions = [i["messages"][0]["content"].split("): ", 1)[1] for i in items]
    # spans with fewer than three words before them have no item
    assert questions == [
        "The Orvane Survey found ___.",
        "The Orvane Survey found 412 groups at redshift ___.",
        "The Orvane Survey found 412 groups at redshift 1.7 with the ___.",
        "Its lead scientist was ___.",
        "Its lead scientist was Mabel van Quist, who chose the name in ___.",
        "The largest void lies in the direction of ___.",
    ]
    for item, q in zip(items, questions, strict=True):
        assert item["sentence"].startswith(q.removesuffix(" ___.") + " " + item["span"])
        assert item["messages"][1]["content"] == item["sentence"]
