"""Model soups: weighted averages of models of one architecture, made by mergekit.

    linear      sum_i w_i * theta_i (mergekit divides by sum_i w_i)
    ties        base + the task vectors theta_i - base, each trimmed to its `density`
                largest entries, signs elected, then weighted
    dare_ties   as ties, with random dropping (and rescaling) instead of trimming

The mergekit YAML that made a soup is written beside it (`OUT.mergekit.yaml`, or the
path given), with mergekit's log; `soup_entry` turns the result into a registry record
with every parent, so `cosmosage runs tree` shows the soup under each model it mixes.
mergekit is an optional extra: `pip install -e '.[merge]'`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from cosmosage.dataprep.env import child_env
from cosmosage.dataprep.records import DataError
from cosmosage.tools.models.hub import REPO_ID_RE

METHODS = ("linear", "ties", "dare_ties")
NEEDS_BASE = ("ties", "dare_ties")
DEFAULT_DENSITY = 0.5


class SoupError(DataError):
    """A soup could not be made; the message says why (and where mergekit's log is)."""


@dataclass(frozen=True)
class Ingredient:
    model: str  # a model folder or a Hub id
    weight: float


def parse_ingredient(spec: str) -> Ingredient:
    """`MODEL:WEIGHT` (split at the last colon) -> Ingredient."""
    model, sep, weight = spec.rpartition(":")
    try:
        value = float(weight)
    except ValueError:
        value = None
    if not sep or not model or value is None:
        raise SoupError(f"--model {spec!r}: expected MODEL:WEIGHT, e.g. runs/x/model:0.75")
    return Ingredient(model, value)


def model_ref(model: str | Path) -> str:
    """A local folder as an absolute path (so registry records match); a Hub id as it is."""
    path = Path(model)
    return str(path.resolve()) if path.exists() else str(model)


def check_model(model: str, option: str = "") -> None:
    """A soup's model is a model folder (config.json in it) or a Hub id ORG/NAME that is in
    the Hugging Face cache or, when online, on the Hub; anything else fails here, before
    mergekit starts. `option` (`--model`) names where the model was given."""
    name = f"{option} {model}" if option else model
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SoupError(f"{name}: not a model folder (no config.json)")
        return
    if not REPO_ID_RE.fullmatch(model) or path.exists():
        raise SoupError(f"{name}: no such model folder, and not a Hub id ORG/NAME")
    if path.parent.is_dir():  # `build/nope`: a mistyped folder, not the Hub's org `build`
        raise SoupError(
            f"{name}: no such model folder ({path.parent}/ is a folder here, so it is not "
            "taken for a Hub id ORG/NAME)"
        )
    why = hub_missing(model)
    if why:
        raise SoupError(f"{name}: not a local folder, and {why}")


def hub_missing(repo: str) -> str | None:
    """Why the Hub id `repo` cannot be read (None when it can): its config.json is in the
    Hugging Face cache, or else (unless HF_HUB_OFFLINE) the Hub answers for it."""
    from huggingface_hub import (
        get_hf_file_metadata,
        hf_hub_url,
        is_offline_mode,
        try_to_load_from_cache,
    )
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        RepositoryNotFoundError,
    )

    if isinstance(try_to_load_from_cache(repo, "config.json"), str):
        return None
    if is_offline_mode():
        return "the Hub id is not in the Hugging Face cache (HF_HUB_OFFLINE is set)"
    try:
        get_hf_file_metadata(hf_hub_url(repo, "config.json"), timeout=10)
    except GatedRepoError:
        return "the Hub id is gated: accept its terms on the Hub and log in (hf auth login)"
    except (RepositoryNotFoundError, EntryNotFoundError):
        return "the Hub has no model of that id (or it is private)"
    except Exception:  # noqa: BLE001 - no network, a proxy, a timeout: all one answer
        return "the Hub id is not in the cache and could not be reached (offline?)"
    return None


