"""Parsing untrusted model output: JSON extraction, pair shapes, grades, prompt files."""

from __future__ import annotations

import pytest

from cosmosage.dataprep.records import DataError
from cosmosage.dataprep.synth.generate import content_words, ground_pair, grounding, parse_pairs
from cosmosage.dataprep.synth.grade import parse_grade
from cosmosage.dataprep.synth.parse import (
    ParseError,
    as_number,
    extract_fields,
    extract_json,
    extract_output,
)
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


# --------------------------------------------------------------------------- labelled lines

SYNTH_LABELS = {"question": "question", "q": "question", "answer": "answer", "a": "answer"}


def test_labelled_lines_become_items():
    text = (
        "Here you go.\n"
        "Question: What sets the BAO scale?\n"
        "Answer: The sound horizon at the drag epoch,\n"
        "about 147 Mpc.\n"
        "\n"
        "**Question 2:** Which epoch is meant?\n"
        "**Answer:** The drag epoch: when baryons leave the photons.\n"
        "- Q: Is it a standard ruler?\n"
        "- A: Yes, in comoving units."
    )
    items, notes = extract_fields(text, "stop", SYNTH_LABELS)
    assert items == [
        {
            "question": "What sets the BAO scale?",
            "answer": "The sound horizon at the drag epoch, about 147 Mpc.",
        },
        {
            "question": "Which epoch is meant?",
            "answer": "The drag epoch: when baryons leave the photons.",
        },
        {"question": "Is it a standard ruler?", "answer": "Yes, in comoving units."},
    ]
    assert notes == ["1 line(s) before the first label ignored"]
    pairs, problems = parse_pairs(items, 3)
    assert [p["question"] for p in pairs][2] == "Is it a standard ruler?" and problems == []


def test_a_label_outside_the_known_ones_continues_the_value():
    items, _ = extract_fields(
        "Question: Why?\nAnswer: Because\nNote: the ratio is 2.", None, SYNTH_LABELS
    )
    assert items == [{"question": "Why?", "answer": "Because Note: the ratio is 2."}]


def test_an_item_cut_by_max_tokens_is_dropped():
    text = "Question: One?\nAnswer: First.\nQuestion: Two?\nAnswer: Sec"
    items, notes = extract_fields(text, "length", SYNTH_LABELS)
    assert items == [{"question": "One?", "answer": "First."}]
    assert "the last item reached max_tokens and was dropped" in notes
    with pytest.raises(ParseError, match="^cut off"):
        extract_fields("Question: One?\nAnswer: Fir", "length", SYNTH_LABELS)


@pytest.mark.parametrize("text", ["I like the passage.", "Summary: nice\nTitle: x"])
def test_lines_without_known_labels_have_a_reason(text):
    with pytest.raises(ParseError) as err:
        extract_fields(text, "stop", SYNTH_LABELS)
    assert err.value.reason.startswith("no fields:")
    with pytest.raises(ParseError, match="^empty output"):
        extract_fields("  ", "stop", SYNTH_LABELS)


def test_extract_output_follows_the_prompt_kind():
    assert extract_output("json", GOOD)[0]["pairs"][0]["answer"].startswith("The sound")
    assert extract_output(
        "lines", "Score: 80\nCritique: ok", None, {"score": "overall", "critique": "critique"}
    )[0] == [{"overall": "80", "critique": "ok"}]


# --------------------------------------------------------------------------- grounding

CHUNK = (
    "The optical depth to reionization measured by Planck is tau = 0.054, which places "
    "the midpoint of reionization near redshift 7.7. Galaxies supply most ionizing photons."
)


def test_content_words_skip_function_words_and_fold_plurals():
    assert content_words("What is the optical depth of the galaxies measured in 2018?") == {
        "optical",
        "depth",
        "galaxi",
        "measur",
        "2018",
    }
    assert content_words("measure measures measuring") == {"measur"}


