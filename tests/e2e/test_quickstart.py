"""The quickstart pipeline for real: Axolotl trains the tiny model on the CPU.

Fewer steps than the shipped recipe so the test stays around two minutes; everything
else (builds, checks, training, selection, merge, evaluation, card, registry) is real.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmosage.tools.cli.main import main
from tests.helpers.run_shape import shape

GOLDEN_SHAPE = Path(__file__).resolve().parents[1] / "golden" / "quickstart-tiny.run-shape.json"

pytestmark = pytest.mark.train

FEWER_STEPS = [
    "--set",
    "max_steps=30",
    "--set",
    "eval_steps=15",
    "--set",
    "save_steps=15",
    "--set",
    "recipe.eval.preset.max_new_tokens=8",
]


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory, tiny_model):
    runs = tmp_path_factory.mktemp("runs")
    res = CliRunner().invoke(
        main,
        ["recipe", "run", "quickstart-tiny", "--runs-dir", str(runs), *FEWER_STEPS],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    run_dir = next(runs.glob("quickstart-tiny/*/run.json")).parent
    return runs, run_dir, res.output


def test_the_run_folder_keeps_its_layout(quickstart_run):
    """Every file of the run folder and every key of its JSON files, as recorded: a change
    that moves, renames or drops one shows here (UPDATE_GOLDEN=1 records a new layout)."""
    _, run_dir, _ = quickstart_run
    got = shape(run_dir)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN_SHAPE.write_text(json.dumps(got, indent=1) + "\n")
    assert got == json.loads(GOLDEN_SHAPE.read_text())


def test_quickstart_trains_both_stages_and_loss_falls(quickstart_run):
    _, run_dir, output = quickstart_run
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "complete"
    assert list(record["stages"]) == ["pretrain", "instruct"]
    for key, stage in record["stages"].items():
        m = stage["metrics"]
        assert m["steps"] == 30, key
        assert m["eval_loss_best"] < m["eval_loss_before"], (key, m)
        assert (run_dir / key / "axolotl.yaml").is_file() and (
            run_dir / key / "train.log"
        ).is_file()
        metrics = json.loads((run_dir / key / "metrics.json").read_text())
        assert len(metrics["train_loss"]) > 0 and [e["step"] for e in metrics["eval_loss"]] == [
            0,
            15,
            30,
        ]
    # the instruct stage started from the pretrain stage's selected model
    assert record["stages"]["instruct"]["parent_model"] == record["stages"]["pretrain"]["model"]
    assert "Publishable folder" in output and str(run_dir) in output


def test_merged_model_loads_and_generates(quickstart_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, run_dir, _ = quickstart_run
    model_dir = run_dir / "instruct" / "model"
    assert not (model_dir / "adapter_config.json").exists(), (
        "the adapter is merged into full weights"
    )
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the CMB?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    out = model.generate(
        ids, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id
    )
    assert out.shape[1] == ids.shape[1] + 5
    assert tok.pad_token != tok.eos_token
    base = AutoModelForCausalLM.from_pretrained(run_dir / "pretrain" / "model")
    assert not torch.equal(
        base.model.layers[0].self_attn.q_proj.weight, model.model.layers[0].self_attn.q_proj.weight
    )


def test_eval_card_and_registry(quickstart_run):
    runs, run_dir, _ = quickstart_run
    scores = json.loads((run_dir / "eval" / "scores.json").read_text())
    assert list(scores["scores"]) == ["base", "pretrain", "instruct"]
    assert len(scores["answers"]) >= 10
    assert all(isinstance(a["instruct"], str) for a in scores["answers"])
    for label in scores["scores"]:
        s = scores["scores"][label]
        assert {"all", "domain", "general", "trained", "held_out", "ppl"} <= set(s), label
        assert 0.0 <= s["mc:mc_general"] <= 1.0 and s["ppl"] > 1.0
        # every pass rate has its counts; every tuned model its drift from the base
        assert 0 < scores["counts"][label]["all"][1] <= len(scores["answers"])
        if label != "base":
            assert s["kl"] >= 0.0 and 0.0 <= s["changed"] <= 1.0
    assert "Drift from the base" in (run_dir / "eval" / "report.md").read_text()
    assert [f"{r['before']}->{r['after']}" for r in scores["forgetting"]] == [
        "base->pretrain",
        "pretrain->instruct",
    ]
    assert scores["consistency"]["answers"] > 0
    for png in ("loss.png", "scores.png", "calibration.png"):
        assert (run_dir / "eval" / png).stat().st_size > 5000, png
    report = (run_dir / "eval" / "report.md").read_text()
    assert "## Forgetting" in report and "## Self-consistency" in report
    card = (run_dir / "publish" / "README.md").read_text()
    assert "## Evaluation" in card and "![scores](scores.png)" in card
    assert (run_dir / "publish" / "scores.png").is_file()
    from cosmosage.tools.recipe.render import ROOT

    assert str(ROOT) not in card and str(runs) not in card, "the card names no machine paths"
    import yaml

    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "apache-2.0" and front["pipeline_tag"] == "text-generation"
    assert "## Held-out loss" in card and "quickstart-tiny/pretrain" in card
    assert (run_dir / "publish" / "model.safetensors").is_file()
    reg = [json.loads(x) for x in (runs / "registry.jsonl").read_text().splitlines()]
    assert [r["recipe"] for r in reg] == ["quickstart-tiny/pretrain", "quickstart-tiny/instruct"]
    tree = CliRunner().invoke(
        main, ["runs", "tree", "--runs-dir", str(runs)], catch_exceptions=False
    )
    lines = tree.output.splitlines()
    assert lines[0] == "build/models/tiny-llama"
    assert "quickstart-tiny/pretrain" in lines[1] and "quickstart-tiny/instruct" in lines[2]
    assert lines[2].index("└─") > lines[1].index("└─"), "instruct hangs under pretrain"


def test_resume_skips_finished_stages(quickstart_run, tmp_path):
    runs, run_dir, _ = quickstart_run
    # Copy the run and pretend the instruct stage was interrupted.
    runs2 = tmp_path / "runs"
    shutil.copytree(runs, runs2)
    run2 = runs2 / run_dir.relative_to(runs)
    record = json.loads((run2 / "run.json").read_text())
    record["status"] = "interrupted"
    record["stages"]["pretrain"]["model"] = str(run2 / "pretrain" / "model")
    del record["stages"]["instruct"]
    (run2 / "run.json").write_text(json.dumps(record))
    shutil.rmtree(run2 / "instruct")
    res = CliRunner().invoke(
        main,
        ["recipe", "run", "quickstart-tiny", "--resume", "--runs-dir", str(runs2), *FEWER_STEPS],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "skip   quickstart-tiny/pretrain" in res.output and f"resume {run2}" in res.output
    after = json.loads((run2 / "run.json").read_text())
    assert after["status"] == "complete" and after["stages"]["instruct"]["parent_model"] == str(
        run2 / "pretrain" / "model"
    )
    assert (run2 / "instruct" / "model" / "model.safetensors").is_file()
