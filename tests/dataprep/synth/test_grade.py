"""Grading against canned judges: thresholds, grades beside records, calibration, two
judges, resume, and the kept records feeding a mix and a recipe."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.synth.generate import SynthConfig, run_synth
from cosmosage.dataprep.synth.grade import GradeConfig, agreement, distribution, run_grade
from cosmosage.dataprep.synth.llm import Endpoint, RetryPolicy
from cosmosage.tools.cli.main import main
from tests.helpers.scripted_server import (
    Reply,
    ScriptedServer,
    completion,
    digest,
    grade_reply,
    last_user,
    qa_reply,
)

ROOT = Path(__file__).resolve().parents[3]
QUIET = {"echo": lambda m: None}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    """Synthetic records (two per chunk) over ten small chunks, made through a canned server."""
    d = tmp_path_factory.mktemp("qa")
    chunks = d / "chunks.jsonl"
    chunks.write_text(
        "".join(
            json.dumps(
                {
                    "text": f"Passage {i}: the sound horizon is about {140 + i} Mpc.",
                    "doc_id": f"doc{i % 3}",
                    "chunk": i,
                    "chunk_sha": f"sha{i:04d}",
                }
            )
            + "\n"
            for i in range(10)
        )
    )
    with ScriptedServer(qa_reply) as s:
        run_synth(
            SynthConfig(
                input=str(chunks),
                out=str(d / "qa.jsonl"),
                endpoint=Endpoint(s.base_url, "writer"),
                concurrency=4,
            ),
            **QUIET,
        )
    return d / "qa.jsonl"


def score_of(request: dict) -> int:
    return json.loads(grade_reply(request, 0).body["choices"][0]["message"]["content"])["overall"]


def test_one_judge_keeps_at_threshold_and_loses_nothing(qa_file, tmp_path):
    out = tmp_path / "graded.jsonl"
    with ScriptedServer(grade_reply) as s:
        res = run_grade(
            GradeConfig(
                input=str(qa_file),
                out=str(out),
                judges=[Endpoint(s.base_url, "judge")],
                threshold=85,
                spot_check=5,
            ),
            **QUIET,
        )
        scores = [score_of(r["body"]) for r in s.requests]
    assert res["records"] == 20 and res["graded"] == 20 and len(s.requests) == 20
    kept, rejects = lines(out), lines(tmp_path / "graded.rejects.jsonl")
    assert len(kept) == sum(x >= 85 for x in scores) and len(kept) + len(rejects) == 20
    assert all(r["grade"]["score"] >= 85 and r["messages"][-1]["role"] == "assistant" for r in kept)
    assert all(
        r["reason"].startswith("below threshold: score") and r["record"]["grade"]["score"] < 85
        for r in rejects
    )
    judge = kept[0]["grade"]["judges"][0] if kept else rejects[0]["record"]["grade"]["judges"][0]
    assert set(judge["scores"]) == {"correctness", "clarity", "pertinence", "overall"} and judge[
        "critique"
    ].startswith("scripted critique")
    assert judge["model"] == "judge" and judge["prompt_version"] == "1"
    grades = lines(tmp_path / "graded.grades.jsonl")
    assert len(grades) == 20 and sum(g["kept"] for g in grades) == len(kept)
    cal = json.loads((tmp_path / "graded.calibration.json").read_text())
    assert cal["combined"]["n"] == 20 and sum(cal["combined"]["histogram"].values()) == 20
    assert sorted(scores) == sorted(g["score"] for g in grades)
    spot = (tmp_path / "graded.spotcheck.md").read_text()
    assert spot.count("Verdict: [ ] agree") == 5 and "**Passage**" in spot
    manifest = json.loads((tmp_path / "graded.manifest.json").read_text())
    assert manifest["kept"] == len(kept) and manifest["dropped"] == {
        "below threshold": len(rejects)
    }
    assert manifest["inputs"][1]["role"] == "source chunks"  # found through the synth manifest
    # The judge saw the source passage, the question and the answer.
    prompt = s.requests[0]["body"]["messages"][-1]["content"]
    assert (
        "Passage" in prompt
        and "sound horizon" in prompt
        and "Question:" in prompt
        and "Answer:" in prompt
    )


def test_two_judges_agreement_and_min(qa_file, tmp_path):
    def harsh(request, n):
        score = max(0, score_of(request) - 15)
        return Reply(body=completion(json.dumps({"overall": score, "critique": "harsh"})))

    out = tmp_path / "g2.jsonl"
    said = []
    with ScriptedServer(grade_reply) as a, ScriptedServer(harsh) as b:
        res = run_grade(
            GradeConfig(
                input=str(qa_file),
                out=str(out),
                judges=[Endpoint(a.base_url, "kind"), Endpoint(b.base_url, "harsh")],
                threshold=70,
            ),
            echo=said.append,
        )
    assert said[0].startswith("combined: n=20 mean") and said[1].startswith("kind: n=20")
    assert said[2].startswith("harsh: n=20") and said[3].startswith(
        "agreement on 20 records: pearson 1.0, mean |diff| 15"
    )
    assert len(a.requests) == len(b.requests) == 20
    ag = res["agreement"]
    assert ag["n"] == 20 and ag["mean_abs_diff"] == 15 and ag["pearson"] == 1.0
    for r in lines(out):
        overall = [j["overall"] for j in r["grade"]["judges"]]
        assert r["grade"]["score"] == min(overall) >= 70 and r["grade"]["combine"] == "min"


def test_calibration_helpers():
    d = distribution([95, 91, 40, 88.5], 90)
    assert (
        d["n"] == 4
        and d["at_or_above_threshold"] == 2
        and d["histogram"]["90-100"] == 2
        and d["histogram"]["40-49"] == 1
    )
    # Keep at 90: a keeps 1 and 3, b keeps 1. Observed agreement 3/4; chance agreement
    # 0.5 * 0.25 + 0.5 * 0.75 = 0.5; kappa = (0.75 - 0.5) / (1 - 0.5) = 0.5.
    a = agreement([95, 80, 92, 60], [93, 85, 70, 65], 90)
    assert a["keep_decision_agreement"] == 0.75 and a["mean_abs_diff"] == 8.5
    assert a["cohen_kappa_keep"] == pytest.approx(0.5, abs=1e-9)
    assert distribution([], 90) == {"n": 0} and agreement([], [], 90) == {"n": 0}


def judged(both: int, a_only: int, b_only: int, neither: int) -> tuple[list[int], list[int]]:
    """Two judges' scores that give this 2x2 keep/drop table at threshold 90."""
    cells = [(95, 96)] * both + [(95, 40)] * a_only + [(40, 95)] * b_only + [(40, 41)] * neither
    return [x for x, _ in cells], [y for _, y in cells]


