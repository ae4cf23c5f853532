import json

import pytest
import yaml
from click.testing import CliRunner

from cosmosage.dataprep.papers.closedbook import build_closed_book, decontaminate
from cosmosage.dataprep.papers.documents import load_papers
from cosmosage.dataprep.records import DataError
from cosmosage.tools.cli.main import main

PAPER = """# The Orvane Survey

## Results

The Orvane Survey found 412 groups with the Kettle Array.
Its lead scientist was Mabel Quist, who named the survey in 2031.
"""

QUESTIONS = """facts:
  - id: groups
    document: orvane.md
    sentence: "The Orvane Survey found 412 groups with the Kettle Array."
    answer: "412"
    split: qa
    train: ["How many groups did the Orvane Survey find?"]
    reply: "The Orvane Survey found 412 groups."
    ask: ["What number of galaxy groups were catalogued by the Orvane Survey?"]
  - id: lead
    document: orvane.md
    sentence: "Its lead scientist was Mabel Quist, who named the survey in 2031."
    answer: "Mabel Quist"
    expect: ["Quist"]
    split: paper_only
    ask: ["Who led the Orvane Survey?", "Which scientist headed the Orvane Survey?"]
"""


@pytest.fixture
def papers(tmp_path):
    (tmp_path / "papers").mkdir()
    (tmp_path / "papers" / "orvane.md").write_text(PAPER)
    return load_papers([tmp_path / "papers"])[0]


def test_suite_and_trainable_qa(tmp_path, papers):
    (tmp_path / "q.yaml").write_text(QUESTIONS)
    result = build_closed_book(tmp_path / "q.yaml", papers, tmp_path / "out")
    suite = yaml.safe_load((tmp_path / "out/closed_book.yaml").read_text())["prompts"]
    assert [(p["id"], p["group"]) for p in suite] == [
        ("groups/ask-1", "qa_fact"),
        ("lead/ask-1", "paper_only"),
        ("lead/ask-2", "paper_only"),
    ]
    assert suite[1]["document"] == "orvane.md" and suite[1]["expect"] == ["Quist"]
    qa = [json.loads(x) for x in (tmp_path / "out/qa.jsonl").read_text().splitlines()]
    assert [r["fact"] for r in qa] == ["groups"]  # a paper_only fact never has trainable Q&A
    assert result["groups"] == {"qa_fact": 1, "paper_only": 2}


def test_a_question_that_leaks_into_training_is_left_out(tmp_path, papers):
    (tmp_path / "q.yaml").write_text(QUESTIONS)
    leaky = tmp_path / "train.jsonl"
    leaky.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Who led the Orvane Survey?"},
                    {"role": "assistant", "content": "Mabel Quist."},
                ]
            }
        )
        + "\n"
    )
    result = build_closed_book(tmp_path / "q.yaml", papers, tmp_path / "out", [leaky])
    suite = yaml.safe_load((tmp_path / "out/closed_book.yaml").read_text())["prompts"]
    assert "lead/ask-1" not in {p["id"] for p in suite}
    assert result["leaked"] == 1
    rejects = [
        json.loads(x)
        for x in (tmp_path / "out/closed_book.yaml.rejects.jsonl").read_text().splitlines()
    ]
    assert "train.jsonl:1" in rejects[0]["reason"] and rejects[0]["record"]["id"] == "lead/ask-1"
    # the manifest's counts add up: facts read = kept + rejected; prompts kept + leaked
    m = json.loads((tmp_path / "out/closed_book.yaml.manifest.json").read_text())
    facts = m["facts"]
    assert (
        facts["read"] == facts["kept"] + facts["rejected"] == result["facts"] + result["rejected"]
    )
    assert m["prompts_leaked"] == 1 and m["kept"] == result["prompts"]


def test_a_held_out_sentence_trained_as_qa_is_a_leak():
    prompt = {
        "id": "c1",
        "prompt": "Fill: ___ found 412.",
        "group": "held_out_sentence",
        "sentence": "Orvane found 412.",
    }
    other = {
        "id": "c2",
        "prompt": "Fill: Orvane found ___.",
        "group": "held_out_sentence",
        "sentence": "Orvane found 412.",
    }
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        train = Path(tmp) / "cloze.jsonl"
        train.write_text(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": other["prompt"]},
                        {"role": "assistant", "content": "412"},
                    ],
                    "sentence": "Orvane found 412.",
                }
            )
            + "\n"
        )
        kept, rejects = decontaminate([prompt], [train], "suite")
    assert kept == [] and "trained as Q&A" in rejects[0].reason


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("Mabel Quist, who", "Mabel Quist who"), "field 'sentence': not a sentence of orvane.md"),
        (('answer: "412"', 'answer: "413"'), "field 'answer': not in the sentence"),
        (("split: paper_only", "split: maybe"), "is not one of qa, paper_only"),
        (('ask: ["Who led', 'train: ["x"]\n    ask: ["Who led'), "paper_only fact has no `train`"),
        (("Which scientist headed", "Was Quist the head of"), "gives the answer away"),
    ],
)
def test_bad_entries_are_rejected_with_file_line_and_field(tmp_path, papers, change, message):
    (tmp_path / "q.yaml").write_text(QUESTIONS.replace(*change))
    build_closed_book(tmp_path / "q.yaml", papers, tmp_path / "out")
    rejects = [
        json.loads(x)
        for x in (tmp_path / "out/closed_book.yaml.rejects.jsonl").read_text().splitlines()
    ]
    assert len(rejects) == 1 and message in rejects[0]["reason"]
    assert rejects[0]["source"].endswith("q.yaml") and rejects[0]["line"] in (
        2,
        10,
    )  # the line its entry starts on


