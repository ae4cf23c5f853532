"""`data replay`: the base model's own answers as chat records. Prompts too close to an
evaluation suite are held out, bad answers are rejected with their reason, a killed run
resumes, and the bundled prompts hold out every bundled suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.io import read_yaml
from cosmosage.dataprep.records import DataError, record_strings
from cosmosage.dataprep.synth.replay import (
    Holdout,
    ReplayConfig,
    looping,
    read_prompts,
    run_replay,
    select_prompts,
)
from cosmosage.tools.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
QUIET = {"echo": lambda m: None}


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


@pytest.fixture
def files(tmp_path):
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(
        "kinds:\n"
        "  facts:\n"
        "    - What is the capital of Italy?\n"  # 3
        "    - Who wrote the play Hamlet?\n"  # 4: too close to the suite's prompt
        "    - what is the capital of italy\n"  # 5: duplicate of line 3
        "    - 42\n"  # 6: not text
        "  maths:\n"
        "    - What is 6 times 7?\n"  # 8
        "    - Say something twice.\n"  # 9
        "    - Count forever.\n"  # 10
        "    - Write a long essay.\n"  # 11
        "    - Say nothing.\n"  # 12
    )
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "prompts:\n  - {id: a, prompt: 'Who wrote Hamlet?', expect: [Shakespeare]}\n"
        "  - {id: b, prompt: 'What is the capital of France?', expect: [Paris]}\n"
    )
    return prompts, suite


SCRIPT = {
    "What is the capital of Italy?": ("The capital of Italy is Rome.", True),
    "What is 6 times 7?": ("6 times 7 is 42.", True),
    "Say something twice.": ("The capital of Italy is Rome.", True),  # same as line 3's
    "Count forever.": ("one two three " * 6, True),
    "Write a long essay.": ("Essays begin with", False),
    "Say nothing.": ("  ", True),
}


class Scripted:
    """Answers from a table, counting what it was asked (the filters' and the journal's
    test; the model itself answers in test_replay_cli_with_a_real_model)."""

    def __init__(self, fail_after: int | None = None):
        self.asked: list[str] = []
        self.fail_after = fail_after

    def __call__(self, texts):
        if self.fail_after is not None and len(self.asked) >= self.fail_after:
            raise KeyboardInterrupt
        self.asked += texts
        return [SCRIPT[t] for t in texts]


def test_prompts_close_to_a_suite_duplicates_and_non_text_are_rejected_with_their_line(files):
    prompts, suite = files
    cfg = ReplayConfig(
        out="x.jsonl", prompts=[str(prompts)], model="m", settings={}, against=[str(suite)]
    )
    kept, rejects, kinds = select_prompts(cfg)
    assert [p.text for p in kept][:2] == ["What is the capital of Italy?", "What is 6 times 7?"]
    why = {r.line: r.reason for r in rejects}
    assert why[4].startswith("held out: too close to suite.yaml")
    assert why[5] == f"duplicate prompt (first at {prompts}:3)"
    assert "must be text" in why[6]
    assert kinds == {"facts": 1, "maths": 5}


def test_answers_empty_cut_off_looping_or_repeated_are_rejected(files, tmp_path):
    prompts, suite = files
    out = tmp_path / "replay.jsonl"
    cfg = ReplayConfig(
        out=str(out),
        prompts=[str(prompts)],
        model="m",
        settings={"x": 1},
        against=[str(suite)],
        batch_size=2,
    )
    got = run_replay(cfg, Scripted(), **QUIET)
    recs = lines(out)
    assert [r["messages"][1]["content"] for r in recs] == [
        "The capital of Italy is Rome.",
        "6 times 7 is 42.",
    ]
    assert recs[0]["messages"][0] == {"role": "user", "content": "What is the capital of Italy?"}
    reasons = {r["line"]: r["reason"] for r in lines(tmp_path / "replay.rejects.jsonl")}
    assert reasons[9] == f"the same answer as the prompt at {prompts}:3"
    assert reasons[10].startswith("answer loops")
    assert reasons[11] == "answer cut off by the token limit (raise --max-new-tokens to keep it)"
    assert reasons[12] == "empty answer"
    manifest = json.loads((tmp_path / "replay.manifest.json").read_text())
    assert manifest["kept"] == got["kept"] == 2 and manifest["dropped_total"] == 7
    assert manifest["kinds"] == {"facts": 1, "maths": 1}
    assert looping("a b c " * 5) and not looping("a b c " * 4)


def test_a_killed_run_resumes_with_only_what_is_left_and_the_same_output(files, tmp_path):
    prompts, suite = files
    whole = tmp_path / "whole.jsonl"
    cfg = dict(prompts=[str(prompts)], model="m", settings={}, against=[str(suite)], batch_size=2)
    run_replay(ReplayConfig(out=str(whole), **cfg), Scripted(), **QUIET)
    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_replay(ReplayConfig(out=str(out), **cfg), Scripted(fail_after=2), **QUIET)
    assert not out.exists()
    again = Scripted()
    run_replay(ReplayConfig(out=str(out), **cfg), again, **QUIET)
    assert len(again.asked) == 4  # 6 prompts kept, 2 answered before the kill
    assert out.read_text() == whole.read_text()
    # other generation settings cannot resume this journal
    with pytest.raises(DataError, match="made with settings"):
        run_replay(ReplayConfig(out=str(out), **{**cfg, "settings": {"t": 1}}), Scripted(), **QUIET)


class Drawn(Scripted):
    """Draws of a sampled model: the n-th time a prompt is asked it answers the n-th of
    its scripted draws."""

    DRAWS = {
        "What is the capital of Italy?": ["Rome.", "Rome.", "It is Rome."],
        "What is 6 times 7?": ["42.", "Rome.", "6 times 7 is 42."],
    }

    def __call__(self, texts):
        self.asked += texts
        return [
            (self.DRAWS[t][self.asked[: len(self.asked) - len(texts) + k].count(t)], True)
            if t in self.DRAWS
            else SCRIPT[t]
            for k, t in enumerate(texts)
        ]


def test_several_draws_per_prompt_keep_the_models_repeats_and_resume(files, tmp_path):
    """--samples 3: each prompt is asked three times (its draws side by side in a batch),
    an answer drawn twice for one prompt is kept twice (the model's own frequency), the
    same answer to another prompt is still refused, and a rerun asks nothing again."""
    prompts, suite = files
    out = tmp_path / "drawn.jsonl"
    cfg = ReplayConfig(out=str(out), prompts=[str(prompts)], model="m",
                       settings={"do_sample": True}, against=[str(suite)], batch_size=4,
                       samples=3)  # fmt: skip
    model = Drawn()
    got = run_replay(cfg, model, **QUIET)
    assert len(model.asked) == 18 and model.asked[:4] == [model.asked[0]] * 3 + [model.asked[3]]
    pairs = [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in lines(out)]
    italy, times = "What is the capital of Italy?", "What is 6 times 7?"
    twice = ("Say something twice.", "The capital of Italy is Rome.")  # the same each draw
    assert pairs == [(italy, "Rome."), (italy, "Rome."), (italy, "It is Rome."),
                     (times, "42."), (times, "6 times 7 is 42."), twice, twice, twice]  # fmt: skip
    reasons = [(r["line"], r["reason"]) for r in lines(tmp_path / "drawn.rejects.jsonl")]
    assert (8, f"the same answer as the prompt at {prompts}:3") in reasons
    assert got["samples"] == 3 and got["kept"] == 8
    manifest = json.loads((tmp_path / "drawn.manifest.json").read_text())
    assert manifest["samples"] == 3 and manifest["kinds"] == {"facts": 1, "maths": 2}
    again = Drawn()
    run_replay(cfg, again, **QUIET)
    assert again.asked == []


def test_several_draws_of_a_greedy_preset_are_refused_before_asking(files, tmp_path):
    prompts, suite = files
    cfg = ReplayConfig(out=str(tmp_path / "g.jsonl"), prompts=[str(prompts)], model="m",
                       settings={"do_sample": False}, against=[str(suite)], samples=2)  # fmt: skip
    model = Scripted()
    with pytest.raises(DataError, match="--samples 2 with a greedy preset"):
        run_replay(cfg, model, **QUIET)
    assert model.asked == []


def test_output_over_an_input_is_refused(files):
    prompts, suite = files
    cfg = ReplayConfig(
        out=str(suite), prompts=[str(prompts)], model="m", settings={}, against=[str(suite)]
    )
    with pytest.raises(DataError, match="--out"):
        run_replay(cfg, Scripted(), **QUIET)


def test_a_wrong_answer_to_a_prompt_with_expect_is_not_replayed(tmp_path):
    """The scorer is the evaluation suites' own (the CLI passes it): a small model's
    mistakes, replayed, would teach it those mistakes."""
    from cosmosage.tools.eval.scorers import score

    prompts = tmp_path / "p.yaml"
    prompts.write_text(
        "kinds:\n"
        "  facts:\n"
        "    - {prompt: 'What is the capital of Italy?', expect: [Rome]}\n"  # 3: right
        "    - {prompt: 'What is 6 times 7?', expect: ['42'], score: numeric}\n"  # 4: wrong
        "    - Say something twice.\n"  # 5: no check
    )
    script = {
        "What is the capital of Italy?": ("The capital of Italy is Rome.", True),
        "What is 6 times 7?": ("6 times 7 is 36.", True),
        "Say something twice.": ("Twice, something.", True),
    }
    out = tmp_path / "r.jsonl"
    cfg = ReplayConfig(out=str(out), prompts=[str(prompts)], model="m", settings={})
    got = run_replay(cfg, lambda ts: [script[t] for t in ts], check=score, **QUIET)
    assert [r["messages"][1]["content"] for r in lines(out)] == [
        "The capital of Italy is Rome.",
        "Twice, something.",
    ]
    (reject,) = lines(tmp_path / "r.rejects.jsonl")
    assert reject["line"] == 4 and reject["reason"].startswith("wrong answer: none of the expected")
    assert got["checked"] == 2 and got["kept"] == 2
    assert json.loads((tmp_path / "r.manifest.json").read_text())["checked"] == 2
    # without a scorer (--no-check) the wrong answer is replayed as before
    got = run_replay(
        ReplayConfig(out=str(tmp_path / "all.jsonl"), prompts=[str(prompts)], model="m",
                     settings={}),
        lambda ts: [script[t] for t in ts], **QUIET,
    )  # fmt: skip
    assert got["kept"] == 3 and got["checked"] == 0
    # a scorer the suites do not know, or an empty expectation: nothing is asked
    asked = []
    prompts.write_text("prompts:\n  - {prompt: 'Hi?', expect: [a], score: nearly}\n")
    from cosmosage.tools.eval.scorers import checked_score

    with pytest.raises(DataError, match=f"{prompts}:2: prompt.score: unknown scorer 'nearly'"):
        run_replay(cfg, lambda ts: asked.append(ts), check=checked_score, **QUIET)
    prompts.write_text("prompts:\n  - {prompt: 'Hi?', expect: []}\n")
    with pytest.raises(DataError, match=r"p.yaml:2: prompt.expect: a non-empty list is needed"):
        run_replay(cfg, lambda ts: asked.append(ts), check=checked_score, **QUIET)
    assert asked == []


def test_prompts_read_from_jsonl_chat_records_and_text(tmp_path):
    j = tmp_path / "p.jsonl"
    j.write_text(
        json.dumps({"prompt": "Hi?"})
        + "\n"
        + json.dumps(
            {"conversations": [{"from": "human", "value": "Why?"}, {"from": "gpt", "value": "."}]}
        )
        + "\n"
        + json.dumps({"text": "no prompt"})
        + "\n"
    )
    t = tmp_path / "p.txt"
    t.write_text("# a comment\nFirst?\n\nSecond?\n")
    got = list(read_prompts(j)) + list(read_prompts(t))
    texts = [g.text for g in got if not hasattr(g, "reason")]
    assert texts == ["Hi?", "Why?", "First?", "Second?"]
    assert [g.line for g in got if hasattr(g, "reason")] == [3]
    assert [g.line for g in got if not hasattr(g, "reason")][2:] == [2, 4]


def held_out_questions() -> list[tuple[str, str]]:
    """Every evaluation prompt the project bundles: the suites, and the questions of the
    fact tables (the facts and papers studies build their suites from them)."""
    out = []
    for suite in sorted((ROOT / "samples" / "eval").glob("*.yaml")):
        out.append(str(suite))
    questions = []
    for table in [
        *sorted((ROOT / "samples" / "facts").glob("*.yaml")),
        ROOT / "samples" / "study_papers" / "facts.yaml",
    ]:
        questions += [s for s in record_strings(read_yaml(table)) if s.strip().endswith("?")]
    return out, questions


def test_the_bundled_prompts_are_many_kinds_and_hold_out_every_bundled_suite(tmp_path):
    bundled = ROOT / "samples" / "replay" / "prompts.yaml"
    suites, questions = held_out_questions()
    extra = tmp_path / "questions.yaml"
    extra.write_text(json.dumps({"prompts": [{"prompt": q} for q in questions]}))
    assert len(questions) > 50
    cfg = ReplayConfig(
        out="x", prompts=[str(bundled)], model="m", settings={}, against=[*suites, str(extra)]
    )
    kept, rejects, kinds = select_prompts(cfg)
    assert rejects == [] and len(kept) >= 300 and len(kinds) >= 10
    # the check would see one: a suite prompt slipped in is held out
    (tmp_path / "leak.yaml").write_text("prompts:\n  - " + json.dumps(questions[0]) + "\n")
    cfg.prompts.append(str(tmp_path / "leak.yaml"))
    assert select_prompts(cfg)[1][0].reason.startswith("held out")
    assert Holdout([suites[0]]).items


def test_the_bundled_short_questions_hold_out_every_bundled_suite(tmp_path):
    suites, questions = held_out_questions()
    extra = tmp_path / "questions.yaml"
    extra.write_text(json.dumps({"prompts": [{"prompt": q} for q in questions]}))
    short = ROOT / "samples" / "replay" / "short.yaml"
    cfg = ReplayConfig(
        out="x", prompts=[str(short)], model="m", settings={}, against=[*suites, str(extra)]
    )
    kept, rejects, kinds = select_prompts(cfg)
    assert [r.reason for r in rejects] == [] and len(kept) >= 240 and len(kinds) == 8


@pytest.mark.parametrize("name", ["prompts.yaml", "short.yaml"])
def test_the_bundled_expectations_are_ones_the_suites_scorer_takes(name):
    """Checked answers (`expect:`) in the bundled prompts: each is a valid suite check,
    and the right answer of a few passes it while the base model's known wrong one does
    not."""
    from cosmosage.tools.eval.scorers import check_prompt, score

    prompts = [p for p in read_prompts(ROOT / "samples" / "replay" / name) if p.check]
    assert len(prompts) >= 100
    for p in prompts:
        check_prompt(p.check, f"{p.source}:{p.line}")
    by_text = {p.text: p.check for p in prompts}
    if name == "prompts.yaml":
        assert score("The capital of Italy is Rome.", by_text["What is the capital of Italy?"])[0]
        assert not score("Il Coriobella, Italy.", by_text["What is the capital of Italy?"])[0]
        assert not score("15 + 27 = 32.", by_text["What is 15 plus 27?"])[0]
        assert score("15 + 27 = 42.", by_text["What is 15 plus 27?"])[0]


def test_replay_cli_with_a_real_model_journals_answers_and_says_when_cut_off(
    tiny_model, tmp_path, files
):
    prompts, suite = files
    out = tmp_path / "r.jsonl"
    args = [
        "data",
        "replay",
        "--model",
        str(tiny_model),
        "--prompts",
        str(prompts),
        "--against",
        str(suite),
        "--out",
        str(out),
        "--max-new-tokens",
        "3",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index('{"out"') :].splitlines()[0])
    assert summary["asked"] == 6 and summary["kept"] + summary["rejected"] == 9
    journal = lines(tmp_path / "r.journal.jsonl")
    assert len(journal) == 7 and journal[0]["settings"]["max_new_tokens"] == 3
    # the tiny model never ends an answer within 3 tokens: every answer is cut off
    assert all(e["finished"] is False for e in journal[1:])
    assert summary["kept"] == 0
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "6 of 6 prompts answered by an earlier run" in res.output


def test_batched_answers_are_the_answers_asked_one_at_a_time(tiny_model, tmp_path, files):
    prompts, suite = files
    got = []
    for batch in ("1", "4"):
        out = tmp_path / f"b{batch}.jsonl"
        args = [
            "data",
            "replay",
            "--model",
            str(tiny_model),
            "--prompts",
            str(prompts),
            "--against",
            str(suite),
            "--out",
            str(out),
            "--max-new-tokens",
            "5",
            "--batch-size",
            batch,
        ]
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
        got.append({e["key"]: e["answer"] for e in lines(tmp_path / f"b{batch}.journal.jsonl")[1:]})
    assert got[0] == got[1] and len(got[0]) == 6


def test_ancestral_draws_differ_from_batch_to_batch_and_repeat_with_the_seed(
    tiny_model, tmp_path, files
):
    """The ancestral preset samples the whole distribution (no top-k or top-p); each
    batch has its own draws, so a prompt's three draws are not one draw thrice, and the
    same seed draws the same answers again."""
    from cosmosage.tools.eval.generation import preset

    assert preset("ancestral") == {"name": "ancestral", "max_new_tokens": 48, "do_sample": True,
                                   "temperature": 1.0, "top_p": 1.0, "top_k": 0}  # fmt: skip
    prompts, suite = files
    got = []
    for name in ("a", "b"):
        res = CliRunner().invoke(main, ["data", "replay", "--model", str(tiny_model),
                                        "--prompts", str(prompts), "--against", str(suite),
                                        "--out", str(tmp_path / f"{name}.jsonl"), "--preset",
                                        "ancestral", "--samples", "3", "--max-new-tokens", "6",
                                        "--batch-size", "2"])  # fmt: skip
        assert res.exit_code == 0, res.output
        got.append(lines(tmp_path / f"{name}.journal.jsonl")[1:])
    assert got[0] == got[1] and len(got[0]) == 18
    draws: dict[str, set] = {}
    for e in got[0]:
        draws.setdefault(e["key"].split("#")[0], set()).add(e["answer"])
    assert all(len(d) > 1 for d in draws.values()), draws


def test_rewrites_keep_names_and_numbers_or_the_original_stays(tmp_path):
    from cosmosage.dataprep.synth.rewrite import REWRITE, key_terms, run_rewrite

    src = tmp_path / "qa.jsonl"
    recs = [
        {"messages": [{"role": "user", "content": "Who built the array?"},
                      {"role": "assistant", "content": "It was built by Maren Tollisch in 2031."}]},
        {"conversations": [{"from": "human", "value": "How many voids?"},
                           {"from": "gpt", "value": "The catalogue lists 1146 voids."}]},
        {"messages": [{"role": "user", "content": "Where is it?"},
                      {"role": "assistant", "content": "On the Sennick Salt Flats."}]},
        {"text": "not a chat record"},
    ]  # fmt: skip
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    said = {
        "Who built the array?": ("Maren Tollisch built it, in 2031.", True),  # keeps both
        "How many voids?": ("There are many voids in it.", True),  # loses 1146
        "Where is it?": ("On the Sennick Salt", False),  # cut off
    }

    def answer(texts):
        assert all("A reference answer:" in t for t in texts)
        return [said[t.split("\n\n")[0]] for t in texts]

    out = tmp_path / "own.jsonl"
    cfg = ReplayConfig(out=str(out), prompts=[], model="m", settings={})
    got = run_rewrite(cfg, [str(src)], answer, **QUIET)
    kept = lines(out)
    assert [r["messages"][-1]["content"] for r in kept] == [
        "Maren Tollisch built it, in 2031.",
        "The catalogue lists 1146 voids.",
        "On the Sennick Salt Flats.",
    ]
    assert kept[1]["messages"][0] == {"role": "user", "content": "How many voids?"}
    assert got["rewritten"] == 1 and got["rejected"] == 1
    assert got["kept_original"] == {
        "the rewrite lost a name or number of the original": 1,
        "answer cut off by the token limit (raise --max-new-tokens to keep it)": 1,
    }
    assert key_terms("The Halvard Radio Array observes at 412 MHz. It was built in 2031.") == {
        "Halvard", "Radio", "Array", "412", "MHz", "2031"
    }  # fmt: skip
    assert "{question}" in REWRITE and "{reference}" in REWRITE


def test_rewrite_cli_with_a_real_model(tmp_path, tiny_model):
    src = tmp_path / "qa.jsonl"
    src.write_text(json.dumps({"messages": [{"role": "user", "content": "Q?"},
                                            {"role": "assistant", "content": "A 42."}]}) + "\n")  # fmt: skip
    out = tmp_path / "own.jsonl"
    res = CliRunner().invoke(main, ["data", "replay", "--model", str(tiny_model), "--rewrite", str(src),
                                    "--out", str(out), "--max-new-tokens", "3"])  # fmt: skip
    assert res.exit_code == 0, res.output
    # 3 tokens cannot end an answer: the original is kept, and said so
    assert lines(out)[0]["messages"][1]["content"] == "A 42."
    assert json.loads((tmp_path / "own.manifest.json").read_text())["rewritten"] == 0
    res = CliRunner().invoke(main, ["data", "replay", "--model", str(tiny_model), "--rewrite", str(src),
                                    "--prompts", str(src), "--out", str(out)])  # fmt: skip
    assert res.exit_code == 2 and "give one or the other" in res.output
