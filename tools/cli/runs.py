"""`cosmosage runs list | tree`: finished runs and the model family tree."""

from __future__ import annotations

from pathlib import Path

import click

from cosmosage.tools.cli.common import runs_dir_option
from cosmosage.tools.recipe.render import ROOT


@click.command("list")
@runs_dir_option
def runs_list(runs_dir: Path | None) -> None:
    """Every finished stage in the registry."""
    from cosmosage.tools.run import registry

    for r in registry.records(runs_dir or ROOT / "runs"):
        loss = r.get("metrics", {}).get("eval_loss_best")
        scores = registry.score_text(r)
        click.echo(
            f"{r['run_id']:40}  {r['recipe']:28}  eval_loss={loss}  {scores + '  ' if scores else ''}"
            f"{r['model']}"
        )


@click.command("tree")
@runs_dir_option
def runs_tree(runs_dir: Path | None) -> None:
    """The lineage of every model: each under the model it started from."""
    from cosmosage.tools.run import registry

    for line in registry.tree(runs_dir or ROOT / "runs"):
        click.echo(line)


COMMANDS = [runs_list, runs_tree]
