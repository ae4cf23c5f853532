"""Choose a stage's checkpoint by what it answers, not by its eval loss.

Eval loss on the training facts always picks the last checkpoint, while forgetting grows
with every step. With `recipe.select`, every saved checkpoint of the stage is asked the
given suites (and its drift from the stage's parent measured), and the rule picks:

    recipe:
      select:
        suites: [build/data/papers/closed_book.yaml, samples/eval/general_large.yaml]
        maximize: paper_only     # the score to raise: all, domain, held_out, paper_only,
                                 # qa_fact, suite:NAME, doc:NAME ...
        general_drop: 0.05       # keep the general pass rate within 5 points of the parent
        kl: 0.5                  # and the mean KL to the parent at most this (optional)
        max_new_tokens: 32       # greedy answers this long (default 32)
        patience: 2              # early stopping (optional): ask each checkpoint as it is
                                 # saved and stop training once this many saved after the
                                 # best one have not beaten it
        scorer: module:function  # optional: score checkpoints with this instead of suites

Among the checkpoints within every limit, the one with the highest `maximize` score wins
(ties: the earlier step, which has drifted less). When none is within the limits the
rule's `otherwise` decides: `least-over` (default) keeps the one that breaks them least
(smallest general drop, then KL), `best` the highest score anyway, `stop` none (the
stage fails, the table written); the run says which.
The table of every checkpoint's scores is `<stage>/select.json` and the run's summary.
With `patience` the checkpoints are asked during training (tools/run/early_stop.py, an
Axolotl plugin the launcher adds), training stops when the rule can no longer improve,
and the choice after training reuses those answers.
Keep the checkpoints to choose from: `save_steps` below `max_steps` and a
`save_total_limit` of at least their number (Axolotl keeps 4 when it is not set).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from cosmosage.dataprep.io import write_json
from cosmosage.dataprep.records import DataError
from cosmosage.tools.models import merge
from cosmosage.tools.paths import StageFolder
from cosmosage.tools.recipe.check.select import check_rule

Echo = Callable[[str], None]


def violation(row: dict, rule: dict) -> tuple[float, float]:
    """How far a checkpoint is past each limit (0 within it): (general drop, KL)."""
    drop = max(0.0, (row.get("general_drop") or 0.0) - float(rule.get("general_drop", 1.0)))
    kl = max(0.0, (row.get("kl") or 0.0) - float(rule.get("kl", float("inf"))))
    return drop, kl


def choose(rows: list[dict], rule: dict) -> tuple[dict, bool]:
    """The chosen row of `rows` (each: step, scores, general_drop, kl) and whether it is
    within every limit. None within: `otherwise: best` takes the highest score anyway,
    else (`least-over`, and `stop` before it stops) the one past the limits least."""
    if not rows:
        raise DataError("recipe.select: the stage saved no checkpoint to choose from")
    key = rule["maximize"]
    within = [r for r in rows if violation(r, rule) == (0.0, 0.0)]
    if within:
        return max(within, key=lambda r: (r["scores"].get(key, 0.0), -r["step"])), True
    if rule.get("otherwise") == "best":
        return max(rows, key=lambda r: (r["scores"].get(key, 0.0), -r["step"])), False
    return min(
        rows, key=lambda r: (*violation(r, rule), -r["scores"].get(key, 0.0), r["step"])
    ), False


def custom_scorer(spec: str) -> Callable:
    """`module:function`, called as score_checkpoints is: (parent, candidates, rule, root)
    -> (parent scores, rows); for a metric the suites cannot express."""
    import importlib

    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"recipe.select.scorer {spec}: cannot be loaded ({exc})") from exc


def score_checkpoints(
    parent: str, candidates: list[tuple[int | float, str]], rule: dict, root: Path
) -> tuple[dict, list[dict]]:
    """Ask the parent and every candidate model the rule's suites; (parent scores, one
    row per candidate with its scores, general drop and KL to the parent). A candidate
    is (its step, or a soup's weight, as `step`; its model folder)."""
    if rule.get("scorer"):
        return custom_scorer(rule["scorer"])(parent, candidates, rule, root)
    from cosmosage.tools.eval.drift import general_items, kl_to_base
    from cosmosage.tools.eval.evaluate import score_models
    from cosmosage.tools.eval.generation import preset

    models = {"parent": parent, **{f"step-{s}": p for s, p in candidates}}
    suites = [root / s for s in rule["suites"]]
    settings = preset("greedy", max_new_tokens=int(rule.get("max_new_tokens", 32)))
    result = score_models(models, suites, settings, cache_dir=root / "build" / "cache" / "answers")
    base = result["scores"]["parent"]
    items = general_items(result["answers"], "parent")
    rows = []
    for step, path in candidates:
        s = result["scores"][f"step-{step}"]
        row = {"step": step, "scores": s, "counts": result["counts"][f"step-{step}"]}
        if "general" in base and "general" in s:
            row["general_drop"] = round(base["general"] - s["general"], 4)
        if items:
            row["kl"] = round(kl_to_base(parent, path, items)["kl"], 5)
        rows.append(row)
    return base, rows


def candidate_model(cfg: dict, src: Path, dst: Path, stage_dir: Path) -> str:
    """A checkpoint as a plain model folder at `dst` (an adapter merged into its base)."""
    if merge.is_adapter(src):
        return str(merge.merge_adapter(cfg["base_model"], src, dst, StageFolder(stage_dir).output))
    return str(merge.copy_model(src, dst, StageFolder(stage_dir).output))


def read_journal(stage_dir: Path) -> dict:
    """What early stopping asked during training: {rule, parent, checkpoints, stopped}."""
    path = StageFolder(stage_dir).early_stop
    return json.loads(path.read_text()) if path.is_file() else {}


def journal_rows(stage_dir: Path, rule: dict) -> list[dict]:
    """The checkpoints early stopping scored with this same rule (none for another rule)."""
    doc = read_journal(stage_dir)
    same = {k: v for k, v in (doc.get("rule") or {}).items() if k != "patience"} == {
        k: v for k, v in rule.items() if k != "patience"
    }
    return list(doc.get("checkpoints") or []) if same else []


def select_checkpoint(
    cfg: dict, rule: dict, stage_dir: Path, m: dict, root: Path, echo: Echo
) -> dict | None:
    """The stage's checkpoint chosen by `rule` (an entry of metrics' `checkpoints`), with
    the table written to <stage>/select.json."""
    check_rule(rule)
    ckpts = m["checkpoints"]
    if not ckpts:
        return m["best_checkpoint"]
    work = StageFolder(stage_dir).candidates
    shutil.rmtree(work, ignore_errors=True)
    # checkpoints already asked during training (early stopping) are not asked again
    scored = {r["step"]: r for r in journal_rows(stage_dir, rule)}
    todo = [c for c in ckpts if c["step"] not in scored]
    candidates = [
        (c["step"], candidate_model(cfg, Path(c["path"]), work / f"step-{c['step']}", stage_dir))
        for c in todo
    ]
    base = read_journal(stage_dir).get("parent", {}) if scored else {}
    if candidates:
        echo(
            f"select {stage_dir.name}: asking {len(candidates)} checkpoint(s) "
            f"{', '.join(rule['suites'])}"
        )
        base, new = score_checkpoints(cfg["base_model"], candidates, rule, root)
        scored |= {r["step"]: r for r in new}
    if len(scored) > len(candidates):
        echo(
            f"select {stage_dir.name}: {len(scored) - len(candidates)} checkpoint(s) already "
            "asked during training"
        )
    kept = {c["step"] for c in ckpts}
    rows = [scored[s] for s in sorted(scored) if s in kept]
    chosen, ok = choose(rows, rule)
    shutil.rmtree(work, ignore_errors=True)
    write_json(
        StageFolder(stage_dir).select,
        {
            "rule": rule,
            "parent": base,
            "checkpoints": rows,
            "chosen": None if stops(ok, rule) else chosen["step"],
            "within": ok,
        },
    )
    report(rows, chosen, ok, rule, "step", "checkpoint", stage_dir, echo)
    refuse_outside(ok, rule, "checkpoint", stage_dir)
    best = next(c for c in ckpts if c["step"] == chosen["step"])
    return {**best, "selected_by": rule["maximize"], "within_limits": ok}


def report(
    rows: list[dict], chosen: dict, ok: bool, rule: dict, label: str, kind: str,
    stage_dir: Path, echo: Echo,
) -> None:  # fmt: skip
    """One line per candidate (its score, general drop and KL), the chosen one marked."""
    key = rule["maximize"]
    for r in rows:
        mark = " <- chosen" if r is chosen else ""
        echo(
            f"select   {label} {r['step']:g}: {key} {r['scores'].get(key, 0):.0%}, general drop "
            f"{(r.get('general_drop') or 0) * 100:+.0f} pts, KL {r.get('kl', 0):.4f}{mark}"
        )
    if not ok:
        kept = {"best": f"the one with the most {key}", "stop": "none: the run stops"}
        echo(
            f"select {stage_dir.name}: no {kind} keeps within the limits; kept: "
            + kept.get(rule.get("otherwise"), "the one past them least")
        )


def stops(ok: bool, rule: dict) -> bool:
    """Whether the rule keeps nothing: no candidate within the limits and `otherwise: stop`."""
    return not ok and rule.get("otherwise") == "stop"


def refuse_outside(ok: bool, rule: dict, kind: str, stage_dir: Path) -> None:
    """`otherwise: stop`: no candidate within the limits stops the run, the table kept."""
    if stops(ok, rule):
        raise DataError(
            f"no {kind} keeps within the limits (general_drop {rule.get('general_drop')}, kl "
            f"{rule.get('kl')}) and recipe.select.otherwise is stop: every {kind}'s scores are "
            f"in {StageFolder(stage_dir).select}"
        )


def select_soup(
    weights: list[float],
    make: Callable[[float, Path], str],
    parent: str,
    rule: dict,
    stage_dir: Path,
    root: Path,
    echo: Echo,
) -> tuple[float, dict]:
    """One soup per weight of its first model (`make(weight, folder)` makes it), each asked
    the rule's suites; the chosen soup moved to <stage>/model, the others removed, the
    table written to <stage>/select.json. Returns (chosen weight, its row)."""
    check_rule(rule, "recipe.soup.select", soup=True)
    work = StageFolder(stage_dir).candidates
    shutil.rmtree(work, ignore_errors=True)
    candidates = [(w, make(w, work / f"weight-{w:g}")) for w in weights]
    echo(f"select {stage_dir.name}: asking {len(candidates)} soup(s) {', '.join(rule['suites'])}")
    base, rows = score_checkpoints(parent, candidates, rule, root)
    chosen, ok = choose(rows, rule)
    report(rows, chosen, ok, rule, "weight", "soup", stage_dir, echo)
    if not stops(ok, rule):
        dst = StageFolder(stage_dir).model
        shutil.rmtree(dst, ignore_errors=True)
        shutil.move(dict(candidates)[chosen["step"]], dst)
    shutil.rmtree(work, ignore_errors=True)
    write_json(
        StageFolder(stage_dir).select,
        {
            "rule": rule,
            "parent": base,
            "soups": rows,
            "chosen": None if stops(ok, rule) else chosen["step"],
            "within": ok,
        },
    )
    refuse_outside(ok, rule, "soup", stage_dir)
    return chosen["step"], {**chosen, "within_limits": ok}