def test_an_entry_that_is_not_a_mapping_is_rejected_with_its_line(tmp_path, papers):
    (tmp_path / "q.yaml").write_text(QUESTIONS.replace("facts:\n", "facts:\n  - just a line\n", 1))
    build_closed_book(tmp_path / "q.yaml", papers, tmp_path / "out")
    rejects = [
        json.loads(x)
        for x in (tmp_path / "out/closed_book.yaml.rejects.jsonl").read_text().splitlines()
    ]
    assert [(r["line"], r["reason"]) for r in rejects] == [(2, "facts[0]: expected a mapping")]


def test_no_usable_fact_is_an_error_that_leaves_the_last_good_outputs(tmp_path, papers):
    (tmp_path / "good.yaml").write_text(QUESTIONS)
    build_closed_book(tmp_path / "good.yaml", papers, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    (tmp_path / "q.yaml").write_text("facts:\n  - {id: x}\n")
    with pytest.raises(DataError, match="no usable facts .*closed_book.yaml.failed.rejects"):
        build_closed_book(tmp_path / "q.yaml", papers, tmp_path / "out")
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert after.pop("closed_book.yaml.failed.rejects.jsonl") and after == before
    build_closed_book(tmp_path / "good.yaml", papers, tmp_path / "out")
    assert not (tmp_path / "out/closed_book.yaml.failed.rejects.jsonl").exists()


def test_cli_builds_all_three_routes_and_the_suite(tmp_path):
    (tmp_path / "papers").mkdir()
    (tmp_path / "papers" / "orvane.md").write_text(PAPER)
    (tmp_path / "q.yaml").write_text(QUESTIONS)
    runner = CliRunner()
    p, o = str(tmp_path / "papers"), tmp_path / "out"
    for args in (
        ["data", "augment", p, "--out", str(o / "aug.jsonl")],
        ["data", "cloze", p, "--out", str(o / "cloze.jsonl")],
        [
            "data",
            "closed-book",
            str(tmp_path / "q.yaml"),
            "--papers",
            p,
            "--out-dir",
            str(o),
            "--against",
            str(o / "aug.jsonl"),
            "--against",
            str(o / "cloze.jsonl"),
        ],
    ):
        res = runner.invoke(main, args)
        assert res.exit_code == 0, res.output
    assert json.loads(res.output)["prompts"] == 3
    res = runner.invoke(
        main,
        [
            "data",
            "closed-book",
            str(tmp_path / "q.yaml"),
            "--papers",
            p,
            "--out-dir",
            str(o),
            "--against",
            str(o / "missing.jsonl"),
        ],
    )
    assert res.exit_code != 0 and "missing.jsonl: no such training file" in res.output


def test_an_output_over_an_input_is_refused_before_anything_is_written(tmp_path, papers):
    from cosmosage.dataprep.papers.build import build_augment, build_cloze

    paper = tmp_path / "papers" / "orvane.md"
    before = paper.read_text()
    with pytest.raises(DataError, match="would overwrite the input"):
        build_augment([tmp_path / "papers"], paper)
    with pytest.raises(DataError, match="would overwrite the input"):
        build_cloze([tmp_path / "papers"], paper)
    with pytest.raises(DataError, match="the same file as --out"):
        build_cloze(
            [tmp_path / "papers"],
            tmp_path / "c.jsonl",
            hold_out=0.5,
            suite_out=tmp_path / "c.jsonl",
        )
    (tmp_path / "q.yaml").write_text(QUESTIONS)
    train = tmp_path / "out" / "qa.jsonl"
    train.parent.mkdir()
    train.write_text("")
    with pytest.raises(DataError, match="would overwrite the input"):
        build_closed_book(tmp_path / "q.yaml", papers, tmp_path / "out", [train])
    assert paper.read_text() == before and train.read_text() == ""


def test_a_training_file_with_an_unreadable_line_stops_the_decontamination(tmp_path, papers):
    """A line the check cannot read might hold a question: refused, never skipped."""
    (tmp_path / "q.yaml").write_text(QUESTIONS)
    train = tmp_path / "train.jsonl"
    train.write_bytes(b'{"text": "fine"}\n{not json\n')
    with pytest.raises(DataError, match=rf"^--against {train}:2: invalid JSON"):
        build_closed_book(tmp_path / "q.yaml", papers, tmp_path / "out", against=[train])
