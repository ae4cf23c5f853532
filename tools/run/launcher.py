"""`recipe run`: a recipe (or pipeline) from plan to published folder, as named steps.

    run_recipe
      precheck           every stage's errors that no build mends, before anything runs
      open_run           the run folder: new, or the unfinished one with --resume
      plan_run           --dry-run stops here: what each stage would get
      for each stage:
        ensure_builds    the data the stage needs (tools/run/process.py)
        train_stage      check, then Axolotl trains (`train`), then select_and_merge
        | soup_stage     mergekit instead (tools/run/soup_stage.py)
        record_stage     run.json and the registry learn the stage's model
      evaluate_models    every model of the run asked the recipe's suites
      write_card         publish/: the final model and its model card
      finish_run         status, summary.md

The run folder's layout is tools/paths.py's; the record (run.json) is written only by
`save`. Processes start only in tools/run/process.py.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from cosmosage.dataprep.io import write_json
from cosmosage.dataprep.records import DataError
from cosmosage.tools import paths
from cosmosage.tools.models import merge
from cosmosage.tools.paths import ROOT, RunFolder, StageFolder
from cosmosage.tools.recipe import check
from cosmosage.tools.recipe.render import Rendered
from cosmosage.tools.run import card, evaluation, metrics, process, registry, soup_stage
from cosmosage.tools.run.stage import (
    Echo,
    LaunchError,
    Stage,
    data_hashes,
    plan,
    precheck,
    resolve_parent,
    stage_config,
    with_stage_plugins,
    write_stage_config,
)

__all__ = ["LaunchError", "Stage", "plan", "run_recipe"]


def run_recipe(
    name: str,
    sets: list[str] | None = None,
    unsets: list[str] | None = None,
    dry_run: bool = False,
    resume: bool = False,
    echo: Echo = print,
    root: Path = ROOT,
    runs_dir: Path | None = None,
) -> dict:
    """Run a recipe (or pipeline) end to end; returns the run record."""
    runs_dir = paths.runs_dir(runs_dir, root)
    top, stages = plan(name, sets, unsets, root)
    precheck(stages, root)
    run = open_run(runs_dir, name, resume, echo)
    record = start_record(run, name, top, sets, unsets)
    if dry_run:
        return plan_run(stages, run, runs_dir, root, resume)

    run.path.mkdir(parents=True, exist_ok=True)
    save(run, record)
    try:
        first_base = None
        previous: dict[str, str] = {}
        for stage in stages:
            done = record["stages"].get(stage.key, {})
            if done.get("status") == "complete" and Path(done.get("model", "")).exists():
                echo(f"skip   {stage.name}: already complete in this run")
                entry = done
            else:
                process.ensure_builds(stage.rendered.meta, root, echo, stage.rendered.config)
                if stage.rendered.meta.get("soup"):
                    entry = soup_stage.run_soup_stage(
                        stage, previous, runs_dir, root, run.stage(stage.key).path, echo
                    )
                else:
                    entry = train_stage(stage, run, previous, runs_dir, root, resume, echo)
                record_stage(run, record, stage, entry, runs_dir)
            previous[stage.name] = entry["model"]
            first_base = first_base or starting_model(entry)
        failures = evaluate_models(run, record, top, first_base, runs_dir, root, echo)
        write_card(run, record, top, record["stages"][stages[-1].key]["model"])
    except BaseException as exc:
        record["status"] = "failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted"
        record["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        save(run, record)
        raise
    return finish_run(run, record, name, failures)


# --------------------------------------------------------------------------- the run folder


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def find_resumable(runs_dir: Path, name: str) -> Path | None:
    """The newest run of `name` that did not complete."""
    base = runs_dir / name
    if not base.is_dir():
        return None
    for d in sorted(base.iterdir(), reverse=True):
        if RunFolder.is_run(d) and RunFolder(d).record().get("status") != "complete":
            return d
    return None


def open_run(runs_dir: Path, name: str, resume: bool, echo: Echo) -> RunFolder:
    """A new run folder, or with `resume` the newest unfinished one of this recipe."""
    found = find_resumable(runs_dir, name) if resume else None
    if resume and found is None:
        echo(f"nothing to resume for {name}: starting a new run")
    run = RunFolder(found or runs_dir / name / new_run_id())
    if RunFolder.is_run(run.path):
        echo(f"resume {run.path}")
    return run


def start_record(
    run: RunFolder, name: str, top: Rendered, sets: list[str] | None, unsets: list[str] | None
) -> dict:
    """The run's record: what a resumed run had, marked running with today's recipe."""
    record = run.record()
    record.setdefault("recipe", name)
    record.setdefault("run_id", run.path.name)
    record.setdefault("started", datetime.now(UTC).isoformat(timespec="seconds"))
    record.setdefault("stages", {})
    record.update(
        {
            "status": "running",
            "recipe_hash": top.digest(),
            "overrides": {"set": sets or [], "unset": unsets or []},
        }
    )
    return record


def save(run: RunFolder, record: dict) -> None:
    """run.json, atomically: the one place the record is written."""
    write_json(run.record_file, record)


# --------------------------------------------------------------------------- the plan


def plan_run(stages: list[Stage], run: RunFolder, runs_dir: Path, root: Path, resume: bool) -> dict:
    """What `--dry-run` prints: each stage's stale builds, command and config."""
    plans = []
    previous: dict[str, str] = {}
    for stage in stages:
        folder = run.stage(stage.key)
        builds = [b["output"] for b in process.stale_builds(stage.rendered.meta, root)]
        if stage.rendered.meta.get("soup"):
            step = soup_stage.soup_plan(stage, previous, runs_dir, root, folder.path)
        else:
            try:
                base = resolve_parent(stage, previous, runs_dir)
            except LaunchError:
                base = f"<output of {stage.rendered.meta['parent']}>"
            step = {
                "stage": stage.name,
                "argv": process.build_argv(folder.config, stage.rendered.meta),
                # as `train` writes it: with the stage plugins (and early stopping)
                "config": with_stage_plugins(
                    with_early_stop(stage, stage_config(stage, base, folder.path, resume))
                ),
            }
        plans.append({"stage": stage.name, "builds": builds, **step})
        previous[stage.name] = str(folder.model)
    return {"dry_run": True, "run_dir": str(run.path), "stages": plans}


