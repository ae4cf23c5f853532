"""Schedules against the data the stage will see: ReLoRA restarts, warmup."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cosmosage.dataprep.io import manifest_path
from cosmosage.tools.recipe.check.base import Problem
from cosmosage.tools.recipe.check.files import _local

# --------------------------------------------------------------------------- ReLoRA


def tokens_per_step(cfg: dict, meta: dict) -> int:
    gpus = max(int((meta.get("hardware") or {}).get("gpus") or 1), 1)
    return (
        int(cfg.get("micro_batch_size") or 1)
        * int(cfg.get("gradient_accumulation_steps") or 1)
        * int(cfg.get("sequence_len") or 2048)
        * gpus
    )


def data_tokens(cfg: dict, root: Path) -> tuple[int | None, str]:
    """Training tokens from the manifests beside the data files (`tokens` field)."""
    total = 0
    for i, ds in enumerate(cfg.get("datasets") or []):
        path = _local(str((ds or {}).get("path") or ""), root)
        man = manifest_path(path) if path else None
        if man is None or not man.is_file():
            return None, f"datasets[{i}] ({ds.get('path')}) has no manifest with a token count"
        tokens = json.loads(man.read_text()).get("tokens")
        if not isinstance(tokens, int):
            return None, f"the manifest of datasets[{i}] ({ds.get('path')}) counts no tokens"
        total += tokens
    return total, ""


def planned_steps(cfg: dict, meta: dict, root: Path) -> tuple[int | None, str]:
    """Optimizer steps of the stage and how they were counted: max_steps, else the data's
    tokens (manifests) over the tokens of a step, times the epochs; (None, why) when the
    data has no token count."""
    if cfg.get("max_steps"):
        return int(cfg["max_steps"]), "max_steps"
    tokens, why = data_tokens(cfg, root)
    if tokens is None:
        return None, why
    per_step, epochs = tokens_per_step(cfg, meta), float(cfg.get("num_epochs") or 1)
    steps = math.ceil(tokens * epochs / per_step)
    return steps, f"{tokens:,} tokens x {epochs:g} epoch(s) / {per_step:,} tokens a step"


def check_relora(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    """ReLoRA is LoRA plus restarts: without a first warmup the first cycle starts at the
    full learning rate (Axolotl's jagged scheduler warms up only after each restart), a
    run shorter than one cycle never restarts, and restarts between saves leave folders
    that hold only an adapter. Its model is the final weights, never a chosen checkpoint."""
    if not cfg.get("relora"):
        return []
    problems = _restarts(cfg, meta, root)
    problems.append(
        Problem(
            "relora",
            "the stage's model is the final weights (the adapter is merged into them at every "
            "restart; a checkpoint holds only the adapter since the last one), not a "
            "checkpoint chosen by eval loss; checkpoints serve resuming",
            "info",
        )
    )
    return problems


def _restarts(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    problems = []
    restart = int(cfg.get("jagged_restart_steps") or 0)
    if not cfg.get("warmup_steps") and not cfg.get("warmup_ratio"):
        problems.append(
            Problem(
                "relora",
                f"no `warmup_steps`/`warmup_ratio`: the first cycle (steps 0-{restart}) starts at "
                f"the full learning rate {cfg.get('learning_rate')} (Axolotl's jagged scheduler "
                "warms up only after a restart); set a warmup for the first cycle",
            )
        )
    if not restart:
        return problems
    problems += _saves_between_restarts(cfg, restart)
    per_step = tokens_per_step(cfg, meta)
    epochs = float(cfg.get("num_epochs") or 1)
    need = restart * per_step / epochs
    steps, how = planned_steps(cfg, meta, root)
    if steps is None:
        problems.append(
            Problem(
                "relora",
                f"restarts not estimated: {how}; one restart every {restart} steps of "
                f"{per_step:,} tokens needs more than {need / 1e6:,.1f}M training tokens "
                f"over {epochs:g} epoch(s)",
                "info",
            )
        )
        return problems
    restarts = (steps - 1) // restart if steps else 0
    if restarts < 1:
        problems.append(
            Problem(
                "relora",
                f"about {steps} steps ({how}) but a restart every {restart} steps: no restart "
                f"happens, so this trains plain LoRA; a restart needs more than "
                f"{need / 1e6:,.1f}M tokens, or lower `jagged_restart_steps`",
                "warning",
            )
        )
    else:
        problems.append(
            Problem("relora", f"about {steps} steps ({how}): {restarts} restart(s)", "info")
        )
    return problems


def _saves_between_restarts(cfg: dict, restart: int) -> list[Problem]:
    """Each restart writes `checkpoint-N/adapter`; where N is no save step, that folder
    holds nothing else: it counts toward save_total_limit (real checkpoints rotate away
    sooner) and Axolotl's auto-resume takes the highest-numbered checkpoint-*, this one."""
    save = cfg.get("save_steps")
    if cfg.get("save_strategy") == "no" or (
        isinstance(save, int) and save >= 1 and restart % save == 0
    ):
        return []
    how = (
        f"save_steps {save}"
        if save
        else "saves_per_epoch"
        if cfg.get("saves_per_epoch")
        else ("the default save schedule")
    )
    return [
        Problem(
            "relora",
            f"{how} does not save at every restart (jagged_restart_steps {restart}): each "
            "restart between saves leaves a checkpoint-N folder holding only the adapter (no "
            "trainer state), which counts toward save_total_limit and which `--resume` would "
            "start from (Axolotl resumes from the highest-numbered checkpoint-*); set "
            f"`save_steps: {restart}` (or a divisor of it)",
            "warning",
        )
    ]


# a warmup longer than this share of the run peaks late and leaves the decay unfinished
WARMUP_SHARE = 0.25


def check_warmup(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    """A fixed `warmup_steps` that takes much of a short run: the learning rate peaks
    late or never and the schedule's decay does not finish."""
    warmup = cfg.get("warmup_steps")
    if not isinstance(warmup, int) or warmup < 10:  # a few steps never matter
        return []
    steps, how = planned_steps(cfg, meta, root)
    if not steps or warmup <= WARMUP_SHARE * steps:
        return []
    return [
        Problem(
            "schedule",
            f"warmup_steps {warmup} is {warmup / steps:.0%} of the ~{steps:,} steps of this "
            f"stage ({how}): the learning rate peaks late{' or never' if warmup >= steps else ''}"
            " and its decay does not finish; use `warmup_ratio` (e.g. 0.02) or fewer warmup steps",
            "warning",
        )
    ]
