"""`cosmosage eval MODEL...`: models side by side on the same suites, generation
settings (or a grid of them), multiple-choice benchmarks and perplexity; the report and
plots in one folder. A model is named by its folder, its run or its recipe."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cosmosage.dataprep.records import DataError
from cosmosage.tools.paths import ROOT, RunFolder
from cosmosage.tools.run import registry


def resolve_model(spec: str, runs_dir: Path) -> tuple[str, str]:
    """LABEL=WHAT or WHAT, where WHAT is a model folder, a run folder (its final model) or
    a recipe name in the registry (its newest model) -> (label, model folder)."""
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


def evaluate_side_by_side(
    named: dict[str, str],
    suites: list[str],
    settings: dict,
    axes: list[str],
    *,
    samples: int = 0,
    benchmarks: list[str] = (),
    mc_style: str = "options",
    text: str | None = None,
    judge=None,
    limit: int | None = None,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """One result per point of the settings grid (`axes`), each echoed as its report;
    `limit` asks only the first prompts of each suite."""
    from cosmosage.tools.eval import generation
    from cosmosage.tools.eval.evaluate import score_models
    from cosmosage.tools.eval.report import report_markdown

    results = []
    for point in generation.grid(settings, list(axes)):
        res = (
            score_models(
                named,
                list(suites),
                point,
                samples=samples,
                judge=judge,
                cache_dir=ROOT / "build" / "cache" / "answers",
                limit=limit,
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
        echo(report_markdown(res, f"Evaluation ({point['name']})").split("## Answers")[0])
        from cosmosage.tools.run.evaluation import extra_tables

        if tables := extra_tables(res):  # multiple choice, drift, perplexity
            echo("\n".join(tables))
    return results


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
