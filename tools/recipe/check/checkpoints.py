"""Evaluation and saving line up so the best checkpoint can be chosen."""

from __future__ import annotations

from cosmosage.tools.recipe.check.base import AXOLOTL_SAVE_TOTAL_LIMIT, Problem

# --------------------------------------------------------------------------- checkpoints


def has_eval(cfg: dict) -> bool:
    return bool(cfg.get("test_datasets")) or bool(cfg.get("val_set_size"))


def _is_multiple(a: float, b: float) -> bool:
    """a is a whole multiple of b (steps, or shares of the run below 1)."""
    ratio = a / b
    return abs(ratio - round(ratio)) < 1e-6 and round(ratio) >= 1


def check_checkpoints(cfg: dict) -> list[Problem]:
    """The checkpoint with the lowest eval loss must survive rotation until `recipe run`
    selects it (tools/run/metrics.py): the trainer keeps `save_total_limit` checkpoints
    (Axolotl: 4 when unset) and protects the best one only when `metric_for_best_model`
    names the eval loss; and a checkpoint has an eval loss only if an eval ran at its step."""
    if not has_eval(cfg) or cfg.get("save_strategy") == "no":
        return []
    limit = cfg.get("save_total_limit") or AXOLOTL_SAVE_TOTAL_LIMIT
    limit_text = f"save_total_limit {limit}" + ("" if cfg.get("save_total_limit") else " (default)")
    problems = []
    metric = str(cfg.get("metric_for_best_model") or "")
    if metric.removeprefix("eval_") != "loss":
        why = (
            f"`metric_for_best_model: {metric}` ranks checkpoints by another metric"
            if metric
            else "no `metric_for_best_model`"
        )
        problems.append(
            Problem(
                "checkpoints",
                f"{why}: the trainer keeps the newest checkpoints ({limit_text}) and can delete "
                "the one with the lowest eval loss before `recipe run` selects it; set "
                "`metric_for_best_model: eval_loss` (the trainer then never rotates the best "
                "checkpoint away)",
            )
        )
    elif cfg.get("greater_is_better"):
        problems.append(
            Problem(
                "checkpoints",
                "`greater_is_better: true` with eval loss protects the worst checkpoint; remove it",
            )
        )
    save_steps, eval_steps = cfg.get("save_steps"), cfg.get("eval_steps")
    saves, evals = cfg.get("saves_per_epoch"), cfg.get("evals_per_epoch")
    misaligned = None
    if save_steps and eval_steps and (float(save_steps) < 1) != (float(eval_steps) < 1):
        # below 1 the trainer reads a step count as a share of all steps
        misaligned = "save_steps and eval_steps are counted differently (share of the run vs steps)"
    elif save_steps and eval_steps and not _is_multiple(float(save_steps), float(eval_steps)):
        misaligned = f"save_steps {save_steps} is not a multiple of eval_steps {eval_steps}"
    elif saves and evals and int(evals) % int(saves):
        misaligned = f"evals_per_epoch {evals} is not a multiple of saves_per_epoch {saves}"
    elif (save_steps and evals) or (saves and eval_steps):
        misaligned = "saves and evals are counted differently (steps vs per epoch)"
    between = None if misaligned else evals_between_saves(save_steps, eval_steps, saves, evals)
    if not problems and not misaligned and not between and not cfg.get("relora"):
        problems.append(
            Problem(
                "checkpoints",
                f"the checkpoint with the lowest eval loss is kept until selection "
                f"(metric_for_best_model: {metric}, {limit_text})",
                "info",
            )
        )
    if between:
        problems.append(Problem("checkpoints", between, "warning"))
    if misaligned:
        problems.append(
            Problem(
                "checkpoints",
                f"{misaligned}: a checkpoint saved where no eval ran has no eval loss, so it can "
                "be neither protected nor selected; save where you evaluate",
            )
        )
    return problems


def evals_between_saves(save_steps, eval_steps, saves, evals) -> str | None:
    """Evals more often than saves (a whole multiple): the lowest eval loss can fall on a
    step with no checkpoint, which can be neither protected nor selected."""
    if save_steps and eval_steps and (float(save_steps) < 1) == (float(eval_steps) < 1):
        every, what = float(save_steps) / float(eval_steps), f"eval_steps {eval_steps}"
        fix = f"set `eval_steps: {save_steps}`"
    elif saves and evals:
        every, what = int(evals) / int(saves), f"evals_per_epoch {evals}"
        fix = f"set `evals_per_epoch: {saves}`"
    else:
        return None
    if not _is_multiple(every, 1) or round(every) < 2:
        return None
    return (
        f"{what} evaluates {round(every)} times per save: the lowest eval loss can fall where no "
        f"checkpoint is written, and selection then sees 1 eval in {round(every)}; {fix}, or "
        "save as often as you evaluate"
    )
