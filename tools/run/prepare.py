"""`recipe prepare`: everything `recipe run` does before training, for training outside it.

For a multi-node job (Slurm, any scheduler) or a hand-run `axolotl train`, a recipe is
prepared once: its missing or stale `recipe.builds` run, and each stage's complete
Axolotl config is written with absolute paths, so any node or folder can use it:

    OUT/prepare.json               the stages in order: config, base model, commands
    OUT/<stage>/axolotl.yaml       output_dir OUT/<stage>/output,
                                   dataset_prepared_path OUT/<stage>/prepared

A stage whose parent is an earlier stage of the same pipeline starts from that stage's
output (its output_dir for full weights, output_dir/merged after `axolotl merge-lora`
for an adapter); a parent outside the pipeline is its newest finished run in the
registry, or `--base-model`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cosmosage.dataprep.io import write_json, write_yaml
from cosmosage.tools import paths
from cosmosage.tools.paths import ROOT, StageFolder
from cosmosage.tools.recipe import check
from cosmosage.tools.recipe.render import Rendered
from cosmosage.tools.run import registry
from cosmosage.tools.run.process import axolotl_bin, build_argv, ensure_builds
from cosmosage.tools.run.stage import (
    LaunchError,
    Stage,
    plan,
    precheck,
    stage_config,
    write_stage_config,
)

Echo = Callable[[str], None]

# Config keys that name a local file or folder, relative to the project root in recipes.
PATH_KEYS = ("base_model", "base_model_config", "tokenizer_config", "deepspeed")


def absolute_paths(cfg: dict, root: Path, made: set[str] | frozenset[str] = frozenset()) -> dict:
    """Relative paths that exist under `root`, or that a build makes (`made`), made
    absolute, so the config means the same from any working folder (Hub ids are left
    as they are)."""
    out = dict(cfg)

    def fix(value: object) -> object:
        if isinstance(value, str) and value and not Path(value).is_absolute():
            if (root / value).exists() or value in made:
                return str((root / value).resolve())
        return value

    for key in PATH_KEYS:
        if key in out:
            out[key] = fix(out[key])
    for group in ("datasets", "test_datasets"):
        if isinstance(out.get(group), list):
            out[group] = [
                {**ds, "path": fix(ds.get("path"))} if isinstance(ds, dict) and "path" in ds else ds
                for ds in out[group]
            ]
    return out


def stage_output_model(cfg: dict) -> str:
    """Where a stage's trained weights are, once Axolotl has run: the output_dir for
    full weights, output_dir/merged (written by `axolotl merge-lora`) for an adapter."""
    out = Path(cfg["output_dir"])
    if cfg.get("adapter") and not cfg.get("relora"):
        return str(out / "merged")
    return str(out)


def stage_commands(cfg_path: Path, cfg: dict, meta: dict) -> list[list[str]]:
    """The commands that train a prepared stage on one machine, in order."""
    cmds = [[axolotl_bin(), "preprocess", str(cfg_path)], build_argv(cfg_path, meta)]
    if cfg.get("adapter") and not cfg.get("relora"):
        cmds.append([axolotl_bin(), "merge-lora", str(cfg_path)])
    return cmds


def prepare_recipe(
    name: str,
    out: str | Path,
    sets: list[str] | None = None,
    unsets: list[str] | None = None,
    build: bool = True,
    base_model: str | None = None,
    root: Path = ROOT,
    runs_dir: Path | None = None,
    echo: Echo = print,
) -> dict:
    """Run the builds of recipe `name` and write each stage's complete Axolotl config
    under `out`; returns what OUT/prepare.json holds. Errors of `recipe check` stop it."""
    out = Path(out).resolve()
    runs_dir = paths.runs_dir(runs_dir, root)
    _, stages = plan(name, sets, unsets, root)
    precheck(stages, root)
    previous: dict[str, str] = {}
    written = []
    for stage in stages:
        if build:
            ensure_builds(stage.rendered.meta, root, echo, stage.rendered.config)
        if stage.rendered.meta.get("soup") is not None:
            written.append(prepare_soup(stage, previous, runs_dir, root, out / stage.key))
            previous[stage.name] = written[-1]["model"]
            echo(f"config {written[-1]['config']}")
            continue
        parent = stage.rendered.meta.get("parent")
        base = _parent_model(stage, previous, runs_dir, base_model)
        stage_dir = out / stage.key
        made = check.build_outputs(stage.rendered.meta)
        cfg = absolute_paths(stage_config(stage, base, stage_dir, resume=False), root, made)
        problems = [
            p
            for p in check.check_rendered(Rendered(stage.name, cfg, stage.rendered.meta), root)
            if p.severity == "error"
            # an earlier stage of this pipeline makes the base model when it trains
            and not (parent in previous and p.check == "files" and "base_model" in p.message)
            # a build that was skipped (--no-build) would make it
            and not (not build and p.check == "files")
        ]
        if problems:
            raise LaunchError(
                f"{stage.name} failed its checks:\n" + "\n".join(f"  {p}" for p in problems)
            )
        cfg_path = write_stage_config(stage, cfg, stage_dir, verb="prepared")
        previous[stage.name] = stage_output_model(cfg)
        written.append(
            {
                "stage": stage.name,
                "config": str(cfg_path),
                "base_model": cfg["base_model"],
                "output_dir": cfg["output_dir"],
                "dataset_prepared_path": cfg["dataset_prepared_path"],
                "model": previous[stage.name],
                "commands": stage_commands(cfg_path, cfg, stage.rendered.meta),
            }
        )
        echo(f"config {cfg_path}")
    record = {"recipe": name, "root": str(root.resolve()), "stages": written}
    write_json(out / "prepare.json", record)
    return record


def prepare_soup(
    stage: Stage, previous: dict[str, str], runs_dir: Path, root: Path, stage_dir: Path
) -> dict:
    """A soup stage prepared: its mergekit config, with the earlier stages' output folders
    as ingredients, and the command that makes it after they trained."""
    from cosmosage.tools.models import soup
    from cosmosage.tools.run.soup_stage import soup_spec

    ingredients, kwargs = soup_spec(stage, previous, runs_dir, root)
    config = soup.mergekit_config(ingredients, **kwargs)
    stage_dir.mkdir(parents=True, exist_ok=True)
    config_path = StageFolder(stage_dir).mergekit_config
    write_yaml(config_path, config)
    model = StageFolder(stage_dir).model
    return {
        "stage": stage.name,
        "config": str(config_path),
        "base_model": ingredients[0].model,
        "parents": [i.model for i in ingredients],
        "model": str(model),
        "commands": [soup.mergekit_argv(config_path, model)],
    }


def _parent_model(
    stage: Stage, previous: dict[str, str], runs_dir: Path, base_model: str | None
) -> str | None:
    parent = stage.rendered.meta.get("parent")
    if not parent:
        return None
    if parent in previous:
        return previous[parent]
    if base_model:
        return base_model
    found = registry.latest_model(runs_dir, parent)
    if found:
        return found
    raise LaunchError(
        f"{stage.name} starts from {parent}, which has no finished run in {runs_dir}: "
        f"prepare {parent} first, or give --base-model PATH"
    )
