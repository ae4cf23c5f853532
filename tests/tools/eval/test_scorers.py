"""Scorers tell a right answer from a wrong one; suites refuse expectations that cannot."""

from __future__ import annotations

import pytest

from cosmosage.dataprep.records import DataError
from cosmosage.tools.eval.scorers import score
from cosmosage.tools.eval.suites import load_suite, load_suites


def s(answer: str, **prompt) -> bool:
    prompt.setdefault("expect", [])
    return score(answer, prompt)[0]


def test_contains_takes_alternatives_case_insensitively():
    assert s("Recombination happened near z = 1090.", expect=["1100", "1090"])
    assert s("It is the FRIEDMANN equation", expect=["friedmann"])
    assert not s("no idea", expect=["1100", "1090"])


def test_exact_ignores_case_spacing_and_end_punctuation_only():
    assert s("  Standard   Ruler. ", score="exact", expect=["standard ruler"])
    assert not s("a standard ruler", score="exact", expect=["standard ruler"])


def test_regex_searches_case_insensitively():
    assert s("H0 = 73.0 km/s/Mpc", score="regex", expect=[r"\b7[0-4](\.\d)? ?km"])
    assert not s("H0 = 67.4 km/s/Mpc", score="regex", expect=[r"\b7[0-4](\.\d)? ?km"])


def test_a_catastrophic_pattern_cannot_hang_the_scorer(monkeypatch):
    import time

    from cosmosage.tools.eval import scorers

    t0 = time.monotonic()
    passed, detail = score("a" * 40 + "!", {"score": "regex", "expect": [r"(a+)+$"]})
    assert not passed and detail == "no pattern matches"
    assert time.monotonic() - t0 < 5  # Python's re takes hours on this answer
    # and a pattern past its time limit fails its answer with the reason
    # (a backreference inside a repeated group defeats the engine's own shortcuts: this
    # search runs past a minute, so a short limit always fires, however loaded the machine)
    monkeypatch.setattr(scorers, "REGEX_TIMEOUT_S", 0.2)
    t0 = time.monotonic()
    passed, detail = score("a" * 30, {"score": "regex", "expect": [r"^((a+)\2*)+c"]})
    assert time.monotonic() - t0 < 5
    assert not passed and "catastrophic backtracking" in detail


@pytest.mark.parametrize(
    ("answer", "tolerance", "ok"),
    [
        ("about 2.7 K", 0.05, True),  # 2.7 vs 2.725: within 0.05
        ("about 2.7 K", 0.01, False),
        ("2,725 mK is 2.725 K", "1%", True),
        ("it is 3 K", "5%", False),  # 3 vs 2.725 is 10% off
        ("no number here", 1, False),
        ("-2.725", 0.001, False),
    ],
)
def test_numeric_with_absolute_or_relative_tolerance(answer, tolerance, ok):
    assert s(answer, score="numeric", expect=[2.725], tolerance=tolerance) is ok


def test_json_against_a_schema():
    schema = {
        "type": "object",
        "properties": {"canto": {"type": "integer"}},
        "required": ["canto"],
    }
    assert s('{"canto": 5}', score="json", schema=schema)
    assert s('Here it is: {"canto": 5} done', score="json", schema=schema)
    ok, detail = score('{"canto": "five"}', {"score": "json", "schema": schema})
    assert not ok and detail.startswith("schema: canto:")
    ok, detail = score("no json", {"score": "json", "schema": schema})
    assert not ok and detail == "no JSON value in the answer"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_empty_or_missing_expectations_are_refused(tmp_path):
    # an empty string is in every answer: such a prompt could never fail
    empty = write(tmp_path, "e.yaml", "prompts:\n  - {id: a, prompt: Q, expect: ['']}\n")
    with pytest.raises(DataError, match=r"e.yaml: prompts\[0\].expect\[0\]: empty"):
        load_suite(empty)
    none = write(tmp_path, "n.yaml", "prompts:\n  - {id: a, prompt: Q}\n")
    with pytest.raises(DataError, match=r"prompts\[0\].expect: a non-empty list"):
        load_suite(none)
    nan = write(tmp_path, "x.yaml", "prompts:\n  - {prompt: Q, score: numeric, expect: [abc]}\n")
    with pytest.raises(DataError, match="is not a number"):
        load_suite(nan)
    judge = write(tmp_path, "j.yaml", "prompts:\n  - {prompt: Q, score: judge}\n")
    with pytest.raises(DataError, match="needs a reference"):
        load_suite(judge)
    unknown = write(tmp_path, "u.yaml", "prompts:\n  - {prompt: Q, score: fuzzy, expect: [a]}\n")
    with pytest.raises(DataError, match="unknown scorer 'fuzzy'"):
        load_suite(unknown)


