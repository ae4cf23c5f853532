"""QLoRA and ReLoRA on the CPU with the real Axolotl: each method trains and yields a
loadable model, and did what sets it apart from plain LoRA (a 4-bit base for QLoRA,
restarts at the configured steps for ReLoRA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cosmosage.tools.cli.main import main

pytestmark = pytest.mark.train


def last_trainer_state(output: Path) -> dict:
    """trainer_state.json of the last checkpoint Axolotl saved in `output`."""
    checkpoints = sorted(output.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints, f"no checkpoint in {output}"
    return json.loads((checkpoints[-1] / "trainer_state.json").read_text())


def check_4bit_base(stage_dir: Path) -> None:
    """The base model was loaded in 4 bits by bitsandbytes: the model config Axolotl saves
    beside the adapter carries the quantization it was loaded with, and Axolotl prepared
    the model for k-bit training."""
    config = json.loads((stage_dir / "output" / "config.json").read_text())
    quant = config.get("quantization_config") or {}
    assert quant.get("quant_method") == "bitsandbytes", config
    assert quant.get("load_in_4bit") is True and quant.get("load_in_8bit") is False, quant
    assert quant.get("bnb_4bit_quant_type") == "nf4", quant
    log = (stage_dir / "train.log").read_text()
    assert "prepare_model_for_kbit_training" in log


def check_restarts(stage_dir: Path) -> None:
    """ReLoRA restarted at every multiple of jagged_restart_steps before the end: the
    learning rate fell to its restart floor at those steps and rose again right after,
    and nowhere else (a cosine schedule without restarts only falls after warm-up); and
    at each of them ReLoRA itself restarted (Axolotl schedules jagged restarts of the
    learning rate without ReLoRA too, so the schedule alone does not show it): it reset
    the optimizer state and counted the restart."""
    config = yaml.safe_load((stage_dir / "axolotl.yaml").read_text())
    assert config.get("relora") is True and "jagged_restart_steps" in config, config
    every, max_steps = config["jagged_restart_steps"], config["max_steps"]
    restarts = list(range(every, max_steps, every))
    assert restarts, config
    lr = {
        h["step"]: h["learning_rate"]
        for h in last_trainer_state(stage_dir / "output")["log_history"]
        if "learning_rate" in h
    }
    assert sorted(lr) == list(range(1, max_steps + 1)), sorted(lr)
    # after the first warm-up (up to the highest rate of the first cycle)
    warm = max(range(1, restarts[0] + 1), key=lambda s: lr[s])
    rises = [s for s in range(warm, max_steps) if lr[s + 1] > lr[s]]
    assert rises == restarts, lr
    peak = config["learning_rate"]
    for s in restarts:
        assert lr[s] < 0.01 * peak < lr[s + 1], (s, lr[s], lr[s + 1])
    log = (stage_dir / "train.log").read_text().splitlines()
    resets = [line for line in log if "Percent of optimizer states zeroed" in line]
    assert len(resets) == len(restarts), resets
    # the last metrics line of the log carries ReLoRA's count of restarts
    counts = [
        line.rsplit("'num_lora_restarts': ", 1)[1].split("}")[0]
        for line in log
        if "'num_lora_restarts': " in line
    ]
    assert counts and int(counts[-1]) == len(restarts), counts[-3:]
    # the stage's model is the final weights, and the run record says so: the final step,
    # with the eval loss measured there (not an earlier checkpoint's, which was not used)
    metrics = json.loads((stage_dir / "metrics.json").read_text())
    final = metrics["best_checkpoint"]
    assert final["step"] == max_steps and final["path"] == str(stage_dir / "output"), final
    evals = {e["step"]: e["eval_loss"] for e in metrics["eval_loss"]}
    assert final["eval_loss"] == evals[max_steps] == metrics["eval_loss_best"]


CHECKS = {"qlora": check_4bit_base, "relora": check_restarts}


@pytest.mark.parametrize("name", ["tiny/qlora", "tiny/relora"])
def test_method_trains_and_yields_a_model(name, tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM

    res = CliRunner().invoke(
        main, ["recipe", "run", name, "--runs-dir", str(tmp_path)], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    run_dir = next(tmp_path.glob(f"{name}/*/run.json")).parent
    method = name.split("/")[1]
    stage = json.loads((run_dir / "run.json").read_text())["stages"][method]
    # it learnt: an eval after the start is below the start (for ReLoRA the stage's model
    # is the final weights, whose eval loss at this toy size can sit just above it)
    curve = json.loads((run_dir / method / "metrics.json").read_text())["eval_loss"]
    assert (
        min(e["eval_loss"] for e in curve if e["step"] > 0) < stage["metrics"]["eval_loss_before"]
    )
    model = AutoModelForCausalLM.from_pretrained(stage["model"])
    assert sum(p.numel() for p in model.parameters()) > 100_000
    assert not (run_dir / method / "model" / "adapter_config.json").exists()
    CHECKS[method](run_dir / method)
