"""`cosmosage eval MODEL... --suite S` and `cosmosage eval compare A B`: evaluate model
folders, run folders or registry names side by side; compare two evaluations question
by question."""

from __future__ import annotations

from pathlib import Path

import click

from cosmosage.dataprep.io import DataError
from cosmosage.tools import paths
from cosmosage.tools.cli.common import runs_dir_option
from cosmosage.tools.paths import RunFolder


def resolve_model(spec: str, runs_dir: Path) -> tuple[str, str]:
    """LABEL=WHAT or WHAT, where WHAT is a model folder, a run folder (its final model) or
    a recipe name in the registry (its newest model) -> (label, model folder)."""
    from cosmosage.tools.run import registry

    label, _, what = spec.rpartition("=") if "=" in spec else ("", "", spec)
    p = Path(what)
    if RunFolder.is_run(p):
        if not (final := RunFolder(p).final_model()):
            raise DataError(f"{what}: this run has no finished stage")
        return label or f"{p.parent.name}/{p.name}", final
    if (p / "config.json").is_file():
        return label or p.name, str(p)
    if found := registry.latest_model(runs_dir, what):
        return label or what, found
    raise DataError(
        f"{what}: not a model folder, a run folder or a recipe with a finished run in "
        f"{runs_dir / 'registry.jsonl'}"
    )


@click.command("run")
@click.argument("models", nargs=-1, required=True)
@click.option(
    "--suite",
    "suites",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Prompt suite YAML (repeat for several).",
)
@click.option("--preset", default="greedy", show_default=True, help="Generation preset.")
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a generation setting."
)
@click.option(
    "--grid", "axes", multiple=True, metavar="KEY=V1,V2", help="Evaluate over every combination."
)
@click.option(
    "--samples",
    type=int,
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
@click.option("--mc-style", type=click.Choice(["options", "letters"]), default="options")
@click.option(
    "--perplexity", "text", type=click.Path(exists=True, dir_okay=False), help="Held-out text."
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
    judge_url,
    judge_model,
    out,
    runs_dir,
) -> None:
    """Evaluate models side by side (MODEL: a model folder, a run folder or a recipe name
    from the registry; LABEL=MODEL names it).

    \b
    Examples:
      cosmosage eval build/models/smollm2-135m-instruct runs/quickstart/<id> --suite samples/eval/general.yaml
      cosmosage eval base=build/models/tiny-llama quickstart --suite samples/eval/prompts.yaml --samples 5
      cosmosage eval quickstart --suite samples/eval/prompts.yaml --grid temperature=0.2,0.7 --out build/eval/grid
    """
    from cosmosage.tools.eval import generation
    from cosmosage.tools.eval.evaluate import evaluate
    from cosmosage.tools.eval.report import report_markdown
    from cosmosage.tools.paths import ROOT
    from cosmosage.tools.recipe.render import parse_value

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

        judge = make_judge(judge_url, judge_model, (out or Path("build/eval")) / "judge.jsonl")
    results = []
    for point in generation.grid(settings, list(axes)):
        res = (
            evaluate(
                named,
                list(suites),
                point,
                samples=samples,
                judge=judge,
                cache_dir=ROOT / "build" / "cache" / "answers",
            )
            if suites
            else {
                "suites": [],
                "preset": point,
                "models": named,
                "scores": {m: {} for m in named},
                "answers": [],
            }
        )
        extra_scores(res, named, benchmarks, mc_style, text)
        results.append(res)
        click.echo(report_markdown(res, f"Evaluation ({point['name']})").split("## Answers")[0])
    if out:
        write_outputs(out, results)
        click.echo(f"wrote {out}/scores.json, report.md and plots")


def extra_scores(res: dict, named: dict, benchmarks, mc_style: str, text: str | None) -> None:
    for bench in benchmarks:
        from cosmosage.tools.eval.multiple_choice import run_mc

        name = Path(bench).stem
        for label, path in named.items():
            mc = run_mc(path, bench, style=mc_style)
            res.setdefault("multiple_choice", {}).setdefault(name, {})[label] = mc
            res["scores"][label][f"mc:{name}"] = mc["acc_norm"]
    if text:
        from cosmosage.tools.eval.perplexity import perplexity

        for label, path in named.items():
            res["scores"][label]["ppl"] = round(perplexity(path, text)["perplexity"], 4)


def write_outputs(out: Path, results: list[dict]) -> None:
    from cosmosage.dataprep.io import write_json, write_text
    from cosmosage.tools.eval import plots
    from cosmosage.tools.eval.report import report_markdown
    from cosmosage.tools.run.evaluation import SCORE_PLOT, extra_tables, mc_metrics

    write_json(out / "scores.json", results[0] if len(results) == 1 else {"grid": results})
    parts = []
    for i, res in enumerate(results):
        suffix = "" if len(results) == 1 else f"-{i}"
        png = plots.plot_scores(
            res["scores"],
            SCORE_PLOT + mc_metrics(res),
            out / f"scores{suffix}.png",
            title=f"Scores ({res['preset']['name']})",
        )
        parts.append(report_markdown(res, f"Evaluation ({res['preset']['name']})"))
        parts.append(f"![scores]({png.name})\n\n" + "\n".join(extra_tables(res)))
        if c := res.get("consistency"):
            plots.plot_calibration(c["calibration"], out / f"calibration{suffix}.png", c["auroc"])
    write_text(out / "report.md", "\n\n".join(parts))


@click.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--label-a", default=None, help="Which model of A (default: its last).")
@click.option("--label-b", default=None, help="Which model of B (default: its last).")
def eval_compare(a, b, label_a, label_b) -> None:
    """What changed question by question between two evaluations (scores.json files or run
    folders): gained, lost, still wrong.

    \b
    Example:
      cosmosage eval compare runs/quickstart/<id-1> runs/quickstart/<id-2>
      cosmosage eval compare build/eval/x/scores.json build/eval/x/scores.json --label-a base --label-b final
    """
    from cosmosage.tools.eval.compare import compare, compare_markdown, load_result

    click.echo(compare_markdown(compare(load_result(a), load_result(b), label_a, label_b)))


COMMANDS = [eval_run, eval_compare]
