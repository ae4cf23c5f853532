"""Every local dataset and model the config names exists, or a build makes it."""

from __future__ import annotations

from pathlib import Path

from cosmosage.tools.recipe.check.base import Problem

# --------------------------------------------------------------------------- files


def _local(path: str | None, root: Path) -> Path | None:
    if not path:
        return None
    p = Path(path)
    p = p if p.is_absolute() else root / p
    return p


def build_outputs(meta: dict) -> set[str]:
    """Every path that a `recipe.builds` entry makes (`output` plus `extra_outputs`)."""
    out = set()
    for b in meta.get("builds") or []:
        out.add(str(b["output"]))
        out.update(str(x) for x in b.get("extra_outputs") or [])
    return out


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "build/", "samples/", "runs/")) or Path(path).suffix in {
        ".json",
        ".jsonl",
        ".parquet",
        ".csv",
        ".arrow",
    }


def check_files(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    """Local dataset files and model folders exist, or the recipe says how to build them."""
    builds = build_outputs(meta)
    problems = []
    paths = []
    for group in ("datasets", "test_datasets"):
        for i, ds in enumerate(cfg.get(group) or []):
            if isinstance(ds, dict) and ds.get("path") and _looks_local(str(ds["path"])):
                paths.append((f"{group}[{i}].path", str(ds["path"])))
    base = cfg.get("base_model")
    if base and _looks_local(str(base)) and not str(base).startswith("<"):
        paths.append(("base_model", str(base)))
    for field_name, path in paths:
        if _local(path, root).exists():
            continue
        if path in builds:
            continue  # `recipe run` builds it first
        hint = ""
        if path.startswith("build/data"):
            hint = " (make it with a `cosmosage data ...` command, or add it to `recipe.builds`)"
        problems.append(Problem("files", f"{field_name}: {path} does not exist{hint}"))
    return problems
