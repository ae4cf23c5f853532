"""Early stopping on the checkpoint rule: Axolotl trains the tiny from-scratch model with
`recipe.select.patience`, each saved checkpoint is scored as it is saved (here by a
scripted metric whose best step is known), training stops once the rule can no longer
improve, and the chosen checkpoint is the rule's, not the last one, asked only once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cosmosage.tools.run.launcher import run_recipe

pytestmark = pytest.mark.train

# the scripted metric: "domain" rises to step 3 and falls after; step 5's is higher
# still but 30 points of general drop put it past the limit
SCORER = """
import json, os
from pathlib import Path

DOMAIN = {1: 0.1, 2: 0.4, 3: 0.7, 4: 0.5, 5: 0.9, 6: 0.3, 7: 0.2, 8: 0.1}
DROP = {5: 0.30}


def score(parent, candidates, rule, root):
    log = Path(os.environ["SCRIPTED_LOG"])
    rows = []
    for step, path in candidates:
        assert Path(path, "config.json").is_file(), path  # a real model folder
        with log.open("a") as fh:
            fh.write(json.dumps(step) + "\\n")
        rows.append({"step": step, "scores": {"domain": DOMAIN[step], "general": 1.0},
                     "counts": {}, "general_drop": DROP.get(step, 0.0), "kl": 0.0})
    return {"domain": 0.0, "general": 1.0}, rows
"""


def test_training_stops_when_the_rule_cannot_improve_and_keeps_its_choice(
    tmp_path, tiny_model, monkeypatch
):
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "scripted_metric.py").write_text(SCORER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "mod"))
    monkeypatch.syspath_prepend(str(tmp_path / "mod"))
    log = tmp_path / "asked.jsonl"
    monkeypatch.setenv("SCRIPTED_LOG", str(log))
    sets = [
        "max_steps=8",
        "save_steps=1",
        "eval_steps=1",
        "save_total_limit=8",
        "recipe.select.maximize=domain",
        "recipe.select.general_drop=0.10",
        "recipe.select.scorer=scripted_metric:score",
        "recipe.select.patience=3",
    ]
    said: list[str] = []
    record = run_recipe("tiny/smoke", sets=sets, runs_dir=tmp_path / "runs", echo=said.append)
    stage = (
        record["stages"]["smoke"]
        if "smoke" in record["stages"]
        else next(iter(record["stages"].values()))
    )
    stage_dir = Path(stage["model"]).parent
    journal = json.loads((stage_dir / "early_stop.json").read_text())
    # best within the limits after step 3; steps 4, 5 (past the limit) and 6 do not beat
    # it, so training stops at step 6 of 8
    assert journal["stopped"] == {"step": 6, "best": 3}
    assert [r["step"] for r in journal["checkpoints"]] == [1, 2, 3, 4, 5, 6]
    assert stage["metrics"]["steps"] == 6
    assert stage["best_checkpoint"]["step"] == 3 and stage["best_checkpoint"]["within_limits"]
    # every checkpoint asked once, during training; the choice after it asked nothing
    assert [json.loads(x) for x in log.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert json.loads((stage_dir / "select.json").read_text())["chosen"] == 3
    assert any("already asked during training" in s for s in said)
    cfg = yaml.safe_load((stage_dir / "axolotl.yaml").read_text())
    assert "cosmosage.tools.run.early_stop.EarlyStopOnRule" in cfg["plugins"]
