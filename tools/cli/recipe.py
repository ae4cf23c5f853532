"""`cosmosage recipe list | render | check | prepare | run`: Axolotl recipes composed from fragments."""

from __future__ import annotations

from pathlib import Path

import click

from cosmosage.tools.cli.common import (
    build_command_problems,
    runs_dir_option,
    set_option,
    unset_option,
)


@click.command("list", short_help="A table of every recipe.")
def recipe_list() -> None:
    """A table of every recipe: name, method, model, hardware, description."""
    from cosmosage.tools.recipe.render import describe, list_recipes

    rows = [describe(n) for n in list_recipes()]
    cols = ["name", "method", "model", "hardware", "description"]
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in cols[:-1]}
    click.echo("  ".join(c.upper().ljust(widths.get(c, 0)) for c in cols))
    for r in rows:
        click.echo("  ".join(r[c].ljust(widths.get(c, 0)) for c in cols))


@click.command("render")
@click.argument("name")
@set_option
@unset_option
@click.option("--meta", is_flag=True, help="Print the merged recipe: block too.")
def recipe_render(name: str, sets: tuple[str, ...], unsets: tuple[str, ...], meta: bool) -> None:
    """Print the final Axolotl YAML of recipe NAME.

    \b
    Example:
      cosmosage recipe render quickstart/instruct --set learning_rate=1e-4
    """
    from cosmosage.tools.recipe.render import check_unsets, render, to_yaml

    check_unsets(name, list(sets), list(unsets))
    r = render(name, list(sets), list(unsets))
    if r.is_pipeline:
        click.echo(f"# {name} is a pipeline of stages: {', '.join(r.stages)}")
        for stage in r.stages:
            s = render(stage, list(sets), list(unsets))
            click.echo(f"---\n{to_yaml(s.config, header=f'stage {stage}')}", nl=False)
        return
    click.echo(to_yaml(r.config, header=f"recipe {name} = {' + '.join(r.files)}"), nl=False)
    if meta:
        click.echo(to_yaml({"recipe": r.meta}), nl=False)


@click.command("check", short_help="Validate recipes without training.")
@click.argument("names", nargs=-1, required=True)
@set_option
@unset_option
def recipe_check(names: tuple[str, ...], sets: tuple[str, ...], unsets: tuple[str, ...]) -> None:
    """Validate recipes without training or downloading; list every problem.

    Runs Axolotl's own schema validation and adds what Axolotl cannot know: keys it
    would silently drop, pad token equal to eos, chat data without a template, missing
    data files, CUDA-only options on the cpu profile, models too large for the hardware.
    A NAME ending in .yaml that is a file is a plain Axolotl config (a recipe with no
    fragments); its relative paths are taken from the current folder, as Axolotl does.

    \b
    Examples:
      cosmosage recipe check quickstart mistral-7b
      cosmosage recipe check my_axolotl_config.yaml
    """
    from cosmosage.tools.paths import ROOT
    from cosmosage.tools.recipe.check import Problem, check_stage
    from cosmosage.tools.recipe.render import check_unsets, is_config_path, render

    check_unsets(list(names), list(sets), list(unsets))
    failed = 0
    for name in names:
        top = render(name, list(sets), list(unsets))
        stages = [(s, render(s, list(sets), list(unsets))) for s in top.stages] or [(name, top)]
        for stage_name, r in stages:
            problems = check_stage(r, Path.cwd() if is_config_path(name) else ROOT)
            problems += [Problem("builds", p) for p in build_command_problems(r.meta)]
            errors = [p for p in problems if p.severity == "error"]
            status = "FAIL" if errors else "ok"
            click.echo(f"{status:4}  {stage_name}")
            for p in problems:
                click.echo(f"      {p}")
            failed += bool(errors)
    if failed:
        raise click.ClickException(f"{failed} recipe(s) failed their checks")


