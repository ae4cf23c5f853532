"""Evaluation on a real (tiny) model: batched answers equal one-at-a-time generation,
rates by kind and wording, self-consistency fields, reports, comparisons, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from cosmosage.dataprep.io import DataError
from cosmosage.tools.cli.main import main
from cosmosage.tools.eval.compare import compare, compare_markdown
from cosmosage.tools.eval.evaluate import evaluate, rates
from cosmosage.tools.eval.generation import Generator, chat_ids, grid, preset
from cosmosage.tools.eval.report import report_markdown

PROMPTS = [
    {"prompt": "What is the CMB?"},
    {"prompt": "Say hello to the reader of this longer question, please."},
    {"prompt": "Hi", "system": "You are terse."},
]


def test_batched_answers_equal_one_at_a_time_generation(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    expected = []
    for p in PROMPTS:
        ids = torch.tensor([chat_ids(tok, p)])
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
        expected.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    got = Generator(tiny_model).answers(PROMPTS, preset("greedy", max_new_tokens=6), batch_size=3)
    assert [g[0] for g in got] == expected
    assert "You are terse." in tok.decode(chat_ids(tok, PROMPTS[2]))


def test_sampling_gives_n_answers_and_is_seeded(tiny_model):
    gen = Generator(tiny_model)
    a = gen.answers(PROMPTS[:2], preset("creative", max_new_tokens=5), n=3, seed=1)
    b = gen.answers(PROMPTS[:2], preset("creative", max_new_tokens=5), n=3, seed=1)
    assert a == b and [len(x) for x in a] == [3, 3]


def test_presets_and_grids():
    assert preset("greedy")["do_sample"] is False
    assert preset("greedy", temperature=0.5)["do_sample"] is True
    points = grid(preset("sample"), ["temperature=0.2,0.7", "top_p=0.9"])
    assert [p["name"] for p in points] == [
        "sample,temperature=0.2,top_p=0.9",
        "sample,temperature=0.7,top_p=0.9",
    ]
    with pytest.raises(DataError, match="unknown preset"):
        preset("hot")
    with pytest.raises(DataError, match="unknown generation setting"):
        preset("greedy", temprature=1)


def test_rates_by_kind_wording_and_suite():
    rows = [
        {"kind": "domain", "suite": "recall", "wording": "trained", "m_pass": True},
        {"kind": "domain", "suite": "recall", "wording": "held_out", "m_pass": False},
        {"kind": "general", "suite": "general", "m_pass": True},
        {"kind": "general", "suite": "general", "m_pass": None},  # not scored: left out
    ]
    assert rates(rows, "m") == {
        "all": 2 / 3,
        "domain": 0.5,
        "general": 1.0,
        "suite:recall": 0.5,
        "suite:general": 1.0,
        "trained": 1.0,
        "held_out": 0.0,
    }


def test_evaluate_scores_every_model_with_self_consistency(tmp_path, tiny_model):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "prompts:\n"
        "  - {id: a, prompt: 'What is the CMB?', expect: ['zzzz-never']}\n"
        "  - {id: b, prompt: Say hello., expect: ['qqqq-never'], kind: general}\n"
    )
    res = evaluate(
        {"m1": tiny_model, "m2": tiny_model}, [suite], preset("greedy", max_new_tokens=4), samples=3
    )
    assert res["scores"]["m1"]["all"] == 0.0 and res["scores"]["m1"]["general"] == 0.0
    row = res["answers"][0]
    assert len(row["m1_samples"]) == 3 and 0.0 <= row["m1_agreement"] <= 1.0
    assert row["m1_flagged"] == (row["m1_agreement"] < 0.5)
    assert res["consistency"]["answers"] == 4 and res["consistency"]["auroc"] is None
    text = report_markdown(res)
    assert "| m1 |" in text and "### a (domain, contains)" in text and "[fail]" in text


def result(label: str, passes: list[bool]) -> dict:
    return {
        "models": {label: "x"},
        "answers": [
            {"id": f"q{i}", "prompt": f"Q{i}", label: f"ans{i}", f"{label}_pass": p}
            for i, p in enumerate(passes)
        ],
    }


def test_compare_sorts_questions_into_gained_lost_and_still_wrong():
    diff = compare(
        result("base", [False, True, False, True]), result("final", [True, False, False, True])
    )
    assert [q["id"] for q in diff["gained"]] == ["q0"]
    assert [q["id"] for q in diff["lost"]] == ["q1"]
    assert [q["id"] for q in diff["still_wrong"]] == ["q2"]
    assert [q["id"] for q in diff["still_right"]] == ["q3"]
    assert "| 1 | 1 | 1 | 1 |" in compare_markdown(diff)


def test_eval_cli_runs_by_default_and_compares(tmp_path, tiny_model):
    suite = tmp_path / "s.yaml"
    suite.write_text("prompts:\n  - {id: a, prompt: Hello, expect: ['zzzz']}\n")
    out = tmp_path / "ev"
    res = CliRunner().invoke(
        main,
        [
            "eval",
            f"base={tiny_model}",
            str(tiny_model),
            "--suite",
            str(suite),
            "--set",
            "max_new_tokens=3",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores["models"]) == ["base", "tiny-llama"]
    assert (out / "scores.png").stat().st_size > 1000 and (out / "report.md").is_file()
    cmp = CliRunner().invoke(
        main,
        [
            "eval",
            "compare",
            str(out / "scores.json"),
            str(out / "scores.json"),
            "--label-a",
            "base",
        ],
    )
    assert cmp.exit_code == 0 and "# base -> tiny-llama" in cmp.output
    bad = CliRunner().invoke(main, ["eval", "nowhere-model", "--suite", str(suite)])
    assert bad.exit_code == 1 and "nowhere-model: not a model folder" in bad.output