def mergekit_config(
    ingredients: list[Ingredient],
    method: str,
    base: str | None = None,
    density: float | None = None,
    dtype: str | None = None,
) -> dict:
    """The mergekit YAML (as a dict) for a soup; checks the choice of method and weights."""
    if method not in METHODS:
        raise SoupError(f"unknown soup method {method!r}: choose one of {', '.join(METHODS)}")
    if not ingredients:
        raise SoupError("a soup needs at least one --model MODEL:WEIGHT")
    if any(i.weight < 0 for i in ingredients) or not any(i.weight > 0 for i in ingredients):
        raise SoupError("soup weights must be >= 0 and not all 0")
    if method in NEEDS_BASE and not base:
        raise SoupError(f"{method} mixes task vectors against a base model: give --base BASE")
    if method == "linear" and base:
        raise SoupError("linear soups take no --base (it averages the models themselves)")
    if method == "linear" and len(ingredients) < 2:
        raise SoupError("a linear soup needs at least two models")
    models = []
    for i in ingredients:
        params: dict = {"weight": i.weight}
        if method in NEEDS_BASE:
            params["density"] = DEFAULT_DENSITY if density is None else density
        models.append({"model": model_ref(i.model), "parameters": params})
    cfg: dict = {"merge_method": method, "models": models}
    if base:
        cfg["base_model"] = model_ref(base)
    if dtype:
        cfg["dtype"] = dtype
    return cfg


def mergekit_bin() -> str:
    exe = Path(sys.executable).parent / "mergekit-yaml"
    if exe.exists():
        return str(exe)
    found = shutil.which("mergekit-yaml")
    if not found:
        raise SoupError("mergekit is not installed: pip install -e '.[merge]' (mergekit==0.1.5)")
    return found


def mergekit_argv(config_path: str | Path, out: str | Path) -> list[str]:
    """The command that makes the soup; seeded, so dare_ties' random drops are repeatable."""
    return [
        mergekit_bin(),
        str(config_path),
        str(out),
        "--copy-tokenizer",
        "--no-write-model-card",
        "--random-seed",
        "0",
    ]


def config_digest(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def _env(cfg: dict) -> dict[str, str]:
    refs = [m["model"] for m in cfg["models"]] + [cfg.get("base_model") or "/"]
    return child_env(local=all(Path(r).exists() for r in refs))


def make_soup(
    ingredients: list[Ingredient],
    method: str,
    out: str | Path,
    base: str | None = None,
    density: float | None = None,
    dtype: str | None = None,
    config_path: str | Path | None = None,
    options: tuple[str, str] = ("--model", "--base"),
) -> dict:
    """Write the mergekit YAML, run mergekit into OUT (through OUT.tmp, so a failed soup
    leaves no half folder) and return what was made: model, parents, weights, config.
    Every model is checked first (nothing is written for a refused soup); `options` name
    where the models and the base were given, for the errors."""
    out = Path(out)
    cfg = mergekit_config(ingredients, method, base, density, dtype)
    for model in [i.model for i in ingredients]:
        check_model(str(model), options[0])
    if base:
        check_model(str(base), options[1])
    config_path = Path(config_path or out.with_name(out.name + ".mergekit.yaml"))
    log_path = config_path.with_suffix(".log")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(
        "# model soup: mergekit-yaml THIS_FILE OUT --copy-tokenizer\n"
        + yaml.safe_dump(cfg, sort_keys=False)
    )
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    argv = mergekit_argv(config_path, tmp)
    t0 = time.time()
    with open(log_path, "wb") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=_env(cfg)).returncode
    if rc != 0 or not any(tmp.glob("*.safetensors")):
        lines = log_path.read_text(errors="replace").splitlines()[-15:]
        shutil.rmtree(tmp, ignore_errors=True)
        raise SoupError(
            f"mergekit failed (exit {rc}) for {config_path}; last lines of {log_path}:\n"
            + "\n".join(lines)
        )
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    parents = [m["model"] for m in cfg["models"]]
    if cfg.get("base_model") and cfg["base_model"] not in parents:
        parents.append(cfg["base_model"])
    return {
        "model": str(out.resolve()),
        "method": method,
        "parents": parents,
        "weights": [m["parameters"]["weight"] for m in cfg["models"]],
        "base": cfg.get("base_model"),
        "config": str(config_path.resolve()),
        "config_hash": config_digest(cfg),
        "wall_s": round(time.time() - t0, 1),
    }


def soup_entry(made: dict, recipe: str = "soup") -> dict:
    """A registry / run-record stage entry for a soup: every parent, the first as
    parent_model (what single-parent readers follow); no training metrics."""
    soup = {"method": made["method"], "weights": made["weights"], "config": made["config"]}
    if made.get("base"):
        soup["base"] = made["base"]
    return {
        "status": "complete",
        "recipe": recipe,
        "parent_model": made["parents"][0],
        "parents": list(made["parents"]),
        "soup": soup,
        "model": made["model"],
        "data": {},
        "metrics": {
            "eval_loss_before": None,
            "eval_loss_best": None,
            "final_train_loss": None,
            "steps": 0,
            "wall_s": made["wall_s"],
        },
        "best_checkpoint": None,
    }
