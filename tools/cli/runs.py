"""`cosmosage runs list | tree`: finished runs and the model family tree."""

from __future__ import annotations

from pathlib import Path

import click

from cosmosage.tools import paths
from cosmosage.tools.cli.common import runs_dir_option


@click.command("list")
@runs_dir_option
def runs_list(runs_dir: Path | None) -> None:
    """Every finished stage in the registry."""
    from cosmosage.tools.run import registry

    where = paths.runs_dir(runs_dir)
    records = list(registry.records(where))
    if not records:
        click.echo(f"no finished stage in {registry.registry_path(where)} yet", err=True)
    for r in records:
        loss = r.get("metrics", {}).get("eval_loss_best")
        fields = [f"eval_loss={registry.loss_text(loss)}"] if loss is not None else []
        fields += [scores] if (scores := registry.score_text(r)) else []
        click.echo(f"{r['run_id']:40}  {r['recipe']:28}  {'  '.join([*fields, r['model']])}")


@click.command("tree")
@runs_dir_option
def runs_tree(runs_dir: Path | None) -> None:
    """The lineage of every model: each under the model it started from."""
    from cosmosage.tools.run import registry

    where = paths.runs_dir(runs_dir)
    lines = list(registry.tree(where))
    if not lines:
        click.echo(f"no finished stage in {registry.registry_path(where)} yet", err=True)
    for line in lines:
        click.echo(line)


COMMANDS = [runs_list, runs_tree]
