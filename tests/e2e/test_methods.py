"""QLoRA and ReLoRA on the CPU with the real Axolotl: each method trains and yields a
loadable model."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cosmosage.tools.cli.main import main

pytestmark = pytest.mark.train


@pytest.mark.parametrize("name", ["tiny/qlora", "tiny/relora"])
def test_method_trains_and_yields_a_model(name, tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM

    res = CliRunner().invoke(
        main, ["recipe", "run", name, "--runs-dir", str(tmp_path)], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    run_dir = next(tmp_path.glob(f"{name}/*/run.json")).parent
    stage = json.loads((run_dir / "run.json").read_text())["stages"][name.split("/")[1]]
    assert stage["metrics"]["eval_loss_best"] < stage["metrics"]["eval_loss_before"]
    model = AutoModelForCausalLM.from_pretrained(stage["model"])
    assert sum(p.numel() for p in model.parameters()) > 100_000
    assert not (run_dir / name.split("/")[1] / "model" / "adapter_config.json").exists()
