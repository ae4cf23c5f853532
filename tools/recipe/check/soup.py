"""A soup stage (`recipe.soup`): the block's shape, method, weights and base as mergekit
will get them, and each model a recipe, an existing folder or a Hub id.
tools/run/soup_stage.py makes the soup."""

from __future__ import annotations

from pathlib import Path

from cosmosage.dataprep.records import DataError
from cosmosage.tools.models import soup
from cosmosage.tools.models.hub import REPO_ID_RE
from cosmosage.tools.recipe.check.base import Problem
from cosmosage.tools.recipe.check.select import check_rule
from cosmosage.tools.recipe.render import Rendered, recipes_dir


def soup_block(name: str, spec: dict) -> tuple[list[tuple[str, float]], str | None, dict]:
    """`recipe.soup` -> ([(model, weight)], base model or None, the other keyword
    arguments of soup.make_soup), the models as written (a recipe, a folder, a Hub id)."""
    try:
        models = [(str(m["model"]), float(m["weight"])) for m in spec.get("models") or []]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{name}: recipe.soup.models must be a list of {{model: NAME, weight: W}}"
        ) from exc
    base = spec.get("base")
    options = {
        "method": spec.get("method", "linear"),
        "density": spec.get("density"),
        "dtype": spec.get("dtype"),
    }
    return models, str(base) if base else None, options


def check_soup(r: Rendered, root: Path) -> list[Problem]:
    """`recipe check` of a soup stage. A recipe with no finished run yet is fine here
    (its run, or this pipeline's stage of it, makes the model)."""
    spec = r.meta.get("soup")
    if not isinstance(spec, dict):
        return [Problem("soup", "recipe.soup must be a mapping (method, models, base)")]
    refs = [str(m.get("model")) for m in spec.get("models") or [] if isinstance(m, dict)]
    refs += [str(spec["base"])] if spec.get("base") else []
    problems = []
    for ref in refs:
        local = Path(ref) if Path(ref).is_absolute() else root / ref
        if (recipes_dir(root) / f"{ref}.yaml").is_file() or local.exists():
            continue
        if REPO_ID_RE.fullmatch(ref) and not ref.startswith(("build/", "runs/")):
            problems.append(Problem("soup", f"{ref}: a Hub id, fetched by mergekit", "info"))
        else:
            problems.append(Problem("soup", f"{ref}: no such recipe, model folder or Hub id"))
    try:
        models, base, options = soup_block(r.name, spec)
        ingredients = [soup.Ingredient(_written(m, root), w) for m, w in models]
        soup.mergekit_config(ingredients, base=_written(base, root) if base else None, **options)
    except (DataError, soup.SoupError) as exc:
        problems.append(Problem("soup", str(exc).removeprefix(f"{r.name}: ")))
    if spec.get("weights") is not None:
        try:
            check_rule(spec.get("select"), "recipe.soup.select", soup=True)
            if not all(isinstance(w, int | float) and 0 <= w <= 1 for w in spec["weights"]):
                raise DataError("recipe.soup.weights: a list of numbers from 0 to 1")
        except DataError as exc:
            problems.append(Problem("soup", str(exc)))
    return problems


def _written(ref: str, root: Path) -> str:
    """A model as the check hands it to mergekit's config: a recipe by its name, a local
    folder by its path, anything else (a Hub id) as written."""
    if (recipes_dir(root) / f"{ref}.yaml").is_file():
        return ref
    path = Path(ref) if Path(ref).is_absolute() else root / ref
    return str(path) if path.exists() else ref
