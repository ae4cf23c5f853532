"""`cosmosage eval MODEL... --suite S` and `cosmosage eval compare A B`: evaluate model
folders, run folders or registry names side by side; compare two evaluations question
by question."""

from __future__ import annotations

from pathlib import Path

import click

from cosmosage.dataprep.records import DataError
from cosmosage.tools import paths
from cosmosage.tools.cli.common import runs_dir_option
from cosmosage.tools.eval.generation import PRESETS


@click.command("run", short_help="Evaluate models side by side.")
@click.argument("models", nargs=-1, required=True)
@click.option(
    "--suite",
    "suites",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Prompt suite YAML (repeat for several).",
)
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default="greedy",
    show_default=True,
    help="Generation preset (docs/evaluation.md); --set changes one of its settings.",
)
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a generation setting."
)
@click.option(
    "--grid", "axes", multiple=True, metavar="KEY=V1,V2", help="Evaluate over every combination."
)
@click.option(
    "--samples",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Self-consistency: sample each answer N more times and flag those that change.",
)
@click.option(
    "--mc",
    "benchmarks",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Multiple-choice benchmark JSONL, scored by log-likelihood.",
)
@click.option(
    "--mc-style",
    type=click.Choice(["options", "letters"]),
    default="options",
    show_default=True,
    help="How --mc asks: the option texts scored as answers (ARC style), or the options "
    "listed A., B., ... and their letters scored (MMLU / AstroMLab-1 style).",
)
@click.option(
    "--perplexity", "text", type=click.Path(exists=True, dir_okay=False), help="Held-out text."
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Ask only the first N prompts of each --suite (a quick try; the report says so).",
)
@click.option("--judge-url", default=None, help="OpenAI-compatible server of a judge model.")
@click.option("--judge-model", default=None, help="The judge's model name on that server.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for scores.json, report.md and plots [default: print the report only].",
)
@runs_dir_option
def eval_run(
    models,
    suites,
    preset,
    sets,
    axes,
    samples,
    benchmarks,
    mc_style,
    text,
    limit,
    judge_url,
    judge_model,
    out,
    runs_dir,
) -> None:
    """Evaluate models side by side (MODEL: a model folder, a run folder or a recipe name
    from the registry; LABEL=MODEL names it). Answers are kept in build/cache/answers/,
    per model files and request, so asking the same again generates nothing; a judge's
    verdicts beside the report (--out), else in build/cache/judge/. While a model answers,
    its progress (prompts done, rate, ETA) goes to stderr.

    \b
    Examples:
      cosmosage eval build/models/smollm2-135m-instruct runs/quickstart/<id> --suite samples/eval/general.yaml
      cosmosage eval base=build/models/tiny-llama quickstart --suite samples/eval/prompts.yaml --samples 5
      cosmosage eval quickstart --suite samples/eval/prompts.yaml --grid temperature=0.2,0.7 --out build/eval/grid
    """
    from cosmosage.tools.eval import generation
    from cosmosage.tools.recipe.render import parse_value
    from cosmosage.tools.run.side_by_side import (
        evaluate_side_by_side,
        resolve_model,
        write_outputs,
    )

    if not (suites or benchmarks or text):
        raise click.UsageError("nothing to evaluate: give --suite, --mc or --perplexity")
    if bool(judge_url) != bool(judge_model):
        raise click.UsageError("a judge needs both --judge-url and --judge-model")
    runs_dir = paths.runs_dir(runs_dir)
    named = dict(resolve_model(m, runs_dir) for m in models)
    overrides = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise DataError(f"--set {item!r}: expected key=value")
        overrides[key] = parse_value(value)
    settings = generation.preset(preset, **overrides)
    judge = None
    if judge_url and judge_model:
        from cosmosage.tools.eval.judge import make_judge

        # beside the report, else with the answer cache: never the current folder
        judge_cache = (out or paths.ROOT / "build" / "cache" / "judge") / "judge.jsonl"
        judge = make_judge(judge_url, judge_model, judge_cache)
    results = evaluate_side_by_side(
        named,
        list(suites),
        settings,
        list(axes),
        samples=samples,
        benchmarks=list(benchmarks),
        mc_style=mc_style,
        text=text,
        judge=judge,
        limit=limit,
        echo=click.echo,
    )
    if out:
        write_outputs(out, results)
        click.echo(f"wrote {out}/scores.json, report.md and plots")


@click.command("compare", short_help="Compare two evaluations question by question.")
@click.argument("a")
@click.argument("b")
@click.option("--label-a", default=None, help="Which model of A (default: its last).")
@click.option("--label-b", default=None, help="Which model of B (default: its last).")
def eval_compare(a, b, label_a, label_b) -> None:
    """What changed question by question between two evaluations (scores.json files or run
    folders): gained, lost, still wrong.

    A model's label is the one its evaluation gave it: in a run folder, `base` and each
    stage's folder (e.g. `lora-facts`); from `cosmosage eval`, LABEL of LABEL=MODEL, else
    the last two parts of a run folder (`lora-facts/<id>` for
    runs/smollm2/lora-facts/<id>), a model folder's name or the recipe name given. A
    scores.json lists them under "models".

    \b
    Examples:
      cosmosage eval compare runs/quickstart/<id-1> runs/quickstart/<id-2>
      cosmosage eval compare build/eval/x/scores.json build/eval/x/scores.json --label-a base --label-b quickstart/<id>
    """
    from cosmosage.tools.eval.compare import compare, compare_markdown, load_result, scores_file

    where = (scores_file(a), scores_file(b))
    diff = compare(load_result(a), load_result(b), label_a, label_b, where)
    click.echo(compare_markdown(diff))


COMMANDS = [eval_run, eval_compare]
