"""`data questions`: a model writes a question for each blank of `data cloze`; questions
that give their answer away, wander off the sentence or copy an evaluation prompt are
refused; the round trip refuses questions that lead elsewhere; kept records answer with
the paper's sentence; a second run asks nothing again; `--serve` runs a real server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.records import DataError
from cosmosage.dataprep.synth.llm import Endpoint, RetryPolicy
from cosmosage.dataprep.synth.questions import (
    QuestionHoldout,
    QuestionsConfig,
    first_question,
    gives_away,
    names_span,
    question_problem,
    run_questions,
    shown_examples,
)
from cosmosage.tools.cli.main import main
from tests.helpers.scripted_server import Reply, ScriptedServer, completion, last_user

ROOT = Path(__file__).resolve().parents[3]
QUIET = {"echo": lambda m: None}

SITE = "The Halvard Radio Array stands on the Sennick Salt Flats, where the air is dry."
YEAR = "The Halvard Radio Array recorded its first visibilities in 2033."
CAMERA = (
    "The wide-field camera of the Ostrel Cluster Survey, known as Corvellum, has sixteen detectors."
)


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def blanks(path: Path) -> Path:
    """A cloze file: three blanks, one of them in two wordings (one blank, asked once)."""
    rows = [
        {"document": "halvard.md", "sentence": SITE, "span": "Sennick Salt Flats", "variant": 0},
        {"document": "halvard.md", "sentence": SITE, "span": "Sennick Salt Flats", "variant": 1},
        {"document": "halvard.md", "sentence": YEAR, "span": "2033", "variant": 0},
        {"document": "ostrel.md", "sentence": CAMERA, "span": "Corvellum", "variant": 0},
        {"document": "ostrel.md", "messages": []},  # line 5: no sentence
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# what the scripted writer answers, by span and by the worked example shown (k)
WRITTEN = {
    ("Sennick Salt Flats", 0): "Question: Which salt flat is the site of the Halvard Radio Array?",
    ("Sennick Salt Flats", 1): "Where does the Halvard Radio Array stand?",  # copies the suite
    ("2033", 0): "In what year did the Halvard Radio Array record its first visibilities in 2033?",
    ("2033", 1): "When did the Halvard Radio Array record its first visibilities?",
    ("Corvellum", 0): "What is the name of the camera of the Ostrel Cluster Survey?",
    ("Corvellum", 1): "What is the colour of a banana",
}
# what the scripted reader answers, asked back: the camera question leads elsewhere
READ = {
    "Which salt flat is the site of the Halvard Radio Array?": "the Sennick Salt Flats",
    "When did the Halvard Radio Array record its first visibilities?": "In 2033.",
    "What is the name of the camera of the Ostrel Cluster Survey?": "sixteen detectors",
}


def scripted(request: dict, n: int) -> Reply:
    text = last_user(request)
    if "Write one question" in text:
        span = re.search(r"^Answer: (.*)$", text, re.M).group(1)
        shown = [m["content"] for m in request["messages"] if m["role"] == "assistant"]
        k = 0 if "Kettering" in request["messages"][1]["content"] else 1
        assert len(shown) == 1  # one worked example per request
        return Reply(body=completion(WRITTEN[(span, k)]))
    question = re.search(r"^Question: (.*)$", text, re.M).group(1)
    return Reply(body=completion(READ.get(question, "I do not know.")))


@pytest.fixture
def suite(tmp_path) -> Path:
    path = tmp_path / "closed_book.yaml"
    path.write_text(
        "prompts:\n  - {id: a, prompt: 'Where does the Halvard Radio Array stand?', expect: [Sennick]}\n"
    )
    return path


def config(s: ScriptedServer, tmp_path: Path, suite: Path, **kw) -> QuestionsConfig:
    return QuestionsConfig(
        input=str(blanks(tmp_path / "blanks.jsonl")),
        out=str(tmp_path / "questions.jsonl"),
        endpoint=Endpoint(s.base_url, "writer"),
        against=[str(suite)],
        retry=RetryPolicy(retries=1, base=0.01, cap=0.02),
        **kw,
    )


def test_questions_are_refused_for_what_they_are_and_kept_ones_answer_with_the_sentence(
    tmp_path, suite
):
    with ScriptedServer(scripted) as s:
        res = run_questions(config(s, tmp_path, suite), **QUIET)
    kept = lines(tmp_path / "questions.jsonl")
    asked = {r["messages"][0]["content"]: r for r in kept}
    assert set(asked) == {
        "Which salt flat is the site of the Halvard Radio Array?",
        "When did the Halvard Radio Array record its first visibilities?",
    }
    for r in asked.values():
        assert r["messages"][1] == {"role": "assistant", "content": r["sentence"]}
        assert r["messages"][0]["role"] == "user" and r["round_trip"]
    assert (
        asked["Which salt flat is the site of the Halvard Radio Array?"]["span"]
        == "Sennick Salt Flats"
    )
    # step 1: each refusal with its reason and the question
    written = {
        r["record"]["question"]: r["reason"]
        for r in lines(tmp_path / "questions.candidates.rejects.jsonl")
        if "question" in r["record"]
    }
    assert written["Where does the Halvard Radio Array stand?"].startswith(
        "held out: copies closed_book.yaml"
    )
    assert written[WRITTEN[("2033", 0)]].startswith("gives the answer away")
    assert written["What is the colour of a banana"].startswith("not a question")
    bad_line = [r for r in lines(tmp_path / "questions.candidates.rejects.jsonl") if r["line"] == 5]
    assert bad_line and "no 'sentence'" in bad_line[0]["reason"]
    # step 2: the camera question is answered with something else than Corvellum
    trip = lines(tmp_path / "questions.rejects.jsonl")
    assert [r["record"]["question"] for r in trip] == [WRITTEN[("Corvellum", 0)]]
    assert (
        trip[0]["reason"].startswith("round trip")
        and trip[0]["record"]["answered"] == "sixteen detectors"
    )
    assert res["spans"] == 3 and res["asked"] == 6 and res["written"] == 3 and res["records"] == 2
    assert res["spans_with_questions"] == 2 and res["requests"] == 6 + 3
    manifest = json.loads((tmp_path / "questions.manifest.json").read_text())
    assert manifest["kept"] == 2 and manifest["step"] == "round-trip"


def test_a_second_run_asks_nothing_and_writes_the_same(tmp_path, suite):
    with ScriptedServer(scripted) as s:
        run_questions(config(s, tmp_path, suite), **QUIET)
        first = (tmp_path / "questions.jsonl").read_text()
        s.requests.clear()
        res = run_questions(config(s, tmp_path, suite), **QUIET)
        assert s.requests == [] and res["requests"] == 0 and res["resumed"] == 6 + 3
    assert (tmp_path / "questions.jsonl").read_text() == first


def test_without_round_trip_the_written_questions_are_the_output(tmp_path, suite):
    with ScriptedServer(scripted) as s:
        res = run_questions(config(s, tmp_path, suite, round_trip=False, answer="span"), **QUIET)
    kept = lines(tmp_path / "questions.jsonl")
    assert res["records"] == 3 and len(s.requests) == 6
    assert {r["messages"][1]["content"] for r in kept} == {
        "Sennick Salt Flats",
        "2033",
        "Corvellum",
    }
    assert not (tmp_path / "questions.candidates.jsonl").exists()


def test_give_away_round_trip_and_form_rules():
    assert (
        gives_away("Which salt flat does the array stand on?", "Sennick Salt Flats", SITE) is False
    )
    assert gives_away("Does the array stand on the Sennick flats?", "Sennick Salt Flats", SITE)
    assert gives_away("What happened in 2033?", "2033", YEAR)
    # a name of the span that the sentence also holds outside it tells nothing
    sentence = "The Halvard Radio Array was built by Halvard Engineering."
    assert not gives_away("Who built the Halvard Radio Array?", "Halvard Engineering", sentence)
    assert gives_away(
        "Who built the array for Halvard Engineering?", "Halvard Engineering", sentence
    )
    assert names_span("In 2033.", "2033", YEAR) and not names_span("In 2032.", "2033", YEAR)
    assert names_span("the sennick salt flats", "Sennick Salt Flats", SITE)
    assert first_question('1. Question: "Where is it?"\nAnswer: there') == "Where is it?"
    assert question_problem("Where is it", "2033", YEAR).startswith("not a question")
    assert question_problem("What is a banana?", "2033", YEAR).startswith("not about the sentence")
    assert question_problem(" ".join(["word"] * 31) + "?", "2033", YEAR).startswith("too long")
    assert (
        question_problem("When did the array record its first visibilities?", "2033", YEAR) is None
    )


def test_holdout_refuses_copied_wordings_not_questions_about_the_same_subject(tmp_path, suite):
    h = QuestionHoldout([str(suite)])
    assert h.hit("Where does the Halvard Radio Array stand today?")  # the suite's wording
    assert h.hit("where does the halvard radio array stand") is not None
    assert h.hit("What is the size of the Halvard Radio Array?") is None


def test_input_without_blanks_and_bad_counts_are_clear_errors(tmp_path, suite):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"messages": []}) + "\n")
    cfg = QuestionsConfig(
        input=str(empty),
        out=str(tmp_path / "q.jsonl"),
        endpoint=Endpoint("http://127.0.0.1:9/v1", "m"),
    )
    with pytest.raises(DataError, match="no blanks"):
        run_questions(cfg, **QUIET)
    cfg.questions = 0
    with pytest.raises(DataError, match="--questions"):
        run_questions(cfg, **QUIET)


def test_cli_needs_one_server(tmp_path):
    path = blanks(tmp_path / "blanks.jsonl")
    r = CliRunner().invoke(
        main, ["data", "questions", "--input", str(path), "--out", str(tmp_path / "q.jsonl")]
    )
    assert r.exit_code == 2 and "--serve MODEL_DIR" in r.output
    r = CliRunner().invoke(
        main,
        ["data", "questions", "--input", str(path), "--out", str(tmp_path / "q.jsonl"),
         "--serve", str(tmp_path), "--base-url", "http://127.0.0.1:9/v1"],
    )  # fmt: skip
    assert r.exit_code == 2 and "leave out --base-url" in r.output


@pytest.mark.server
@pytest.mark.real_model
def test_serve_writes_checked_questions_with_the_real_model(smollm2, tmp_path):
    """`--serve` starts `transformers serve` on SmolLM2-135M-Instruct for the run; on blanks
    where the measured run wrote a question, every kept question passes the rules and
    answers with its sentence."""
    rows = [
        {"document": "halvard.md", "sentence": SITE, "span": "Sennick Salt Flats"},
        {"document": "ostrel.md", "sentence": CAMERA, "span": "Corvellum"},
    ]
    path = tmp_path / "blanks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "q.jsonl"
    r = CliRunner().invoke(
        main,
        ["data", "questions", "--input", str(path), "--out", str(out), "--serve", str(smollm2),
         "--questions", "3"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["asked"] == 6 and summary["requests"] >= 6
    kept = lines(out)
    assert kept, (tmp_path / "q.candidates.rejects.jsonl").read_text()
    for rec in kept:
        q = rec["messages"][0]["content"]
        assert question_problem(q, rec["span"], rec["sentence"]) is None
        assert rec["messages"][1]["content"] == rec["sentence"]
        assert names_span(rec["round_trip"], rec["span"], rec["sentence"])
    manifest = json.loads((tmp_path / "q.candidates.manifest.json").read_text())
    assert manifest["generator"]["model"] == str(smollm2.resolve())


def test_candidates_past_the_examples_show_pairs_of_them(tmp_path, suite):
    def respond(request: dict, n: int) -> Reply:
        if "Write one question" in last_user(request):
            return Reply(body=completion(f"Which salt flat holds array number {n}?"))
        return Reply(body=completion("Sennick Salt Flats"))

    with ScriptedServer(respond) as s:
        run_questions(config(s, tmp_path, suite, questions=8, round_trip=False), **QUIET)
        written = [r["body"] for r in s.requests]
    site = [b for b in written if "Sennick" in last_user(b)]
    shown = sorted(
        tuple(m["content"] for m in b["messages"] if m["role"] == "assistant") for b in site
    )
    assert len(site) == 8 and len(set(shown)) == 8  # every candidate saw other examples
    assert sorted(len(x) for x in shown) == [1] * 6 + [2, 2]
    assert shown_examples(6, 6) == (0, 1) and shown_examples(7, 6) == (0, 2)
    assert shown_examples(6 + 15, 6) == (0, 1)
