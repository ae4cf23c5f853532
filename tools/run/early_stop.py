"""Early stopping on the checkpoint rule (`recipe.select.patience`): an Axolotl plugin.

Axolotl's `early_stopping_patience` watches the eval loss, which on the training facts
falls to the end while forgetting grows. With `patience` in `recipe.select`, `recipe run`
adds this plugin to the stage's Axolotl config and points it at `<stage>/early_stop.json`
(through COSMOSAGE_EARLY_STOP). Each time the trainer saves a checkpoint, the checkpoint
is asked the rule's suites (or scored by its `scorer`) exactly as `recipe.select` asks it
after training, the row is added to that file, and the rule picks the best so far
(tools/run/select.py: choose). Once `patience` checkpoints saved after the best have not
beaten it, training stops. The choice after training reuses the rows, so no checkpoint is
asked twice.

Runs as one process only (a multi-GPU stage would ask on every rank); `recipe check`
says so. The checkpoint is asked from disk, beside the model being trained: on a GPU,
room for two more copies of the model is needed (parent and candidate).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

from cosmosage.dataprep.io import write_json
from cosmosage.tools.paths import StageFolder
from cosmosage.tools.run.select import candidate_model, choose, score_checkpoints

ENV = "COSMOSAGE_EARLY_STOP"
PLUGIN = "cosmosage.tools.run.early_stop.EarlyStopOnRule"


def write_spec(stage_dir: Path, rule: dict, cfg: dict, root: Path) -> Path:
    """The file the plugin reads and fills: the rule, the parent, where to find things."""
    path = StageFolder(stage_dir).early_stop
    write_json(
        path,
        {
            "rule": rule,
            "base_model": cfg["base_model"],
            "root": str(root),
            "parent": {},
            "checkpoints": [],
            "stopped": None,
        },
    )
    return path


def should_stop(rows: list[dict], rule: dict) -> tuple[bool, dict]:
    """(stop now?, the best row so far): stop once `patience` rows after the best exist."""
    best, _ = choose(rows, rule)
    later = [r for r in rows if r["step"] > best["step"]]
    return len(later) >= int(rule["patience"]), best


class RuleCallback(TrainerCallback):
    """Asks each saved checkpoint the rule and stops training when it cannot improve."""

    def __init__(self, spec_path: Path):
        self.path = Path(spec_path)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return control
        doc = json.loads(self.path.read_text())
        rule, stage_dir = doc["rule"], self.path.parent
        step = int(state.global_step)
        ckpt = Path(args.output_dir) / f"checkpoint-{step}"
        if not ckpt.is_dir() or any(r["step"] == step for r in doc["checkpoints"]):
            return control
        work = stage_dir / "early_stop" / f"step-{step}"
        try:
            model = candidate_model({"base_model": doc["base_model"]}, ckpt, work, stage_dir)
            base, rows = score_checkpoints(
                doc["base_model"], [(step, model)], rule, Path(doc["root"])
            )
        finally:
            shutil.rmtree(stage_dir / "early_stop", ignore_errors=True)
        doc["parent"] = base
        doc["checkpoints"].append(rows[0])
        stop, best = should_stop(doc["checkpoints"], rule)
        key = rule["maximize"]
        row = rows[0]
        print(
            f"early stop: step {step}: {key} {row['scores'].get(key, 0):.0%}, general drop "
            f"{(row.get('general_drop') or 0) * 100:+.0f} pts, KL {row.get('kl', 0):.4f}; "
            f"best so far step {best['step']}",
            flush=True,
        )
        if stop:
            doc["stopped"] = {"step": step, "best": best["step"]}
            control.should_training_stop = True
            print(
                f"early stop: {rule['patience']} checkpoint(s) since step {best['step']} "
                f"have not beaten it; training stops at step {step}",
                flush=True,
            )
        write_json(self.path, doc)
        return control


class EarlyStopOnRule(BasePlugin):
    """Adds RuleCallback when COSMOSAGE_EARLY_STOP names the stage's early_stop.json."""

    def add_callbacks_post_trainer(self, cfg, trainer):
        path = os.environ.get(ENV)
        return [RuleCallback(Path(path))] if path else []
