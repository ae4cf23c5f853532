"""Judge scoring: verdicts and details from a canned judge, the cache (reruns ask nothing,
a changed answer asks once), unusable replies and failed requests, lenient reading of
replies, `score_models` with a judge on the tiny model, and a real `transformers serve`."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from cosmosage.dataprep.records import DataError
from cosmosage.dataprep.synth.llm import RetryPolicy
from cosmosage.dataprep.synth.parse import ParseError
from cosmosage.dataprep.synth.serve import transformers_serve
from cosmosage.tools.eval.evaluate import score_models
from cosmosage.tools.eval.judge import cache_file, judge_key, make_judge, read_score
from tests.helpers.scripted_server import ScriptedServer, judge_reply

QUIET = {"echo": lambda m: None}
FAST_RETRY = RetryPolicy(retries=1, base=0.01, cap=0.05)


def prompt(i: int, reference: str = "about 2.7 K") -> dict:
    return {"id": f"q{i}", "prompt": f"Question {i}: how cold is the CMB?", "reference": reference}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def judgments(path: Path) -> list[dict]:
    return [e for e in lines(path)[1:] if e.get("key")]


# --------------------------------------------------------------------------- reading replies


@pytest.mark.parametrize(
    ("text", "obj", "score", "how"),
    [
        (
            '{"score": 85, "reason": "same value"}',
            {"score": 85, "reason": "same value"},
            85,
            "json",
        ),
        ("ignored", [{"Score": "90/100", "Explanation": "fine"}], 90, "json"),
        ("85", None, 85, "number"),
        ("  85/100 - right value", None, 85, "number"),
        ("72.5.", None, 72.5, "number"),
        ("Score: 40\nReason: half right", None, 40, "score key"),
        ('{"score": 65, "reason": "cut o', None, 65, "score key"),
        ("**Score**: 0 (off topic)", None, 0, "score key"),
        ("<think>maybe 10</think>The score is 55.", None, 55, "score key"),
        ("I would give it 80 out of 100, it is close.", None, 80, "out of 100"),
    ],
)
def test_replies_are_read_leniently(text, obj, score, how):
    got, reason, read = read_score(text, obj)
    assert (got, read) == (score, how)
    assert isinstance(reason, str)


def test_reasons_are_kept():
    assert read_score("Score: 40\nReason: half right")[1] == "half right"
    assert read_score('{"score": 65, "reason": "cut o')[1] == "cut o"
    assert read_score("85. The value matches.")[1] == "The value matches."


@pytest.mark.parametrize(
    ("text", "obj", "start"),
    [
        ("I cannot compare these.", None, "no score"),
        ("2.7 K is the temperature", None, "no score"),
        ("", None, "empty output"),
        ("<think>hmm</think>", None, "empty output"),
        ('{"verdict": "yes"}', {"verdict": "yes"}, "no score"),
        ('{"score": "high"}', {"score": "high"}, "bad score"),
        ('{"score": 150}', {"score": 150}, "bad score"),
        ("score: 850", None, "bad score"),
    ],
)
def test_unreadable_replies_say_why(text, obj, start):
    with pytest.raises(ParseError) as exc:
        read_score(text, obj)
    assert exc.value.reason.startswith(start)


def test_cache_paths_and_keys():
    assert cache_file("out/judge.jsonl") == Path("out/judge.journal.jsonl")
    assert cache_file("out/j.journal.jsonl") == Path("out/j.journal.jsonl")
    assert cache_file("out/eval") == Path("out/eval/judge.journal.jsonl")
    base = judge_key("m", "q", "ref", "ans", "1")
    assert len(base) == 32 and base == judge_key("m", "q", "ref", "ans", "1")
    others = [
        judge_key("m2", "q", "ref", "ans", "1"),
        judge_key("m", "q2", "ref", "ans", "1"),
        judge_key("m", "q", "ref2", "ans", "1"),
        judge_key("m", "q", "ref", "ans2", "1"),
        judge_key("m", "q", "ref", "ans", "2"),
    ]
    assert len({base, *others}) == 6


# --------------------------------------------------------------------------- canned judge


def test_verdicts_details_and_cache(tmp_path):
    prompts = [prompt(i) for i in range(5)]
    answers = [
        "It is 2.7 K. judge-score=85",
        "It is 300 K. judge-score=20",
        "2.725 K judge-score=70 judge-format=bare",  # exactly at the threshold passes
        "About 3 K judge-score=69 judge-format=colon",
        "no idea judge-format=prose",
    ]
    cache = tmp_path / "eval" / "judge.jsonl"
    with ScriptedServer(judge_reply) as s:
        judge = make_judge(s.base_url, "judge", cache, concurrency=3, **QUIET)
        got = judge(prompts, answers)
        assert len(s.requests) == 5
        assert [v for v, _ in got] == [True, False, True, False, None]
        assert got[0][1] == "judge 85 >= 70: scripted reason 85"
        assert got[1][1] == "judge 20 < 70: scripted reason 20"
        assert got[2][1].startswith("judge 70 >= 70")
        assert got[3][1] == "judge 69 < 70: scripted reason 69"
        assert got[4][1].startswith("judge output unusable: no score")
        assert "I am not able to compare" in got[4][1]
        # What the judge was shown, and how it was asked.
        body = s.requests[0]["body"]
        assert body["model"] == "judge" and body["temperature"] == 0.0
        shown = " ".join(r["body"]["messages"][-1]["content"] for r in s.requests)
        assert "Reference answer: about 2.7 K" in shown and "Question 3:" in shown
        assert "It is 300 K." in shown

        # The cache: the same answers again ask nothing and give the same verdicts.
        again = make_judge(s.base_url, "judge", cache, **QUIET)
        assert again(prompts, answers) == got and len(s.requests) == 5
        assert again.last_run["usage"]["requests"] == 0
        assert again.last_run["items_from_earlier_runs"] == 5

        # One changed answer: exactly one new request.
        changed = [*answers[:1], "It is 2.73 K. judge-score=90", *answers[2:]]
        third = again(prompts, changed)
        assert len(s.requests) == 6 and third[1] == (True, "judge 90 >= 70: scripted reason 90")
        assert third[0] == got[0] and third[2:] == got[2:]

        # A new threshold is applied to cached scores without asking again.
        strict = make_judge(s.base_url, "judge", cache, threshold=80, **QUIET)
        assert [v for v, _ in strict(prompts, answers)] == [True, False, False, False, None]
        assert len(s.requests) == 6

        # Another judge model is another key.
        make_judge(s.base_url, "judge-2", cache, **QUIET)(prompts[:1], answers[:1])
        assert len(s.requests) == 7

    journal = cache_file(cache)
    assert journal == tmp_path / "eval" / "judge.journal.jsonl" and journal.is_file()
    header, entries = lines(journal)[0], judgments(journal)
    assert header["kind"] == "judge" and header["prompt"]["name"] == "judge_answer"
    assert len(entries) == 7 and all(e["prompt_version"] == "1" for e in entries)
    assert sum(e["model"] == "judge-2" for e in entries) == 1
    by_score = {e.get("score"): e for e in entries if e["model"] == "judge"}
    assert by_score[85]["read"] == "json" and by_score[85]["model"] == "judge"
    assert by_score[70]["read"] == "number" and by_score[69]["read"] == "score key"
    prose = next(e for e in entries if "score" not in e)
    assert prose["failed"] == "parse" and prose["raw"].startswith("I am not able")


def test_duplicates_and_empty_answers_are_not_sent(tmp_path):
    prompts = [prompt(0), prompt(0), prompt(1)]
    answers = ["same judge-score=90", "same judge-score=90", "   "]
    with ScriptedServer(judge_reply) as s:
        got = make_judge(s.base_url, "judge", tmp_path, **QUIET)(prompts, answers)
        assert len(s.requests) == 1
    assert got[0] == got[1] and got[0][0] is True
    assert got[2] == (False, "empty answer: nothing for the judge")
    assert (tmp_path / "judge.journal.jsonl").is_file()


def test_failed_requests_give_none_and_are_asked_again(tmp_path):
    prompts = [prompt(0), prompt(1)]
    answers = ["fine judge-score=75", "broken judge-format=error"]
    with ScriptedServer(judge_reply) as s:
        judge = make_judge(s.base_url, "judge", tmp_path / "j.jsonl", retry=FAST_RETRY, **QUIET)
        got = judge(prompts, answers)
        assert got[0][0] is True and got[1][0] is None
        assert got[1][1].startswith("judge request failed: HTTP 500")
        assert "after 2 attempts" in got[1][1]
        assert len(s.requests) == 1 + 2  # one retry for the failing one
        # Not cached: the next call asks about the failed one only.
        assert judge(prompts, answers) == got and len(s.requests) == 3 + 2


def test_unusable_output_is_cached_not_raised(tmp_path):
    prompts = [prompt(0)]
    answers = ["judge-format=prose"]
    with ScriptedServer(judge_reply) as s:
        judge = make_judge(s.base_url, "judge", tmp_path / "j.jsonl", **QUIET)
        first = judge(prompts, answers)
        assert first[0][0] is None and first[0][1].startswith("judge output unusable:")
        assert judge(prompts, answers) == first and len(s.requests) == 1


def test_concurrency_is_bounded(tmp_path):
    in_flight, peak, lock = 0, 0, threading.Lock()

    def slow(request: dict, n: int):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
        return judge_reply(request, n)

    prompts = [prompt(i) for i in range(12)]
    answers = [f"answer {i}" for i in range(12)]
    with ScriptedServer(slow) as s:
        got = make_judge(s.base_url, "judge", tmp_path / "j.jsonl", concurrency=3, **QUIET)(
            prompts, answers
        )
        assert len(s.requests) == 12
    assert peak == 3
    assert all(v is not None and d.startswith("judge ") for v, d in got)


def test_a_journal_of_another_kind_is_refused(tmp_path):
    other = tmp_path / "qa.journal.jsonl"
    other.write_text(json.dumps({"journal": 1, "kind": "synth"}) + "\n")
    with ScriptedServer(judge_reply) as s:
        judge = make_judge(s.base_url, "judge", other, **QUIET)
        with pytest.raises(DataError, match="'synth' run"):
            judge([prompt(0)], ["x"])


# --------------------------------------------------------------------------- evaluate


def test_evaluate_with_a_judge_on_the_tiny_model(tiny_model, tmp_path):
    suite = tmp_path / "judged.yaml"
    suite.write_text(
        "prompts:\n"
        "  - id: cmb\n"
        "    prompt: What is the temperature of the CMB today?\n"
        "    score: judge\n"
        "    reference: About 2.7 K.\n"
        "  - id: ruler\n"
        "    prompt: Are BAO a standard candle or a standard ruler?\n"
        "    expect: [ruler]\n"
    )
    settings = {"preset": "greedy", "max_new_tokens": 8}
    cache = tmp_path / "eval" / "judge.jsonl"
    with ScriptedServer(judge_reply) as s:
        judge = make_judge(s.base_url, "judge", cache, **QUIET)
        res = score_models({"tiny": tiny_model}, [suite], settings, judge=judge)
        assert len(s.requests) == 1  # only the judge prompt goes to the judge
        expected = json.loads(
            judge_reply(s.requests[0]["body"], 0).body["choices"][0]["message"]["content"]
        )["score"]
        row = next(r for r in res["answers"] if r["id"] == "cmb")
        assert row["score"] == "judge" and isinstance(row["tiny"], str)
        assert row["tiny_pass"] is (expected >= 70)
        assert row["tiny_detail"].startswith(f"judge {expected} ")
        assert row["tiny"] in s.requests[0]["body"]["messages"][-1]["content"]
        assert res["scores"]["tiny"]["all"] == pytest.approx(
            (row["tiny_pass"] + next(r for r in res["answers"] if r["id"] == "ruler")["tiny_pass"])
            / 2
        )
        # Greedy answers are the same again, so the judge is not asked again.
        again = score_models({"tiny": tiny_model}, [suite], settings, judge=judge)
        assert len(s.requests) == 1 and again["answers"] == res["answers"]


def test_eval_with_a_judge_and_no_out_keeps_verdicts_in_the_build_cache(
    tiny_model, tmp_path, monkeypatch
):
    """`cosmosage eval --judge-url ...` without --out writes nothing where it is run."""
    from click.testing import CliRunner

    from cosmosage.tools import paths
    from cosmosage.tools.cli.main import main

    suite = tmp_path / "judged.yaml"
    suite.write_text(
        "prompts:\n  - id: cmb\n    prompt: How cold is the CMB?\n"
        "    score: judge\n    reference: About 2.7 K.\n"
    )
    root, here = tmp_path / "root", tmp_path / "here"
    here.mkdir()
    monkeypatch.setattr(paths, "ROOT", root)
    monkeypatch.chdir(here)
    with ScriptedServer(judge_reply) as s:
        args = ["eval", str(tiny_model), "--suite", str(suite), "--set", "max_new_tokens=4"]
        args += ["--judge-url", s.base_url, "--judge-model", "judge"]
        res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert len(s.requests) == 1
    assert list(here.iterdir()) == []
    assert (root / "build" / "cache" / "judge" / "judge.journal.jsonl").is_file()


# --------------------------------------------------------------------------- real server


@pytest.mark.server
def test_real_server_judges_end_to_end(tiny_model, tmp_path):
    server = transformers_serve(tiny_model, tmp_path / "hf-cache").start()
    try:
        try:
            server.wait(timeout=120)
        except RuntimeError as exc:
            pytest.fail(f"transformers serve did not come up: {exc}")
        prompts = [prompt(i, reference=f"About {2 + i}.7 K.") for i in range(3)]
        answers = ["It is 2.7 K.", "Roughly 300 K.", "The CMB is cold."]
        sampling = {"temperature": 0.0, "max_tokens": 16}
        cache = tmp_path / "judge.jsonl"
        judge = make_judge(
            server.base_url,
            server.model,
            cache,
            concurrency=2,
            retry=FAST_RETRY,
            sampling=sampling,
            timeout=60,
            **QUIET,
        )
        got = judge(prompts, answers)
        assert len(got) == 3
        assert judge.last_run["usage"]["requests"] >= 3
        for passed, detail in got:  # the tiny model's judgments are noise: only their form
            if passed is None:
                assert detail.startswith(("judge output unusable: ", "judge request failed: "))
            else:
                assert detail.startswith("judge ") and (" >= 70: " in detail or " < 70: " in detail)
        assert any(not d.startswith("judge request failed") for _, d in got), got
        entries = judgments(cache_file(cache))
        assert len(entries) == 3 and all(e["model"] == server.model for e in entries)
        # Cached: asking again sends nothing (failed requests aside) and says the same.
        again = make_judge(server.base_url, server.model, cache, sampling=sampling, **QUIET)
        second = again(prompts, answers)
        failed = sum(d.startswith("judge request failed") for _, d in got)
        assert again.last_run["items_from_earlier_runs"] == 3 - failed
        if not failed:
            assert again.last_run["usage"]["requests"] == 0 and second == got
    finally:
        server.stop()
