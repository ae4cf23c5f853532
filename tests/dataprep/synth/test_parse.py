"""Parsing untrusted model output: JSON extraction, pair shapes, grades, prompt files."""

from __future__ import annotations

import pytest

from cosmosage.dataprep.io import DataError
from cosmosage.dataprep.synth.generate import parse_pairs
from cosmosage.dataprep.synth.grade import parse_grade
from cosmosage.dataprep.synth.parse import ParseError, as_number, extract_json
from cosmosage.dataprep.synth.prompts import fill, load_prompt

GOOD = '{"pairs": [{"question": "What sets the BAO scale?", "answer": "The sound horizon at the drag epoch."}]}'


def test_plain_json():
    obj, notes = extract_json(GOOD)
    assert obj["pairs"][0]["question"] == "What sets the BAO scale?"
    assert notes == []


def test_code_fence_and_surrounding_text():
    text = "Sure! Here are the pairs:\n```json\n" + GOOD + "\n```\nHope this helps."
    obj, notes = extract_json(text)
    assert obj["pairs"][0]["answer"].startswith("The sound horizon")
    assert "code fence removed" in notes


def test_trailing_text_without_fence():
    obj, notes = extract_json(GOOD + "\n\nLet me know if you need more.")
    assert len(obj["pairs"]) == 1
    assert any("after the JSON" in n for n in notes)


def test_think_block_is_skipped():
    obj, notes = extract_json("<think>maybe {not json</think>" + GOOD)
    assert obj["pairs"]
    assert "reasoning block removed" in notes


@pytest.mark.parametrize(
    ("text", "finish", "category"),
    [
        ("", None, "empty output"),
        ("   \n", None, "empty output"),
        ("I cannot help with that.", None, "no JSON"),
        ('{"pairs": [{"question": "What', "length", "cut off"),
        ('{"pairs": [{"question": "What", }', None, "invalid JSON"),
        ("]]]]]]]]]]", None, "no JSON"),
        ("[[[x", None, "invalid JSON"),
        ("Here are ten questions", "length", "cut off"),
    ],
)
def test_unusable_output_has_a_reason(text, finish, category):
    with pytest.raises(ParseError) as err:
        extract_json(text, finish)
    assert err.value.reason.split(":")[0] == category


def test_pairs_shapes():
    pairs, problems = parse_pairs([{"Question": "Q one?", "Answer": "A one."}], 3)
    assert pairs == [{"question": "Q one?", "answer": "A one."}] and problems == []
    pairs, _ = parse_pairs({"question": "Q?", "answer": "A."}, 3)
    assert len(pairs) == 1
    pairs, _ = parse_pairs({"qa": [{"q": "Q?", "a": "A."}]}, 3)
    assert len(pairs) == 1


def test_bad_and_extra_pairs_are_reported_not_dropped_silently():
    obj = {
        "pairs": [
            {"question": "Q1?", "answer": "A1."},
            {"question": "Q2?"},
            "junk",
            {"question": "Q3?", "answer": "A3."},
            {"question": "Q4?", "answer": "A4."},
        ]
    }
    pairs, problems = parse_pairs(obj, 2)
    assert [p["question"] for p in pairs] == ["Q1?", "Q3?"]
    assert problems == [
        "bad pair: item 2 has no answer",
        "bad pair: item 3 is not an object",
        "extra pair: item 5 beyond the 2 asked for",
    ]


@pytest.mark.parametrize(
    "obj", [{"answer": "x"}, [], [{"question": "", "answer": "a"}], 5, {"pairs": "none"}]
)
def test_no_usable_pairs(obj):
    with pytest.raises(ParseError):
        parse_pairs(obj, 3)


def test_parse_grade():
    g = parse_grade(
        {
            "correctness": "95",
            "clarity": 90,
            "pertinence": "88/100",
            "Overall": 92,
            "critique": "Precise.",
        }
    )
    assert g["overall"] == 92 and g["scores"]["pertinence"] == 88 and g["critique"] == "Precise."
    assert as_number("93%") == 93 and as_number(True) is None and as_number("high") is None
    for bad, reason in [
        ({"correctness": 90}, "no overall score"),
        ({"overall": 140}, "bad score"),
        ({"overall": "great"}, "bad score"),
        ("x", "wrong shape"),
    ]:
        with pytest.raises(ParseError) as err:
            parse_grade(bad)
        assert err.value.reason.startswith(reason)


def test_bundled_prompts_load_and_fill():
    p = load_prompt("synth_qa")
    assert (p.name, p.version) == ("synth_qa", "1") and len(p.sha) == 16
    msgs = p.messages(chunk="Text with {braces} and $x^{2}$.", pairs=3, doc_id="2401.00001")
    assert msgs[0]["role"] == "system" and "Text with {braces} and $x^{2}$." in msgs[1]["content"]
    assert '{"pairs": [{"question": "...", "answer": "..."}]}' in msgs[1]["content"]
    g = load_prompt("grade_answer")
    g.check({"chunk", "question", "answer"})
    with pytest.raises(DataError):
        g.check({"chunk"})


def test_prompt_file_errors(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\nuser: hi\n")
    with pytest.raises(DataError, match="missing 'version'"):
        load_prompt(bad)
    with pytest.raises(DataError, match="bundled ones"):
        load_prompt(tmp_path / "absent.yaml")
    with pytest.raises(ValueError, match="needs b"):
        fill("{{a}} {{b}}", {"a": 1})
