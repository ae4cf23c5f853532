"""`recipe.select` (and a soup's `recipe.soup.select`): a rule that can work, and a
stage that keeps the checkpoints it chooses among. tools/run/select.py applies it."""

from __future__ import annotations

from cosmosage.dataprep.records import DataError
from cosmosage.tools.recipe.check.base import AXOLOTL_SAVE_TOTAL_LIMIT, Problem
from cosmosage.tools.recipe.render import Rendered

RULE_KEYS = {
    "suites",
    "maximize",
    "general_drop",
    "kl",
    "max_new_tokens",
    "patience",
    "scorer",
    "otherwise",
}
# what the rule keeps when no candidate is within the limits
OTHERWISE = ("least-over", "best", "stop")


def check_rule(rule: dict, where: str = "recipe.select", soup: bool = False) -> None:
    """A rule that cannot work, named as `where`; a soup's rule may name its `parent`."""
    # a soup has no training to stop: no patience
    known = (RULE_KEYS - {"patience"}) | {"parent"} if soup else RULE_KEYS
    if not isinstance(rule, dict):
        raise DataError(f"{where} must be a mapping (suites, maximize, general_drop, kl)")
    unknown = set(rule) - known
    if unknown:
        raise DataError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    if not (rule.get("suites") or rule.get("scorer")) or not rule.get("maximize"):
        raise DataError(f"{where} needs `suites` (or a `scorer`) and the score to `maximize`")
    patience = rule.get("patience")
    if patience is not None and (
        isinstance(patience, bool) or not isinstance(patience, int) or patience < 1
    ):
        raise DataError(f"{where}.patience must be a whole number of checkpoints >= 1")
    if rule.get("otherwise", "least-over") not in OTHERWISE:
        raise DataError(f"{where}.otherwise must be one of {', '.join(OTHERWISE)}")
    if rule.get("scorer") is not None and not (
        isinstance(rule["scorer"], str) and ":" in rule["scorer"]
    ):
        raise DataError(f"{where}.scorer must be 'module:function'")


def check_select(r: Rendered) -> list[Problem]:
    """A `recipe.select` rule that cannot work, and a run that keeps too few checkpoints
    for it to choose."""
    rule = r.meta.get("select")
    if rule is None:
        return []
    try:
        check_rule(rule)
    except DataError as exc:
        return [Problem("select", str(exc))]
    if r.config.get("relora"):
        return [
            Problem(
                "select",
                "`recipe.select` cannot choose a ReLoRA checkpoint: the stage's model is its "
                "final weights (the adapter is merged into them at every restart); remove the rule",
            )
        ]
    steps, every = r.config.get("max_steps"), r.config.get("save_steps")
    # unset (or null, which rendering drops), Axolotl keeps 4
    limit = r.config.get("save_total_limit") or AXOLOTL_SAVE_TOTAL_LIMIT
    patience = rule.get("patience")
    if patience and int((r.meta.get("hardware") or {}).get("gpus") or 0) > 1:
        return [
            Problem(
                "select",
                "recipe.select.patience (early stopping) runs in one training process; this "
                "stage runs on several GPUs: drop patience and choose after training",
            )
        ]
    if patience and limit < patience + 1:
        return [
            Problem(
                "select",
                f"recipe.select.patience {patience} needs the best checkpoint and the "
                f"{patience} after it kept: save_total_limit {limit} is below {patience + 1}",
            )
        ]
    if steps and every and limit < -(-int(steps) // int(every)):
        return [
            Problem(
                "select",
                f"save_total_limit {limit} keeps fewer checkpoints than the "
                f"{-(-int(steps) // int(every))} saved: recipe.select can only choose among "
                "those kept; raise it to the number saved",
                "warning",
            )
        ]
    return []