@click.command("run", short_help="Run a recipe end to end.")
@click.argument("name")
@set_option
@unset_option
@click.option(
    "--dry-run", is_flag=True, help="Render, plan and print the commands; build and train nothing."
)
@click.option("--resume", is_flag=True, help="Continue the newest unfinished run of NAME.")
@runs_dir_option
def recipe_run(
    name: str,
    sets: tuple[str, ...],
    unsets: tuple[str, ...],
    dry_run: bool,
    resume: bool,
    runs_dir: Path | None,
) -> None:
    """Run recipe NAME end to end: data, train, select, merge, evaluate, card.

    \b
    Examples:
      cosmosage recipe run quickstart
      cosmosage recipe run quickstart --set max_steps=5 --dry-run
      cosmosage recipe run quickstart --resume
    """
    from cosmosage.tools.paths import RunFolder
    from cosmosage.tools.recipe.render import render, to_yaml
    from cosmosage.tools.run.launcher import run_recipe

    top = render(name, list(sets), list(unsets))
    metas = [top.meta] + [render(s, list(sets), list(unsets)).meta for s in top.stages]
    bad = [p for meta in metas for p in build_command_problems(meta)]
    if bad:
        raise click.ClickException(
            "the recipe's builds would fail: " + "; ".join(dict.fromkeys(bad))
        )
    result = run_recipe(
        name,
        list(sets),
        list(unsets),
        dry_run=dry_run,
        resume=resume,
        echo=click.echo,
        runs_dir=runs_dir,
    )
    if dry_run:
        click.echo(f"# run folder would be {result['run_dir']}")
        for st in result["stages"]:
            click.echo(f"# stage {st['stage']}")
            if st["builds"]:
                click.echo(f"#   builds first: {', '.join(st['builds'])}")
            click.echo(f"#   $ {' '.join(st['argv'])}")
            click.echo(to_yaml(st["config"]), nl=False)
        return
    click.echo("")
    click.echo(RunFolder(Path(result["run_dir"])).summary.read_text())


@click.command("prepare", short_help="Builds + complete configs, for training elsewhere.")
@click.argument("name")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the configs; each stage trains into OUT/<stage>/output.",
)
@set_option
@unset_option
@click.option(
    "--build/--no-build",
    default=True,
    show_default=True,
    help="Run the recipe's missing or stale builds (data, models) first.",
)
@click.option(
    "--base-model",
    default=None,
    help="Base model of a stage whose parent recipe is not in this pipeline "
    "[default: the parent's newest finished run].",
)
@runs_dir_option
def recipe_prepare(
    name: str,
    out: Path,
    sets: tuple[str, ...],
    unsets: tuple[str, ...],
    build: bool,
    base_model: str | None,
    runs_dir: Path | None,
) -> None:
    """Build the data of recipe NAME and write each stage's complete Axolotl config.

    For training outside `recipe run` (a multi-node Slurm job, a hand-run `axolotl
    train`): OUT/<stage>/axolotl.yaml has output_dir, dataset_prepared_path and every
    local path absolute, and passed `recipe check`; OUT/prepare.json lists the stages
    in order with the commands that train each. docs/slurm/multinode.sbatch uses it.

    \b
    Examples:
      cosmosage recipe prepare mistral-7b/pretrain-full --out runs/slurm/pretrain
      axolotl preprocess runs/slurm/pretrain/pretrain-full/axolotl.yaml
      axolotl train runs/slurm/pretrain/pretrain-full/axolotl.yaml --launcher torchrun -- --nproc_per_node 8
    """
    from cosmosage.tools.run.prepare import prepare_recipe

    record = prepare_recipe(
        name,
        out,
        list(sets),
        list(unsets),
        build=build,
        base_model=base_model,
        runs_dir=runs_dir,
        echo=click.echo,
    )
    for st in record["stages"]:
        click.echo(f"# stage {st['stage']}")
        for argv in st["commands"]:
            click.echo(f"#   $ {' '.join(argv)}")


COMMANDS = [recipe_list, recipe_render, recipe_check, recipe_prepare, recipe_run]
