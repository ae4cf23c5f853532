"""The stages of a recipe and what each gets: the plan (a pipeline's stages in order),
the model a stage starts from, and the Axolotl config it is given; the error a failed
step raises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cosmosage.dataprep.io import sha256_file
from cosmosage.tools.errors import LaunchError
from cosmosage.tools.paths import ROOT, StageFolder
from cosmosage.tools.recipe import check
from cosmosage.tools.recipe.render import RecipeError, Rendered, check_unsets, render, to_yaml
from cosmosage.tools.run import metrics, registry

Echo = Callable[[str], None]


@dataclass
class Stage:
    name: str  # recipe name, e.g. quickstart/pretrain
    key: str  # folder in the run, e.g. pretrain
    rendered: Rendered


def plan(
    name: str, sets: list[str] | None = None, unsets: list[str] | None = None, root: Path = ROOT
) -> tuple[Rendered, list[Stage]]:
    """The top recipe and its stages (itself, for a single-stage recipe)."""
    check_unsets(name, sets, unsets, root)
    top = render(name, sets, unsets, root)
    names = top.stages or [name]
    stages = []
    for stage_name in names:
        r = top if stage_name == name else render(stage_name, sets, unsets, root)
        if r.is_pipeline:
            raise RecipeError(
                f"{name}: stage {stage_name!r} is itself a pipeline; list its stages instead"
            )
        key = stage_name.rsplit("/", 1)[-1]
        stages.append(Stage(stage_name, key, r))
    keys = [s.key for s in stages]
    if len(set(keys)) != len(keys):
        raise RecipeError(f"{name}: two stages would share a folder name: {keys}")
    return top, stages


def precheck(stages: list[Stage], root: Path) -> None:
    """Every stage's errors that no build or earlier stage can mend (Axolotl's schema, a
    key of the wrong type, the method against the hardware, ...), before any data is
    built or any stage trains (`recipe run`, its dry run, `recipe prepare`). Files are
    left out here: the builds and the earlier stages make them, and each stage's whole
    check runs again, files included, before it trains or its config is written."""
    found = []
    for stage in stages:
        if stage.rendered.meta.get("soup"):
            continue  # checked when it runs: its models are the earlier stages' outputs
        found += [
            f"  {stage.name}: {p}"
            for p in check.check_rendered(stage.rendered, root)
            if p.severity == "error" and p.check != "files"
        ]
    if found:
        raise LaunchError(
            "the recipe failed its checks (nothing was built or run):\n" + "\n".join(found)
        )


def resolve_parent(stage: Stage, previous: dict[str, str], runs_dir: Path) -> str | None:
    """base_model for a stage whose `recipe.parent` is another recipe."""
    parent = stage.rendered.meta.get("parent")
    if not parent:
        return None
    if parent in previous:
        return previous[parent]
    found = registry.latest_model(runs_dir, parent)
    if found:
        return found
    raise LaunchError(
        f"{stage.name} starts from {parent}, which has no finished run yet: run `make recipe NAME={parent}` first"
    )


def stage_config(stage: Stage, base_model: str | None, stage_dir: Path, resume: bool) -> dict:
    cfg = dict(stage.rendered.config)
    if base_model:
        cfg["base_model"] = base_model
    cfg["output_dir"] = str(StageFolder(stage_dir).output)
    cfg.setdefault("dataset_prepared_path", str(StageFolder(stage_dir).prepared))
    if resume and metrics.checkpoints(StageFolder(stage_dir).output):
        cfg["auto_resume_from_checkpoints"] = True
    return cfg


GC_FREEZE = "cosmosage.tools.run.gc_freeze.FreezeBeforeTraining"
SAVE_IN_PROCESS = "cosmosage.tools.run.save_in_process.SaveInProcess"
# what every stage's written config names first: less time outside the training steps
STAGE_PLUGINS = (GC_FREEZE, SAVE_IN_PROCESS)


def with_stage_plugins(cfg: dict) -> dict:
    """The config with the stage plugins first in `plugins:`, once each (tools/run/
    gc_freeze.py: collections that skip the imports' objects; tools/run/
    save_in_process.py: prepared splits saved without a spawned pool)."""
    plugins = [p for p in (cfg.get("plugins") or []) if p not in STAGE_PLUGINS]
    return {**cfg, "plugins": [*STAGE_PLUGINS, *plugins]}


def write_stage_config(stage: Stage, cfg: dict, stage_dir: Path, verb: str = "rendered") -> Path:
    """The stage's complete Axolotl config as stage_dir/axolotl.yaml, with a header naming
    the recipe files it came from; every stage's gets the stage plugins (`recipe run`
    and `recipe prepare` alike; not before, so checks never register them here)."""
    cfg_path = StageFolder(stage_dir).config
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    files = ", ".join(stage.rendered.files)
    header = f"{verb} from recipe {stage.name}; files: {files}"
    cfg_path.write_text(to_yaml(with_stage_plugins(cfg), header=header))
    return cfg_path


def data_hashes(cfg: dict, root: Path) -> dict[str, str]:
    out = {}
    for ds in (cfg.get("datasets") or []) + (cfg.get("test_datasets") or []):
        p = root / str(ds.get("path", ""))
        if p.is_file():
            out[str(ds["path"])] = sha256_file(p)
    return out