def test_grounded_pairs_kept_and_invented_ones_refused():
    words = content_words(CHUNK)
    good = {
        "question": "What optical depth did Planck measure?",
        "answer": "Planck measured tau = 0.054.",
    }
    scores, refused = ground_pair(good, words, 0.6)
    assert refused is None and scores == {"answer": 1.0, "question": 1.0}
    invented = {"question": "What did Planck measure?", "answer": "The mass of the Milky Way halo."}
    scores, refused = ground_pair(invented, words, 0.6)
    assert scores["answer"] == 0.0 and refused.startswith("ungrounded: 0% of the answer's")
    off_topic = {"question": "Who wrote Hamlet?", "answer": "Planck measured tau."}
    assert ground_pair(off_topic, words, 0.6)[1] == (
        "ungrounded: the question shares no content word with the chunk"
    )
    assert ground_pair({"question": "Optical depth?", "answer": "Yes, it is."}, words, 0.6)[1] == (
        "ungrounded: the answer has no content words"
    )
    # a minimum of 0 scores but refuses nothing
    assert ground_pair(invented, words, 0.0) == ({"answer": 0.0, "question": 1.0}, None)
    assert grounding("of the and", words) is None


# --------------------------------------------------------------------------- prompt keys


def test_small_model_prompts_declare_their_form():
    p = load_prompt("synth_qa_small")
    assert p.output == "lines" and p.examples
    assert 0 < p.min_grounding <= 1 and 0 < p.sampling["max_tokens"] <= 512
    p.check({"chunk", "pairs", "doc_id"})
    g = load_prompt("grade_small")
    assert g.output == "lines" and g.sampling["max_tokens"] <= 128
    g.check({"chunk", "question", "answer"})
    # the keys added for small models leave older prompts' hashes alone
    assert load_prompt("synth_qa").sha == "c482bb56840610d0"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("output: xml\n", "output: 'xml' is not one of json, lines"),
        ("sampling: 5\n", "sampling: expected a mapping"),
        ("sampling: {stop: [1]}\n", "sampling.stop: expected a string or a list of strings"),
        ("min_grounding: 2\n", "min_grounding: expected a share from 0 to 1"),
        ("examples: [{chunk: x}]\n", "examples: expected a list of mappings, each with a 'reply'"),
    ],
)
def test_prompt_key_errors_name_the_file(tmp_path, extra, message):
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\nversion: 1\nuser: hi {{chunk}}\n" + extra)
    with pytest.raises(DataError) as err:
        load_prompt(bad)
    assert str(bad) in str(err.value) and message in str(err.value)


def test_examples_are_earlier_turns_and_checked_like_placeholders(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(
        "name: x\nversion: 1\nsystem: Be brief.\nuser: 'Passage: {{chunk}} ({{pairs}})'\n"
        "examples: [{chunk: Tau is 0.054., pairs: 1, reply: 'Question: Tau?'}]\n"
    )
    p = load_prompt(f)
    assert p.messages(chunk="H0 is 67.", pairs=3) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Passage: Tau is 0.054. (1)"},
        {"role": "assistant", "content": "Question: Tau?"},
        {"role": "user", "content": "Passage: H0 is 67. (3)"},
    ]
    p.check({"chunk", "pairs", "doc_id"})
    f.write_text(f.read_text().replace("pairs: 1", "level: 1"))
    with pytest.raises(DataError, match=r"examples\[1\]: unknown key\(s\) level"):
        load_prompt(f).check({"chunk", "pairs", "doc_id"})


def test_text_after_a_blank_line_ends_the_item_so_a_rambling_cut_keeps_it():
    text = (
        "Question: What does the estimator reconstruct?\n"
        "Answer: The lensing potential, from pairs of CMB modes.\n"
        "\n"
        "## 2 Methodology\n"
        "\n"
        "The pipeline described in the passage is based on"
    )
    items, notes = extract_fields(text, "length", SYNTH_LABELS)
    assert items == [
        {
            "question": "What does the estimator reconstruct?",
            "answer": "The lensing potential, from pairs of CMB modes.",
        }
    ]
    assert notes == ["2 line(s) of text after an item ignored"]
    # a blank line between items, then the next label, is the ordinary form
    two = "Question: A?\nAnswer: One.\n\nQuestion: B?\nAnswer: Two,\nstill two."
    items, _ = extract_fields(two, "stop", SYNTH_LABELS)
    assert [x["answer"] for x in items] == ["One.", "Two, still two."]
    # but an item open when the output was cut is still dropped
    items, _ = extract_fields(two + "\nQuestion: C?\nAnswer: Thr", "length", SYNTH_LABELS)
    assert [x["question"] for x in items] == ["A?", "B?"]