@pytest.mark.parametrize(
    "table, observed, kappa",
    [
        # 50 records: po = (20 + 15) / 50 = 0.7; a keeps 25/50 = 0.5, b keeps 30/50 = 0.6;
        # pe = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
        ((20, 5, 10, 15), 0.7, 0.4),
        # 10 records: po = 8/10; both keep 5/10, pe = 0.5; kappa = (0.8 - 0.5) / 0.5 = 0.6.
        ((4, 1, 1, 4), 0.8, 0.6),
        # 4 records: po = 2/4; a keeps 1/4, b keeps 3/4; pe = 3/16 + 3/16 = 3/8;
        # kappa = (1/2 - 3/8) / (1 - 3/8) = (1/8) / (5/8) = 0.2.
        ((1, 0, 2, 1), 0.5, 0.2),
        # Perfect agreement with both decisions present: po = 1, pe = (3*3 + 5*5)/64; kappa = 1.
        ((3, 0, 0, 5), 1.0, 1.0),
        # Chance level: a keeps 6/8 = 0.75, b keeps 4/8 = 0.5, independently of each other:
        # po = (3 + 1) / 8 = 0.5 = 0.75 * 0.5 + 0.25 * 0.5 = pe; kappa = 0.
        ((3, 3, 1, 1), 0.5, 0.0),
        # Always opposite: po = 0, pe = 0.5; kappa = (0 - 0.5) / 0.5 = -1.
        ((0, 2, 2, 0), 0.0, -1.0),
    ],
)
def test_cohen_kappa_of_known_tables(table, observed, kappa):
    a, b = judged(*table)
    ag = agreement(a, b, 90)
    assert ag["n"] == sum(table)
    assert ag["keep_decision_agreement"] == pytest.approx(observed, abs=1e-9)
    assert ag["cohen_kappa_keep"] == pytest.approx(kappa, abs=1e-9)


