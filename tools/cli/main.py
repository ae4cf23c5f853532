"""The `cosmosage` command line: the groups, and the commands each module adds to them.

Noun then verb: `cosmosage recipe run quickstart` is `recipe_run` in tools/cli/recipe.py,
`cosmosage data convert` is `data_convert` in tools/cli/data_chat.py. Command modules
never import this module. Errors print one line (`--debug` shows the traceback).
"""

from __future__ import annotations

import click

from cosmosage.dataprep.env import no_telemetry
from cosmosage.tools.cli import (
    data_chat,
    data_corpus,
    data_papers,
    data_synth,
    model,
    recipe,
    runs,
    sweep,
)
from cosmosage.tools.cli import eval as eval_commands
from cosmosage.tools.cli.common import DefaultCommandGroup, Group

no_telemetry()  # before any command imports Axolotl (they import it when they run)


@click.group(cls=Group)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def main(debug: bool) -> None:
    """cosmosage: domain text in, small expert model out (Axolotl recipes, dataprep, runs).

    \b
    Examples:
      cosmosage recipe list
      cosmosage recipe run quickstart
      cosmosage data corpus samples/papers --tokenizer build/models/tiny-llama --sequence-len 128 --out corpus.jsonl
    """
    from cosmosage.tools.cli.quiet import quiet_libraries

    quiet_libraries()


@main.group("recipe")
def recipe_group() -> None:
    """List, render, check and run Axolotl recipes."""


@main.group("data", cls=Group, short_help="Prepare training data, with manifests.")
def data_group() -> None:
    """Prepare training data: completion corpora, chat records, synthetic Q&A; with manifests."""


@main.group("model")
def model_group() -> None:
    """Build, import, merge, quantize and publish models."""


@main.group("eval", cls=DefaultCommandGroup, short_help="Evaluate models and compare evaluations.")
def eval_group() -> None:
    """Evaluate models (scorers, multiple choice, perplexity, self-consistency, judge) and
    compare evaluations question by question. `cosmosage eval MODEL ...` is `cosmosage eval
    run MODEL ...`."""


@main.group("runs")
def runs_group() -> None:
    """Look at finished runs and the model family tree."""


@main.group("sweep", cls=DefaultCommandGroup, short_help="Train a recipe over a grid of settings.")
def sweep_group() -> None:
    """Train a recipe over a grid of settings (one run per combination) and compare the runs.
    `cosmosage sweep RECIPE ...` is `cosmosage sweep run RECIPE ...`."""


for _group, _modules in [
    (recipe_group, [recipe]),
    (data_group, [data_corpus, data_chat, data_synth, data_papers]),
    (model_group, [model]),
    (eval_group, [eval_commands]),
    (runs_group, [runs]),
    (sweep_group, [sweep]),
]:
    for _module in _modules:
        for _command in _module.COMMANDS:
            _group.add_command(_command)


if __name__ == "__main__":
    main()
