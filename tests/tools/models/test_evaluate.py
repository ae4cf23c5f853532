"""Prompt suites: loading with clear errors, scoring, several suites, real generation."""

from __future__ import annotations

import pytest

from cosmosage.dataprep.io import DataError
from cosmosage.tools.models.evaluate import (
    evaluate,
    load_suite,
    load_suites,
    passes,
    report_markdown,
)


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_expected_substrings_are_alternatives_case_insensitive():
    assert passes("Recombination happened near z = 1090.", ["1100", "1090"])
    assert passes("It is the FRIEDMANN equation", ["friedmann"])
    assert not passes("no idea", ["1100", "1090"])
    assert not passes("anything", [])


def test_suite_errors_name_the_file_and_line(tmp_path):
    bad = write(tmp_path, "bad.yaml", "prompts:\n  - id: a\n    prompt: [unclosed\n")
    with pytest.raises(DataError, match=rf"{bad}:\d+:"):
        load_suite(bad)
    empty = write(tmp_path, "empty.yaml", "other: 1\n")
    with pytest.raises(DataError, match="top-level `prompts:` list"):
        load_suite(empty)
    noprompt = write(tmp_path, "np.yaml", "prompts:\n  - id: a\n    expect: [x]\n")
    with pytest.raises(DataError, match=r"prompts\[0\].prompt"):
        load_suite(noprompt)


def test_several_suites_keep_every_prompt_with_unique_ids(tmp_path):
    a = write(tmp_path, "a.yaml", "prompts:\n  - {id: q1, prompt: one, expect: [x]}\n")
    b = write(
        tmp_path, "b.yaml", "prompts:\n  - {id: q1, prompt: two, expect: [y], kind: general}\n"
    )
    prompts = load_suites([a, b])
    assert [p["id"] for p in prompts] == ["q1", "b/q1"]
    assert prompts[0]["kind"] == "domain" and prompts[1]["kind"] == "general"


def test_evaluate_asks_each_model_and_scores_by_kind(tmp_path, tiny_model):
    suite = write(
        tmp_path,
        "s.yaml",
        "prompts:\n"
        "  - {id: a, prompt: 'What is the CMB?', expect: ['']}\n"  # the empty string is in any answer
        "  - {id: b, prompt: Say hello., expect: [zzzz-never], kind: general}\n",
    )
    res = evaluate({"m1": tiny_model, "m2": tiny_model}, suite, max_new_tokens=4)
    assert res["scores"]["m1"] == {"domain": 1.0, "general": 0.0, "all": 0.5}
    assert res["scores"]["m1"] == res["scores"]["m2"]
    assert [r["m1_pass"] for r in res["answers"]] == [True, False]
    assert all(isinstance(r["m1"], str) for r in res["answers"])
    text = report_markdown(res)
    assert "| m1 (" in text and "## a (domain)" in text and "[fail]" in text
