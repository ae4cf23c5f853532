"""`cosmosage sweep RECIPE --grid KEY=V1,V2 ...` and `cosmosage sweep report SWEEP_DIR`:
train a recipe once per combination of settings and compare the runs."""

from __future__ import annotations

from pathlib import Path

import click

from cosmosage.tools.cli.common import runs_dir_option, set_option, unset_option

sort_option = click.option(
    "--sort",
    default=None,
    metavar="METRIC",
    help="Order the table by this column: final.held_out, base.ppl, pretrain.eval_loss, "
    "wall_s, a grid key ... (a bare score name means final.NAME); scores descending, losses, "
    "perplexity, wall time and forgetting ascending [default: the last stage's eval loss].",
)


def echo_results(result: dict) -> None:
    click.echo("")
    click.echo(result["files"][0].read_text())
    click.echo("wrote " + ", ".join(str(f) for f in result["files"]))


@click.command("run", short_help="Train a recipe once per grid combination.")
@click.argument("recipe")
@click.option(
    "--grid",
    "grid",
    multiple=True,
    required=True,
    metavar="KEY=V1,V2",
    help="An axis of the grid (repeat, or several in one quoted argument separated by spaces).",
)
@set_option
@unset_option
@click.option(
    "--name", default=None, help="Sweep folder name [default: a hash of recipe, grid, overrides]."
)
@sort_option
@click.option("--retry-failed", is_flag=True, help="Run combinations that failed again.")
@click.option("--dry-run", is_flag=True, help="List the combinations and what would run.")
@runs_dir_option
def sweep_run(
    recipe: str,
    grid: tuple[str, ...],
    sets: tuple[str, ...],
    unsets: tuple[str, ...],
    name: str | None,
    sort: str | None,
    retry_failed: bool,
    dry_run: bool,
    runs_dir: Path | None,
) -> None:
    """Run RECIPE once per combination of the --grid values (each a `recipe run` with them
    as --set overrides, for every stage); then write a table (markdown, CSV) and a plot.

    The sweep folder is RUNS/sweeps/RECIPE/NAME/ (sweep.json, results.md, results.csv,
    results.png). Running the same command again skips finished combinations, resumes an
    interrupted one and runs the rest. A failed combination is recorded and the sweep goes
    on; the command then exits with an error naming how many failed.

    \b
    Examples:
      cosmosage sweep tiny/qlora --grid learning_rate=1e-4,1e-2 --set max_steps=4
      cosmosage sweep tiny/qlora --grid "learning_rate=1e-4,1e-3 lora_r=8,64" --sort eval_loss
      cosmosage sweep llama-3.2-1b/qlora-1x24gb --grid learning_rate=1e-4,1e-3 --sort held_out
    """
    from cosmosage.tools.run.sweep import run_sweep

    result = run_sweep(
        recipe,
        list(grid),
        list(sets),
        list(unsets),
        name=name,
        sort=sort,
        retry_failed=retry_failed,
        dry_run=dry_run,
        echo=click.echo,
        runs_dir=runs_dir,
    )
    if dry_run:
        return
    echo_results(result)
    combos = result["doc"]["combinations"]
    failed = [f"{c['index']} ({c['status']})" for c in combos if c["status"] != "complete"]
    if failed:
        raise click.ClickException(
            f"{len(failed)} of {len(combos)} combinations did not complete: {', '.join(failed)}"
        )


@click.command("report", short_help="Rebuild a sweep's table and plot.")
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@sort_option
def sweep_report(sweep_dir: Path, sort: str | None) -> None:
    """Rebuild results.md, results.csv and results.png of SWEEP_DIR from its sweep.json and
    run folders (to sort by another metric, or while a sweep still runs).

    \b
    Example:
      cosmosage sweep report runs/sweeps/tiny/qlora/<name> --sort wall_s
    """
    from cosmosage.tools.run.sweep_report import report

    echo_results(report(sweep_dir, sort))


@click.command("tradeoff", short_help="Plot configurations on two metrics.")
@click.argument(
    "sweep_dirs", nargs=-1, required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)  # fmt: skip
@click.option(
    "--x", "x", default="general", show_default=True, metavar="METRIC",
    help="Horizontal axis: what the runs keep (final.general, kl, general_drop, ppl ...).",
)  # fmt: skip
@click.option(
    "--y", "y", default="held_out", show_default=True, metavar="METRIC",
    help="Vertical axis: what the runs learn (final.held_out, paper_only ...).",
)  # fmt: skip
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("tradeoff.png"),
    show_default=True, help="The plot (.png); the table is written beside it as .md.",
)  # fmt: skip
@click.option("--goal-x", type=float, default=None, help="Draw the goal's threshold on x.")
@click.option("--goal-y", type=float, default=None, help="Draw the goal's threshold on y.")
@click.option(
    "--skip", "skip", multiple=True, metavar="KEY=VALUE",
    help="Leave out runs with this setting (repeat), e.g. learning_rate=1.0 for a diverged one.",
)  # fmt: skip
def sweep_tradeoff(
    sweep_dirs: tuple[Path, ...],
    x: str,
    y: str,
    out: Path,
    goal_x: float | None,
    goal_y: float | None,
    skip: tuple[str, ...],
) -> None:
    """Place every configuration of SWEEP_DIRS on two metrics, what was learned against what
    was kept: runs of one configuration that differ only in their seed are pooled (mean,
    with the range over seeds; one run gets its 95% interval where its suite kept counts),
    and the configurations no other one beats on both are joined as the front.

    \b
    Example:
      cosmosage sweep tradeoff runs/sweeps/study/facts/* --x general --y held_out \\
        --goal-x 0.95 --goal-y 0.95 --out docs/study-facts-tradeoff.png
    """
    from cosmosage.tools.run.sweep_tradeoff import tradeoff

    result = tradeoff(list(sweep_dirs), x, y, out, (goal_x, goal_y), list(skip))
    click.echo(result["files"][1].read_text())
    click.echo("front: " + "; ".join(p.label for p in result["front"]))
    click.echo("wrote " + ", ".join(str(f) for f in result["files"]))


COMMANDS = [sweep_run, sweep_report, sweep_tradeoff]
