"""Schedules against checkpoints and data: ReLoRA's model is the final weights and its
saves must fall on its restarts (each restart writes checkpoint-N/adapter, a folder that
holds nothing else where N is not a save step); a fixed warmup must not take much of the
run the data gives."""

from __future__ import annotations

import json

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


def test_a_warmup_that_takes_much_of_a_short_run_is_flagged(tmp_path):
    from cosmosage.tools.recipe.check import check_warmup

    r = stage("scratch/150m")  # warmup_steps 1000, 16 x 16 x 2048 = 524,288 tokens a step
    assert r.config["warmup_steps"] == 1000
    assert check_warmup(r.config, r.meta, tmp_path) == []  # no data yet: steps unknown
    data = tmp_path / "build" / "data" / "scratch"
    data.mkdir(parents=True)

    def corpus(tokens: int) -> None:
        for tier in ("tier1", "tier2", "tier3"):
            (data / f"{tier}.jsonl").write_text('{"text": "x"}\n')
            (data / f"{tier}.manifest.json").write_text(json.dumps({"tokens": tokens // 3}))

    corpus(1_500_000_000)  # ~2,862 steps: warmup is 35% of the run
    (msg,) = [p.message for p in check_warmup(r.config, r.meta, tmp_path)]
    assert "warmup_steps 1000 is 35% of the ~2,862 steps" in msg and "warmup_ratio" in msg
    corpus(15_000_000_000)  # ten times the data: 3.5%, nothing to say
    assert check_warmup(r.config, r.meta, tmp_path) == []
    r.config.update(max_steps=6, warmup_steps=2)  # a toy run's few warmup steps never matter
    assert check_warmup(r.config, r.meta, tmp_path) == []


def test_a_select_rule_on_relora_fails_the_check():
    from cosmosage.tools.recipe.check import check_select

    r = stage("tiny/relora")
    assert check_select(r) == []
    r.meta["select"] = {"suites": ["samples/eval/general.yaml"], "maximize": "held_out"}
    (msg,) = [p.message for p in check_select(r) if p.severity == "error"]
    assert "cannot choose a ReLoRA checkpoint" in msg