# --------------------------------------------------------------------------- a stage


def train_stage(
    stage: Stage,
    run: RunFolder,
    previous: dict[str, str],
    runs_dir: Path,
    root: Path,
    resume: bool,
    echo: Echo,
) -> dict:
    """Check the stage's config as Axolotl will get it, train, choose and merge; the
    stage's entry in the run record."""
    folder = run.stage(stage.key)
    cfg = stage_config(stage, resolve_parent(stage, previous, runs_dir), folder.path, resume)
    problems = [
        p
        for p in check.check_rendered(Rendered(stage.name, cfg, stage.rendered.meta), root)
        if p.severity == "error" or check.unchecked_end_of_turn(p)
    ]
    if problems:
        raise LaunchError(
            f"{stage.name} failed its checks:\n" + "\n".join(f"  {p}" for p in problems)
        )
    m = train(stage, cfg, folder.path, root, echo)
    m["best_checkpoint"] = choose_checkpoint(stage, cfg, folder.path, m, root, echo)
    m["model"] = str(select_and_merge(cfg, folder.path, m["best_checkpoint"]))
    write_json(folder.metrics, m)
    return {
        "status": "complete",
        "recipe": stage.name,
        "parent_model": cfg["base_model"],
        "model": m["model"],
        "data": data_hashes(cfg, root),
        "metrics": {
            k: m[k]
            for k in ("eval_loss_before", "eval_loss_best", "final_train_loss", "steps", "wall_s")
        },
        "best_checkpoint": m["best_checkpoint"],
    }


def with_early_stop(stage: Stage, cfg: dict) -> dict:
    """`cfg` with the early-stopping plugin when the stage's select rule has patience (it
    asks each checkpoint as it is saved)."""
    rule = stage.rendered.meta.get("select") or {}
    if not (isinstance(rule, dict) and rule.get("patience")):
        return cfg
    from cosmosage.tools.run import early_stop

    return {**cfg, "plugins": [*(cfg.get("plugins") or []), early_stop.PLUGIN]}


def train(stage: Stage, cfg: dict, stage_dir: Path, root: Path, echo: Echo) -> dict:
    """`axolotl train` on the stage's config (written with the gc.freeze plugin, and the
    early-stopping plugin when the select rule has patience); the metrics of its output
    folder."""
    folder = StageFolder(stage_dir)
    env = process.build_env(cfg, root, stage.rendered.meta)
    rule = stage.rendered.meta.get("select") or {}
    cfg = with_early_stop(stage, cfg)
    if isinstance(rule, dict) and rule.get("patience"):
        from cosmosage.tools.run import early_stop

        stage_dir.mkdir(parents=True, exist_ok=True)
        env[early_stop.ENV] = str(early_stop.write_spec(stage_dir, rule, cfg, root))
        echo(
            f"select {stage.key}: each checkpoint asked as it is saved; training stops once "
            f"{rule['patience']} saved after the best have not beaten it"
        )
    argv = process.build_argv(write_stage_config(stage, cfg, stage_dir), stage.rendered.meta)
    echo(f"train  {stage.name}: {' '.join(argv[1:])}  (log: {folder.log})")
    t0 = time.time()
    rc = process.run_command(
        argv, folder.log, env=env, cwd=root, total_steps=cfg.get("max_steps"), desc=stage.key
    )
    if rc != 0:
        raise LaunchError(
            f"axolotl train failed for {stage.name} (exit {rc}); last lines of {folder.log}:"
            f"\n{process.tail(folder.log)}"
        )
    m = metrics.collect(folder.output)
    m["wall_s"] = round(time.time() - t0, 1)
    return m


