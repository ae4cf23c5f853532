"""Multiple-choice scoring: the same figures as lm-evaluation-harness's own command line,
per-question answers that a direct log-likelihood computation reproduces, clear errors."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cosmosage.dataprep.records import DataError
from cosmosage.tools.eval.multiple_choice import STYLES, load_benchmark, run_mc, write_task

ROOT = Path(__file__).resolve().parents[3]
COSMOLOGY = ROOT / "samples" / "eval" / "mc_cosmology.jsonl"
GENERAL = ROOT / "samples" / "eval" / "mc_general.jsonl"
LIMIT = 6


@pytest.fixture(scope="module")
def tiny_results(tiny_model) -> dict[str, dict]:
    """The tiny model on the first questions of the cosmology set, in both styles."""
    return {s: run_mc(tiny_model, COSMOLOGY, style=s, limit=LIMIT, batch_size=4) for s in STYLES}


def test_bundled_sets_are_valid_with_varied_answers():
    for path in (COSMOLOGY, GENERAL):
        questions = load_benchmark(path)
        assert len(questions) >= 20
        assert all(len(q["choices"]) == 4 for q in questions)
        assert {q["answer"] for q in questions} == {0, 1, 2, 3}


def test_results_have_every_field(tiny_results):
    for style, res in tiny_results.items():
        assert res["benchmark"] == "mc_cosmology" and res["style"] == style
        assert res["n"] == LIMIT == len(res["questions"])
        # lm-eval's standard error of a mean of 0/1 scores: sqrt(p (1 - p) / (n - 1))
        for key in ("acc", "acc_norm"):
            p = res[key]
            assert 0.0 <= p <= 1.0
            assert res[f"{key}_stderr"] == pytest.approx((p * (1 - p) / (LIMIT - 1)) ** 0.5)
        assert res["acc"] == pytest.approx(sum(q["correct"] for q in res["questions"]) / LIMIT)
        assert res["acc_norm"] == pytest.approx(
            sum(q["correct_norm"] for q in res["questions"]) / LIMIT
        )
        ids = [json.loads(line)["id"] for line in COSMOLOGY.read_text().splitlines()[:LIMIT]]
        assert [q["id"] for q in res["questions"]] == ids
        for q in res["questions"]:
            assert q["correct"] == (q["predicted"] == q["answer"])
            assert q["correct_norm"] == (q["predicted_norm"] == q["answer"])


def test_accuracy_equals_lm_eval_command_line(tmp_path, tiny_model, tiny_results):
    tasks = tmp_path / "tasks"
    names = {s: write_task(COSMOLOGY, s, tasks) for s in STYLES}
    out = tmp_path / "out"
    lm_eval = Path(sys.executable).with_name("lm_eval")
    cmd = [
        str(lm_eval),
        "--model",
        "hf",
        "--model_args",
        f"pretrained={tiny_model},dtype=float32",
        "--tasks",
        ",".join(names.values()),
        "--include_path",
        str(tasks),
        "--device",
        "cpu",
        "--batch_size",
        "4",
        "--limit",
        str(LIMIT),
        "--output_path",
        str(out),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results_file,) = out.rglob("results_*.json")
    cli = json.loads(results_file.read_text())
    for style, name in names.items():
        theirs, ours = cli["results"][name], tiny_results[style]
        assert cli["n-samples"][name]["effective"] == ours["n"]
        for metric in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr"):
            assert ours[metric] == pytest.approx(theirs[f"{metric},none"], abs=1e-9), (
                style,
                metric,
            )


def direct_loglikelihoods(model, tokenizer, context: str, choices: list[str]) -> list[float]:
    """Sum of the log-probabilities of each choice's tokens after the context (the choice
    follows one space; the pair is tokenized whole and split where the context ends)."""
    import torch

    ctx_ids = tokenizer.encode(context)
    out = []
    for choice in choices:
        whole = tokenizer.encode(context + " " + choice)
        assert whole[: len(ctx_ids)] == ctx_ids
        with torch.no_grad():
            logits = model(torch.tensor([whole])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        out.append(sum(logprobs[i - 1, whole[i]].item() for i in range(len(ctx_ids), len(whole))))
    return out


def test_predictions_match_a_direct_loglikelihood_computation(tiny_model, tiny_results):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    questions = load_benchmark(COSMOLOGY)[:2]
    for style, res in tiny_results.items():
        for q, got in zip(questions, res["questions"], strict=False):
            if style == "options":
                context = f"Question: {q['question']}\nAnswer:"
                choices = q["choices"]
            else:
                listed = "".join(f"\n{'ABCD'[i]}. {c}" for i, c in enumerate(q["choices"]))
                context = f"{q['question']}{listed}\nAnswer:"
                choices = ["A", "B", "C", "D"]
            lls = direct_loglikelihoods(model, tokenizer, context, choices)
            assert got["loglikelihoods"] == pytest.approx(lls, abs=1e-3), (style, q["id"])
            assert got["predicted"] == max(range(4), key=lambda i: lls[i])
            per_char = [ll / len(c) for ll, c in zip(lls, choices, strict=True)]
            assert got["predicted_norm"] == max(range(4), key=lambda i: per_char[i])


def write_lines(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = '{"id": "q1", "question": "Which?", "choices": ["a", "b"], "answer": 1}'


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"id": "q2", "question": "Which?", "choices": ["a", "b"], "answer": 2}', "answer"),
        ('{"id": "q2", "question": "Which?", "choices": ["a", "b"], "answer": "b"}', "answer"),
        ('{"id": "q2", "question": "Which?", "choices": "a or b", "answer": 0}', "choices"),
        ('{"id": "q2", "question": "Which?", "choices": ["a", ""], "answer": 0}', r"choices\[1\]"),
        ('{"id": "q2", "choices": ["a", "b"], "answer": 0}', "question"),
        ('{"id": "q1", "question": "Which?", "choices": ["a", "b"], "answer": 0}', "id"),
        ('{"id": "q2", "question": "Which?", "choices": ["a", "b"], "answer": 0', "invalid JSON"),
    ],
)
def test_a_malformed_line_names_file_line_and_field(tmp_path, tiny_model, line, field):
    path = write_lines(tmp_path, [GOOD, line])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: {field}"):
        run_mc(tiny_model, path)


def test_style_and_limit_are_checked(tiny_model):
    with pytest.raises(ValueError, match="style"):
        run_mc(tiny_model, GENERAL, style="numbers")
    with pytest.raises(ValueError, match="limit"):
        run_mc(tiny_model, GENERAL, limit=0)


@pytest.mark.real_model
def test_smollm2_knows_everyday_facts_better_than_chance(smollm2):
    res = run_mc(smollm2, GENERAL, style="options")
    assert res["n"] == 20
    assert res["acc"] >= 0.8 and res["acc_norm"] >= 0.8
    assert not math.isnan(res["acc_stderr"])


def test_lm_evals_progress_bars_stay_off_the_terminal(tiny_model, capfd):
    """A recipe run's output shows our lines, not lm-eval's and datasets' bars."""
    res = run_mc(tiny_model, GENERAL, limit=2, batch_size=2)
    assert res["n"] == 2
    err = capfd.readouterr().err
    assert "loglikelihood requests" not in err, err
    assert "Generating test split" not in err, err