def test_cohen_kappa_is_undefined_when_chance_agreement_is_certain():
    a, b = judged(4, 0, 0, 0)  # both keep everything: pe = 1, kappa divides by zero
    ag = agreement(a, b, 90)
    assert ag["keep_decision_agreement"] == 1.0 and ag["cohen_kappa_keep"] is None


def test_unusable_judges_and_missing_chunks_are_rejected_with_reasons(qa_file, tmp_path):
    recs = lines(qa_file)
    recs.append(
        {
            "messages": [
                {"role": "user", "content": "Orphan?"},
                {"role": "assistant", "content": "Yes."},
            ],
            "source": {"chunk_sha": "nope"},
        }
    )
    recs.append({"messages": [{"role": "assistant", "content": "no question"}]})
    bad_in = tmp_path / "in.jsonl"
    bad_in.write_text("".join(json.dumps(r) + "\n" for r in recs))

    def flaky(request, n):
        if "Passage 3:" in last_user(request):
            return Reply(body=completion("I would rate this highly."))
        if "Passage 4:" in last_user(request):
            return Reply(body=completion('{"overall": 250}'))
        return grade_reply(request, n)

    with ScriptedServer(flaky) as s:
        res = run_grade(
            GradeConfig(
                input=str(bad_in),
                out=str(tmp_path / "g.jsonl"),
                chunks=str(qa_file.parent / "chunks.jsonl"),
                judges=[Endpoint(s.base_url, "j")],
                threshold=0,
            ),
            **QUIET,
        )
    reasons = [r["reason"] for r in lines(tmp_path / "g.rejects.jsonl")]
    assert res["kept"] == 16 and len(reasons) == 6
    assert sum(r.startswith("not graded: j: judge output unusable: no JSON") for r in reasons) == 2
    assert (
        sum(r.startswith("not graded: j: judge output unusable: bad score") for r in reasons) == 2
    )
    assert any(r.startswith("no source chunk") for r in reasons) and any(
        r.startswith("not gradable") for r in reasons
    )


def test_grade_resumes_without_regrading(qa_file, tmp_path):
    out = tmp_path / "g.jsonl"
    with ScriptedServer(grade_reply) as s:
        cfg = GradeConfig(
            input=str(qa_file),
            out=str(out),
            judges=[Endpoint(s.base_url, "j")],
            retry=RetryPolicy(retries=0),
        )
        run_grade(cfg, **QUIET)
        first = out.read_text()
        res = run_grade(cfg, **QUIET)
    assert (
        len(s.requests) == 20
        and res["requests"] == 0
        and res["resumed"] == 20
        and out.read_text() == first
    )


def test_sampling_seed_goes_to_the_judge_and_spot_check_seed_picks_the_sample(qa_file, tmp_path):
    def grade(out: Path, *more: str):
        return CliRunner().invoke(
            main,
            ["data", "grade", "--input", str(qa_file), "--out", str(out),
             "--base-url", s.base_url, "--model", "j", "--spot-check", "4", *more],
        )  # fmt: skip

    def spot_ids(out: Path) -> list[str]:
        text = out.with_name(out.stem + ".spotcheck.md").read_text()
        return [x.split("`")[1] for x in text.splitlines() if x.startswith("## ")]

    with ScriptedServer(grade_reply) as s:
        picked = {}
        for seed in (3, 4):
            out = tmp_path / f"g{seed}.jsonl"
            r = grade(out, "--sampling-seed", "11", "--spot-check-seed", str(seed))
            assert r.exit_code == 0, r.output
            picked[seed] = spot_ids(out)
        old = grade(tmp_path / "old.jsonl", "--seed", "11")
    assert len(s.requests) == 40 and {x["body"]["seed"] for x in s.requests} == {11}
    manifest = json.loads((tmp_path / "g3.manifest.json").read_text())
    assert manifest["sampling"]["seed"] == 11
    graded = [g for g in lines(tmp_path / "g3.grades.jsonl") if g["score"] is not None]
    for seed, ids in picked.items():
        assert ids == [g["id"] for g in random.Random(seed).sample(graded, 4)]
    assert picked[3] != picked[4]
    assert old.exit_code == 2 and "No such option '--seed'" in old.output


