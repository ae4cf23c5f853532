"""The `cosmosage` command line: a thin click layer over plain functions.

Noun then verb: `cosmosage recipe run quickstart`, `cosmosage data corpus ...`.
Errors print one line (`--debug` shows the traceback).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from dataprep.io import DataError
from tools.recipes import ROOT, RecipeError

EXPECTED_ERRORS = (RecipeError, DataError, FileNotFoundError, ValueError)


class Group(click.Group):
    """Turns our expected errors into one clear message unless --debug is on."""

    def invoke(self, ctx: click.Context):
        from tools.launcher import LaunchError

        try:
            return super().invoke(ctx)
        except (*EXPECTED_ERRORS, LaunchError) as exc:
            if ctx.find_root().params.get("debug"):
                raise
            raise click.ClickException(str(exc)) from exc


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
    from tools.quiet import quiet_libraries

    quiet_libraries()


# --------------------------------------------------------------------------- recipe


@main.group(cls=Group)
def recipe() -> None:
    """List, render, check and run Axolotl recipes."""


@recipe.command("list")
def recipe_list() -> None:
    """A table of every recipe: name, method, model, hardware, description."""
    from tools.recipes import describe, list_recipes

    rows = [describe(n) for n in list_recipes()]
    cols = ["name", "method", "model", "hardware", "description"]
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in cols[:-1]}
    click.echo("  ".join(c.upper().ljust(widths.get(c, 0)) for c in cols))
    for r in rows:
        click.echo("  ".join(r[c].ljust(widths.get(c, 0)) for c in cols))


set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a key (dotted paths for nested keys; recipe.* for the recipe block).",
)
unset_option = click.option("--unset", "unsets", multiple=True, metavar="KEY", help="Remove a key.")


@recipe.command("render")
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
    from tools.recipes import render, to_yaml

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


@recipe.command("check")
@click.argument("names", nargs=-1, required=True)
@set_option
@unset_option
def recipe_check(names: tuple[str, ...], sets: tuple[str, ...], unsets: tuple[str, ...]) -> None:
    """Validate recipes without training or downloading; list every problem.

    Runs Axolotl's own schema validation and adds what Axolotl cannot know: keys it
    would silently drop, pad token equal to eos, chat data without a template, missing
    data files, CUDA-only options on the cpu profile, models too large for the hardware.
    """
    from tools.check import check_rendered
    from tools.recipes import render

    failed = 0
    for name in names:
        top = render(name, list(sets), list(unsets))
        stages = [(s, render(s, list(sets), list(unsets))) for s in top.stages] or [(name, top)]
        for stage_name, r in stages:
            problems = check_rendered(r)
            errors = [p for p in problems if p.severity == "error"]
            status = "FAIL" if errors else "ok"
            click.echo(f"{status:4}  {stage_name}")
            for p in problems:
                click.echo(f"      {p}")
            failed += bool(errors)
    if failed:
        raise click.ClickException(f"{failed} recipe(s) failed their checks")


@recipe.command("run")
@click.argument("name")
@set_option
@unset_option
@click.option(
    "--dry-run", is_flag=True, help="Render, plan and print the commands; build and train nothing."
)
@click.option("--resume", is_flag=True, help="Continue the newest unfinished run of NAME.")
@click.option(
    "--runs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where run folders and the registry live [default: ./runs in the project].",
)
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
    from tools.launcher import run_recipe
    from tools.recipes import to_yaml

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
    click.echo((Path(result["run_dir"]) / "summary.md").read_text())


# --------------------------------------------------------------------------- data


@main.group(cls=Group)
def data() -> None:
    """Prepare training data: completion corpora and chat records, with manifests."""


@data.command("corpus")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output JSONL ({'text': ...} per line).",
)
@click.option(
    "--tokenizer",
    required=True,
    help="Tokenizer (model folder or Hub id) the chunks are measured with.",
)
@click.option(
    "--sequence-len",
    type=int,
    required=True,
    help="Training sequence length; chunks fit in it with BOS/EOS.",
)
@click.option(
    "--val-out", type=click.Path(dir_okay=False), help="Validation JSONL (whole documents)."
)
@click.option("--val-fraction", type=float, default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def data_corpus(inputs, out, tokenizer, sequence_len, val_out, val_fraction, seed) -> None:
    """Documents (md, mmd, txt, tex; files or folders) -> chunked completion JSONL."""
    from dataprep.build import build_corpus

    res = build_corpus(list(inputs), out, tokenizer, sequence_len, val_out, val_fraction, seed)
    click.echo(json.dumps(res))


@data.command("chat")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output JSONL ({'messages': [...]} per line).",
)
@click.option("--val-out", type=click.Path(dir_okay=False))
@click.option("--val-fraction", type=float, default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--system-prompt", default=None, help="System message added where a record has none.")
def data_chat(inputs, out, val_out, val_fraction, seed, system_prompt) -> None:
    """ShareGPT / Alpaca / messages JSONL -> chat JSONL; bad records go to the rejects file."""
    from dataprep.build import build_chat

    res = build_chat(list(inputs), out, val_out, val_fraction, seed, system_prompt)
    click.echo(json.dumps(res))


# --------------------------------------------------------------------------- model


@main.group(cls=Group)
def model() -> None:
    """Build, evaluate and publish models."""


@model.command("tiny")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--vocab-size", type=int, default=1024, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even if an identical model exists.")
def model_tiny(inputs, out, vocab_size, seed, force) -> None:
    """Build a tiny Llama-style model (tokenizer trained on INPUTS) offline, for CPU runs and tests."""
    from tools.tinymodel import build_tiny_model

    info = build_tiny_model(list(inputs), out, seed=seed, force=force, vocab_size=vocab_size)
    click.echo(
        f"{'reused' if info['reused'] else 'built'} {out}: {info['params']:,} parameters, vocab {info['vocab_size']}"
    )


@model.command("eval")
@click.argument("models", nargs=-1, required=True)
@click.option(
    "--prompts",
    "suites",
    required=True,
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Prompt suite YAML (repeat for several).",
)
@click.option("--max-new-tokens", type=int, default=48, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write the Markdown report here.")
def model_eval(models, suites, max_new_tokens, out) -> None:
    """Ask prompt suites of one or more local models (LABEL=PATH or PATH).

    \b
    Example:
      cosmosage model eval base=build/models/tiny-llama final=runs/quickstart/<id>/instruct/model \\
          --prompts samples/eval/prompts.yaml --prompts build/data/quickstart/facts/recall.yaml
    """
    from tools.evaluate import evaluate, report_markdown

    named = dict(m.split("=", 1) if "=" in m else (Path(m).name, m) for m in models)
    res = evaluate(named, list(suites), max_new_tokens)
    report = report_markdown(res)
    if out:
        Path(out).write_text(report)
    click.echo(report)


@model.command("publish")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--repo-id", required=True, help="Hub repository, e.g. you/cosmosage-tiny.")
@click.option("--private", is_flag=True)
@click.option(
    "--endpoint", default=None, help="Hub endpoint (defaults to HF_ENDPOINT or the public Hub)."
)
def model_publish(folder, repo_id, private, endpoint) -> None:
    """Upload a publish folder (model + README.md card) with huggingface_hub.

    The token comes from HF_TOKEN or `hf auth login`; it is never printed.
    """
    from tools.publish import publish

    url = publish(folder, repo_id, private=private, endpoint=endpoint)
    click.echo(f"published {folder} -> {url}")


# --------------------------------------------------------------------------- runs


@main.group(cls=Group)
def runs() -> None:
    """Look at finished runs and the model family tree."""


runs_dir_option = click.option(
    "--runs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where run folders and the registry live [default: ./runs in the project].",
)


@runs.command("list")
@runs_dir_option
def runs_list(runs_dir: Path | None) -> None:
    """Every finished stage in the registry."""
    from tools import registry

    for r in registry.records(runs_dir or ROOT / "runs"):
        loss = r.get("metrics", {}).get("eval_loss_best")
        click.echo(f"{r['run_id']:40}  {r['recipe']:28}  eval_loss={loss}  {r['model']}")


@runs.command("tree")
@runs_dir_option
def runs_tree(runs_dir: Path | None) -> None:
    """The lineage of every model: each under the model it started from."""
    from tools import registry

    for line in registry.tree(runs_dir or ROOT / "runs"):
        click.echo(line)


# Command modules by area add their commands to the groups above.
# (one import per area; each module registers with @data.command / @model.command)
import tools.cli_chat  # noqa: E402,F401
import tools.cli_corpus  # noqa: E402,F401
import tools.cli_synth  # noqa: E402,F401