def choose_checkpoint(
    stage: Stage, cfg: dict, stage_dir: Path, m: dict, root: Path, echo: Echo
) -> dict | None:
    """The checkpoint the stage keeps: ReLoRA's final weights, else by `recipe.select`'s
    rule when it has one, else the lowest eval loss (metrics' choice)."""
    best = m["best_checkpoint"]
    if cfg.get("relora"):
        return relora_final(m, stage_dir, stage.key, echo)
    if stage.rendered.meta.get("select"):
        from cosmosage.tools.run.select import select_checkpoint

        try:
            best = select_checkpoint(cfg, stage.rendered.meta["select"], stage_dir, m, root, echo)
        except DataError as exc:
            raise LaunchError(f"{stage.name}: {exc}") from exc
    echo(
        f"select {stage.key}: checkpoint step {best['step'] if best else '-'} "
        f"(eval loss {registry.loss_text(m['eval_loss_before'])} -> "
        f"{registry.loss_text(m['eval_loss_best'])})"
    )
    return best


def relora_final(m: dict, stage_dir: Path, key: str, echo: Echo) -> dict:
    """ReLoRA's model is its final weights: the adapter is merged into them at every
    restart, and a checkpoint holds only the adapter since the last one."""
    loss = next((e["eval_loss"] for e in m["eval_loss"] if e["step"] == m["steps"]), None)
    final = {"step": m["steps"], "path": str(StageFolder(stage_dir).output), "eval_loss": loss}
    m["eval_loss_best"] = loss
    echo(
        f"select {key}: the final weights, step {m['steps']} (ReLoRA merges its adapter at every "
        f"restart; eval loss {registry.loss_text(m['eval_loss_before'])} -> "
        f"{registry.loss_text(final['eval_loss'])})"
    )
    return final


def select_and_merge(cfg: dict, stage_dir: Path, best: dict | None) -> Path:
    """The stage's selected checkpoint as a plain model folder at <stage>/model."""
    output = StageFolder(stage_dir).output
    dst = StageFolder(stage_dir).model
    if cfg.get("relora"):
        # ReLoRA merges into the full weights at every restart; its output holds full weights.
        return merge.copy_model(output, dst)
    src = Path(best["path"]) if best else output
    if merge.is_adapter(src):
        model = merge.merge_adapter(cfg["base_model"], src, dst, tokenizer_from=output)
        try:
            found = merge.check_merge(cfg["base_model"], src, model, tokenizer_from=output)
        except merge.MergeCheckError as exc:
            c = exc.check
            raise LaunchError(
                f"merge check failed for stage {stage_dir.name}: max |logit difference| "
                f"{c.max_abs_diff:.3g} between {model} and its base + adapter is above the "
                f"tolerance {c.tolerance:.3g} ({c.dtype}, {c.tokens} tokens)"
            ) from exc
        write_json(StageFolder(stage_dir).merge_check, asdict(found))
        return model
    return merge.copy_model(src, dst, tokenizer_from=output)


def starting_model(entry: dict) -> str | None:
    """The model a stage started from: a soup's base (or first model), else its parent."""
    return (entry.get("soup") or {}).get("base") or entry.get("parent_model")


def record_stage(run: RunFolder, record: dict, stage: Stage, entry: dict, runs_dir: Path) -> None:
    """A finished stage into run.json and the run registry."""
    record["stages"][stage.key] = entry
    save(run, record)
    registry.append(
        runs_dir,
        {
            "run_id": f"{record['recipe']}/{run.path.name}",
            "recipe_hash": stage.rendered.digest(),
            **entry,
        },
    )


# --------------------------------------------------------------------------- the end


def evaluate_models(
    run: RunFolder,
    record: dict,
    top: Rendered,
    first_base: str | None,
    runs_dir: Path,
    root: Path,
    echo: Echo,
) -> list[str]:
    """The recipe's `eval` block on the first stage's starting model and every stage's
    model; the scores join the record and the registry. The thresholds missed."""
    if not top.meta.get("eval"):
        return []
    result = evaluation.recipe_eval(run.path, record, top.meta, first_base, root, echo)
    record["eval"] = result["scores"]
    record["forgetting"] = result.get("forgetting", [])
    record["consistency_auroc"] = (result.get("consistency") or {}).get("auroc")
    failures = record["threshold_failures"] = result["threshold_failures"]
    for key, stage in record["stages"].items():
        registry.annotate(runs_dir, stage["model"], scores=result["scores"].get(key, {}))
    return failures


def write_card(run: RunFolder, record: dict, top: Rendered, final_model: str) -> None:
    """publish/: the final model with its model card."""
    record["publish"] = str(card.write_publish_folder(run.path, record, top, final_model))
    record["status"] = "complete"
    record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")


def finish_run(run: RunFolder, record: dict, name: str, failures: list[str]) -> dict:
    """The final record and summary.md; missed thresholds fail the run (after saving)."""
    if failures:
        record["status"] = "failed thresholds"
    save(run, record)
    run.summary.write_text(card.summary_markdown(run.path, record))
    record["run_dir"] = str(run.path)
    if failures:
        raise LaunchError(
            f"{name}: evaluation thresholds not met (everything is saved in {run.path}):\n"
            + "\n".join(f"  {f}" for f in failures)
        )
    return record