def test_graded_records_feed_a_mix_and_a_recipe(qa_file, tmp_path, tiny_tokenizer):
    from cosmosage.dataprep.chat.mix import build_mix, parse_spec
    from cosmosage.tools.recipe.check import check_rendered
    from cosmosage.tools.recipe.render import render

    graded = tmp_path / "graded.jsonl"
    with ScriptedServer(grade_reply) as s:
        r = CliRunner().invoke(
            main,
            [
                "data",
                "grade",
                "--input",
                str(qa_file),
                "--out",
                str(graded),
                "--base-url",
                s.base_url,
                "--model",
                "j",
                "--threshold",
                "75",
            ],
        )
    assert r.exit_code == 0, r.output
    n_kept = json.loads(r.output.strip().splitlines()[-1])["kept"]
    assert n_kept > 0
    spec = {
        "seed": 0,
        "out": str(tmp_path / "mix.jsonl"),
        "sources": [
            {"name": "synthetic", "path": str(graded), "count": n_kept},
            {
                "name": "general",
                "path": str(ROOT / "samples" / "general" / "chat.jsonl"),
                "count": 5,
            },
        ],
    }
    build_mix(parse_spec(spec))
    mixed = lines(tmp_path / "mix.jsonl")
    graded_msgs = {json.dumps(x["messages"]) for x in lines(graded)}
    assert sum(json.dumps(m["messages"]) in graded_msgs for m in mixed) == n_kept
    # What Axolotl's `type: chat_template` with the tokenizer's template does to each record.
    for m in mixed:
        text = tiny_tokenizer.apply_chat_template(m["messages"], tokenize=False)
        assert m["messages"][-1]["content"] in text
    rendered = render("quickstart-tiny/instruct")
    data = {
        "path": str(tmp_path / "mix.jsonl"),
        "ds_type": "json",
        "type": "chat_template",
        "field_messages": "messages",
    }
    rendered.config["datasets"] = [data]
    rendered.config["test_datasets"] = [{**data, "split": "train"}]
    rendered.meta.pop("builds", None)
    problems = [p for p in check_rendered(rendered, schema=False) if p.severity == "error"]
    assert problems == []


def test_small_judge_writes_score_lines(qa_file, tmp_path):
    """`grade_small` asks for `Score:` and `Critique:` lines; the score is the overall."""

    def reply(request: dict, n: int) -> Reply:
        score = int(digest(last_user(request)), 16) % 101
        return Reply(body=completion(f"Score: {score}\nCritique: checked line {score}."))

    with ScriptedServer(reply) as s:
        res = run_grade(
            GradeConfig(
                input=str(qa_file),
                out=str(tmp_path / "g.jsonl"),
                judges=[Endpoint(s.base_url, "judge")],
                prompt="grade_small",
                threshold=50,
            ),
            **QUIET,
        )
    assert s.requests[0]["body"]["max_tokens"] == 64
    grades = [json.loads(x) for x in (tmp_path / "g.grades.jsonl").read_text().splitlines()]
    assert len(grades) == res["records"] == res["graded"] > 0
    for g in grades:
        assert g["judges"][0]["critique"] == f"checked line {int(g['score'])}."
        assert g["kept"] == (g["score"] >= 50)
    assert res["kept"] == sum(g["kept"] for g in grades)
