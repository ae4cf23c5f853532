"""A soup stage (`recipe.soup`): mergekit mixes models instead of Axolotl training one;
with `recipe.soup.weights` one soup per weight, and the `recipe.soup.select` rule
chooses the stage's model. `recipe check`'s side is tools/recipe/check/soup.py."""

from __future__ import annotations

import time
from pathlib import Path

from cosmosage.dataprep.io import write_json
from cosmosage.dataprep.records import DataError
from cosmosage.tools.models import soup
from cosmosage.tools.paths import StageFolder
from cosmosage.tools.recipe.check import soup_block
from cosmosage.tools.recipe.render import recipes_dir
from cosmosage.tools.run import registry
from cosmosage.tools.run.stage import Echo, LaunchError, Stage


def resolve_soup_model(ref: str, previous: dict[str, str], runs_dir: Path, root: Path) -> str:
    """A soup ingredient: a recipe name (this run's stage of it, else its latest finished
    run), a model folder (relative to the project) or a Hub id."""
    if ref in previous:
        return previous[ref]
    if (recipes_dir(root) / f"{ref}.yaml").is_file():
        found = registry.latest_model(runs_dir, ref)
        if found:
            return found
        raise LaunchError(
            f"the soup takes {ref}, which has no finished run yet: run `cosmosage recipe run {ref}` first"
        )
    path = Path(ref) if Path(ref).is_absolute() else root / ref
    return str(path) if path.exists() else ref


# where a soup stage's models are given, for make_soup's errors
OPTIONS = ("recipe.soup.models", "recipe.soup.base")


def soup_spec(
    stage: Stage, previous: dict[str, str], runs_dir: Path, root: Path
) -> tuple[list[soup.Ingredient], dict]:
    """`recipe.soup` -> (ingredients, keyword arguments of soup.make_soup), every model
    resolved to the folder or Hub id mergekit reads."""
    try:
        models, base, options = soup_block(stage.name, stage.rendered.meta["soup"])
    except DataError as exc:
        raise LaunchError(str(exc)) from exc
    ingredients = [
        soup.Ingredient(resolve_soup_model(m, previous, runs_dir, root), w) for m, w in models
    ]
    base = resolve_soup_model(base, previous, runs_dir, root) if base else None
    return ingredients, {**options, "base": base}


def soup_plan(
    stage: Stage, previous: dict[str, str], runs_dir: Path, root: Path, stage_dir: Path
) -> dict:
    """What a dry run shows for a soup stage: the mergekit command (as `make_soup` runs
    it) and config."""
    try:
        ingredients, kwargs = soup_spec(stage, previous, runs_dir, root)
        config = soup.mergekit_config(ingredients, **kwargs)
    except (LaunchError, soup.SoupError) as exc:
        config = {"error": str(exc)}
    folder = StageFolder(stage_dir)
    return {
        "argv": soup.mergekit_argv(folder.mergekit_config, folder.model),
        "config": config,
    }


def run_soup_stage(
    stage: Stage, previous: dict[str, str], runs_dir: Path, root: Path, stage_dir: Path, echo: Echo
) -> dict:
    """A stage whose `recipe.soup` names models and weights: mergekit instead of Axolotl;
    its model is then evaluated like any stage's."""
    ingredients, kwargs = soup_spec(stage, previous, runs_dir, root)
    spec = stage.rendered.meta["soup"]
    if spec.get("weights") is not None:
        return run_soup_selection(
            stage, ingredients, kwargs, previous, runs_dir, root, stage_dir, echo
        )
    mix = " + ".join(f"{i.weight:g} x {i.model}" for i in ingredients)
    echo(
        f"soup   {stage.name}: {kwargs['method']} of {mix}  (log: {StageFolder(stage_dir).mergekit_log})"
    )
    made = soup.make_soup(
        ingredients,
        out=StageFolder(stage_dir).model,
        config_path=StageFolder(stage_dir).mergekit_config,
        options=OPTIONS,
        **kwargs,
    )
    write_json(StageFolder(stage_dir).metrics, {"model": made["model"], "wall_s": made["wall_s"]})
    return soup.soup_entry(made, stage.name)


def run_soup_selection(
    stage: Stage,
    ingredients: list[soup.Ingredient],
    kwargs: dict,
    previous: dict[str, str],
    runs_dir: Path,
    root: Path,
    stage_dir: Path,
    echo: Echo,
) -> dict:
    """`recipe.soup.weights: [w, ...]` with `recipe.soup.select` (a rule as in
    recipe.select): one soup per weight w of the first model (the others share 1 - w in
    their given proportions), the rule picks which becomes the stage's model."""
    from cosmosage.tools.run.select import select_soup

    spec = stage.rendered.meta["soup"]
    rule = spec.get("select")
    if not isinstance(rule, dict) or len(ingredients) < 2:
        raise LaunchError(
            f"{stage.name}: recipe.soup.weights needs recipe.soup.select (suites, maximize, "
            "limits) and at least two models"
        )
    try:
        weights = [float(w) for w in spec["weights"]]
    except (TypeError, ValueError) as exc:
        raise LaunchError(f"{stage.name}: recipe.soup.weights must be a list of numbers") from exc
    rest = sum(i.weight for i in ingredients[1:]) or 1.0
    parent = resolve_soup_model(
        str(rule.get("parent", ingredients[-1].model)), previous, runs_dir, root
    )
    t0 = time.time()
    made: dict = {}

    def make(w: float, out: Path) -> str:
        mixed = [soup.Ingredient(ingredients[0].model, w)] + [
            soup.Ingredient(i.model, (1 - w) * i.weight / rest) for i in ingredients[1:]
        ]
        echo(f"soup   {stage.name}: weight {w:g} of {ingredients[0].model}")
        made[w] = soup.make_soup(
            mixed, out=out, config_path=out.with_suffix(".mergekit.yaml"), options=OPTIONS, **kwargs
        )
        return made[w]["model"]

    try:
        w, row = select_soup(weights, make, parent, rule, stage_dir, root, echo)
    except DataError as exc:
        raise LaunchError(f"{stage.name}: {exc}") from exc
    entry = {**made[w], "model": str(StageFolder(stage_dir).model)}
    write_json(
        StageFolder(stage_dir).metrics,
        {"model": entry["model"], "wall_s": round(time.time() - t0, 1), "selected": row},
    )
    return soup.soup_entry(entry, stage.name)