def test_suite_errors_name_the_file_and_line(tmp_path):
    bad = write(tmp_path, "bad.yaml", "prompts:\n  - id: a\n    prompt: [unclosed\n")
    with pytest.raises(DataError, match=rf"{bad}:\d+:"):
        load_suite(bad)
    with pytest.raises(DataError, match="top-level `prompts:` list"):
        load_suite(write(tmp_path, "o.yaml", "other: 1\n"))


def test_a_misspelt_kind_is_an_error_and_a_label_of_ones_own_is_kept(tmp_path):
    typo = write(tmp_path, "t.yaml", "prompts:\n  - {prompt: Q, kind: generl}\n")
    with pytest.raises(
        DataError, match=r"prompts\[0\].kind: 'generl' is not a kind; did you mean 'general'"
    ):
        load_suite(typo)
    own = write(tmp_path, "o.yaml", "prompts:\n  - {prompt: Q, expect: [a], kind: recall}\n")
    assert load_suite(own)[0]["kind"] == "recall"


def test_a_misspelt_field_and_a_tolerance_that_is_no_number_are_refused_on_load(tmp_path):
    typo = write(tmp_path, "t.yaml", "prompts:\n  - {prompt: Q, scorer: exact, expect: [a]}\n")
    with pytest.raises(DataError, match=r"prompts\[0\].scorer: not a field .*did you mean 'score'"):
        load_suite(typo)
    for tol in ('"5 percent"', "[1]", "-2", "true"):
        bad = write(
            tmp_path,
            "n.yaml",
            f"prompts:\n  - {{prompt: Q, score: numeric, expect: [4], tolerance: {tol}}}\n",
        )
        with pytest.raises(
            DataError, match=r"prompts\[0\].tolerance: .* not a number or a percentage"
        ):
            load_suite(bad)
    ok = write(tmp_path, "k.yaml", 'prompts:\n  - {prompt: Q, score: numeric, expect: [4], tolerance: "5%",'
               " fact: f1, document: d.md, source: mine}\n")  # fmt: skip
    assert load_suite(ok)[0]["source"] == "mine"  # labels of one's own are kept


def test_schema_file_is_read_relative_to_the_suite(tmp_path):
    write(tmp_path, "s.schema.yaml", "type: object\nrequired: [a]\n")
    suite = write(
        tmp_path, "j.yaml", "prompts:\n  - {prompt: Q, score: json, schema: s.schema.yaml}\n"
    )
    p = load_suite(suite)[0]
    assert p["schema"] == {"type": "object", "required": ["a"]}
    assert score('{"a": 1}', p)[0] and not score('{"b": 1}', p)[0]


def test_several_suites_keep_every_prompt_with_unique_ids(tmp_path):
    a = write(tmp_path, "a.yaml", "prompts:\n  - {id: q1, prompt: one, expect: [x]}\n")
    b = write(
        tmp_path, "b.yaml", "prompts:\n  - {id: q1, prompt: two, expect: [y], kind: general}\n"
    )
    prompts = load_suites([a, b])
    assert [p["id"] for p in prompts] == ["q1", "b/q1"]
    assert [p["suite"] for p in prompts] == ["a", "b"]
    assert prompts[0]["kind"] == "domain" and prompts[1]["kind"] == "general"


def test_bundled_suites_load():
    from cosmosage.tools.paths import ROOT

    for suite in sorted((ROOT / "samples" / "eval").glob("*.yaml")):
        assert load_suite(suite)
