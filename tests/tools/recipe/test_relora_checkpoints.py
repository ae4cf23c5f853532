"""ReLoRA's checkpoints: its model is the final weights, and its saves must fall on its
restarts (each restart writes checkpoint-N/adapter, a folder that holds nothing else
where N is not a save step)."""

from __future__ import annotations

from cosmosage.tools.paths import ROOT
from cosmosage.tools.recipe.check import check_checkpoints, check_relora
from tests.tools.recipe.test_gpu_defects import found, stage


def test_saves_off_the_restarts_are_flagged_and_the_bundled_recipes_save_on_them():
    for name in ("mistral-7b/relora", "tiny/relora"):
        r = stage(name)
        assert found(check_relora(r.config, r.meta, ROOT), "relora", "warning") == [], name
    r = stage("mistral-7b/relora")
    restart = r.config["jagged_restart_steps"]
    r.config.update(save_steps=None, eval_steps=None, saves_per_epoch=8, evals_per_epoch=8)
    (msg,) = found(check_relora(r.config, r.meta, ROOT), "relora", "warning")
    assert "saves_per_epoch" in msg and f"`save_steps: {restart}`" in msg
    r.config.update(saves_per_epoch=None, evals_per_epoch=None)
    for every in (restart + 50, 2 * restart):  # off the restarts, or every other one
        r.config["save_steps"] = every
        (msg,) = found(check_relora(r.config, r.meta, ROOT), "relora", "warning")
        assert f"save_steps {every}" in msg and "holding only the adapter" in msg
    r.config["save_steps"] = restart // 2  # a divisor: every restart is a save
    assert found(check_relora(r.config, r.meta, ROOT), "relora", "warning") == []


def test_relora_is_not_said_to_keep_a_checkpoint_for_selection():
    r = stage("tiny/relora")
    infos = found(check_relora(r.config, r.meta, ROOT), "relora", "info")
    assert any("the final weights" in m and "not a checkpoint chosen" in m for m in infos)
    assert found(check_checkpoints(r.config), "checkpoints", "info") == []
    lora = stage("tiny/qlora")  # other methods still are
    assert "kept until selection" in found(check_checkpoints(lora.config), "checkpoints", "info")[0]
