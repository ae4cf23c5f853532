"""`cosmosage model tiny | eval | publish`: build, evaluate and publish models."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("tiny")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--vocab-size", type=int, default=1024, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even if an identical model exists.")
def model_tiny(inputs, out, vocab_size, seed, force) -> None:
    """Build a tiny Llama-style model (tokenizer trained on INPUTS) offline, for CPU runs and tests."""
    from cosmosage.tools.models.tiny import build_tiny_model

    info = build_tiny_model(list(inputs), out, seed=seed, force=force, vocab_size=vocab_size)
    click.echo(
        f"{'reused' if info['reused'] else 'built'} {out}: {info['params']:,} parameters, vocab {info['vocab_size']}"
    )


@click.command("eval")
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
    from cosmosage.tools.models.evaluate import evaluate, report_markdown

    named = dict(m.split("=", 1) if "=" in m else (Path(m).name, m) for m in models)
    res = evaluate(named, list(suites), max_new_tokens)
    report = report_markdown(res)
    if out:
        Path(out).write_text(report)
    click.echo(report)


@click.command("publish")
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
    from cosmosage.tools.models.publish import publish

    url = publish(folder, repo_id, private=private, endpoint=endpoint)
    click.echo(f"published {folder} -> {url}")


COMMANDS = [model_tiny, model_eval, model_publish]
