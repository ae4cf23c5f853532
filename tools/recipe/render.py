"""Recipes: find, load and render.

A recipe is a YAML file of Axolotl keys plus a reserved `recipe:` block:

    recipe:
      description: one line for `recipe list`
      extends: [models/tiny-llama, methods/lora, hardware/cpu]   # fragments in recipes/_base/
      parent: quickstart/pretrain      # optional: base_model is that recipe's trained output
      stages: [a/b, a/c]               # optional: a pipeline of other recipes, run in order
      builds: [{output: ..., command: [...]}]   # files this recipe needs and how to make them
      choices:                         # optional: named bundles of keys, one per axis...
        method:
          lora-r8: {adapter: lora, lora_r: 8, lora_alpha: 16, learning_rate: 1.0e-3}
          full: {adapter: null, learning_rate: 1.0e-4, recipe: {method: full}}
      choose: {method: lora-r8}        # ...and which bundle each axis takes
      lr_scale: 2                      # optional: learning_rate x this, after everything
      env: {TORCH_COMPILE_DISABLE: "1"}  # optional: variables of the training process

Rendering deep-merges the fragments (in order), then the recipe, then the chosen bundle
of each axis, then `--set`/`--unset` overrides; a key set to null removes what an earlier
layer gave it. `--set recipe.choose.method=full` picks another bundle, so a sweep can
compare methods whose keys go together (`--grid recipe.choose.method=lora-r8,full`), and
`recipe.lr_scale` scales whatever learning rate each bundle sets. The `recipe:` block is merged the same way (with `builds` concatenated) and is
returned as metadata; it never reaches Axolotl. `render` is pure: it reads files only.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cosmosage.dataprep.records import DataError, load_yaml_text
from cosmosage.tools.errors import RecipeError
from cosmosage.tools.paths import ROOT

BASE_DIR_NAME = "_base"
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass
class Rendered:
    name: str
    config: dict  # what Axolotl gets
    meta: dict  # the merged `recipe:` block
    files: list[str] = field(default_factory=list)  # every file that went into it

    @property
    def stages(self) -> list[str]:
        return list(self.meta.get("stages") or [])

    @property
    def is_pipeline(self) -> bool:
        return bool(self.stages)

    def digest(self) -> str:
        blob = json.dumps({"config": self.config, "meta": self.meta}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def recipes_dir(root: Path | None = None) -> Path:
    return (root or ROOT) / "recipes"


def list_recipes(root: Path | None = None) -> list[str]:
    base = recipes_dir(root)
    names = []
    for p in sorted(base.rglob("*.yaml")):
        rel = p.relative_to(base)
        if rel.parts[0] == BASE_DIR_NAME:
            continue
        names.append(str(rel.with_suffix("")))
    return names


def list_fragments(root: Path | None = None) -> list[str]:
    base = recipes_dir(root) / BASE_DIR_NAME
    return [str(p.relative_to(base).with_suffix("")) for p in sorted(base.rglob("*.yaml"))]


def is_config_path(name: str) -> bool:
    """A plain Axolotl config given by its path (`cfg.yaml`), not a recipe name."""
    return name.endswith((".yaml", ".yml")) and Path(name).is_file()


def recipe_path(name: str, root: Path | None = None) -> Path:
    """The file of recipe `name`; a path to a YAML file is taken as it is (a plain Axolotl
    config is a recipe with no fragments)."""
    if is_config_path(name):
        return Path(name).resolve()
    path = recipes_dir(root) / f"{name}.yaml"
    if name.endswith((".yaml", ".yml")) or not path.is_file():
        known = list_recipes(root)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        if name.endswith((".yaml", ".yml")):
            raise RecipeError(f"{name}: no such file")
        raise RecipeError(f"unknown recipe {name!r}.{hint} (`cosmosage recipe list` shows all)")
    return path


def load_yaml(path: Path) -> dict:
    """Load one YAML mapping; errors name the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        data = load_yaml_text(text, path)
    except DataError as exc:
        raise RecipeError(str(exc)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}:1: expected a mapping of keys, got {type(data).__name__}")
    meta = data.get("recipe")
    if meta is not None and not isinstance(meta, dict):
        raise RecipeError(f"{path}: the `recipe:` block must be a mapping")
    return data


def deep_merge(base: dict, over: dict) -> dict:
    """Merge `over` into a copy of `base`: mappings recursively, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_meta(base: dict, over: dict) -> dict:
    builds = list(base.get("builds") or [])
    for b in over.get("builds") or []:
        builds = [x for x in builds if x.get("output") != b.get("output")] + [b]
    out = deep_merge(
        {k: v for k, v in base.items() if k != "builds"},
        {k: v for k, v in over.items() if k != "builds"},
    )
    if builds:
        out["builds"] = builds
    return out


def _load_layers(path: Path, root: Path | None, seen: tuple[Path, ...]) -> list[tuple[Path, dict]]:
    """The files that make up `path`, fragments first, each fragment's own fragments before it."""
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise RecipeError(f"fragment cycle: {chain}")
    data = load_yaml(path)
    extends = (data.get("recipe") or {}).get("extends") or []
    if isinstance(extends, str):
        extends = [extends]
    layers: list[tuple[Path, dict]] = []
    base = recipes_dir(root) / BASE_DIR_NAME
    for frag in extends:
        fpath = base / f"{frag}.yaml"
        if not fpath.resolve().is_relative_to(base.resolve()):
            raise RecipeError(
                f"{path}: recipe.extends {frag!r} points outside {base}: a fragment is a "
                "name under recipes/_base (like models/smollm2-135m)"
            )
        if not fpath.is_file():
            close = difflib.get_close_matches(str(frag), list_fragments(root), n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise RecipeError(f"{path}: recipe.extends names unknown fragment {frag!r}.{hint}")
        layers.extend(_load_layers(fpath, root, (*seen, path)))
    layers.append((path, data))
    return layers


def parse_value(text: str) -> Any:
    """`--set` values are YAML scalars: 2e-4 -> float, true -> bool, [a, b] -> list."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        # YAML 1.1 reads 2e-4 (no dot) as a string; people mean the number.
        try:
            return float(value) if _FLOAT_RE.fullmatch(value.strip()) else value
        except ValueError:
            return value
    return value


def _walk(cfg: dict, dotted: str, create: bool):
    parts = dotted.split(".")
    node: Any = cfg
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        elif part not in node or not isinstance(node[part], (dict, list)):
            if not create:
                return None, parts[-1]
            node[part] = {}
            node = node[part]
        else:
            node = node[part]
    return node, parts[-1]


def apply_overrides(
    cfg: dict, sets: list[str] | None = None, unsets: list[str] | None = None
) -> dict:
    out = copy.deepcopy(cfg)
    for item in sets or []:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        try:
            node, last = _walk(out, key.strip(), create=True)
            if isinstance(node, list):
                node[int(last)] = parse_value(value)
            else:
                node[last] = parse_value(value)
        except (ValueError, IndexError, TypeError) as exc:
            raise RecipeError(f"--set {item!r}: {exc}") from exc
    for key in unsets or []:
        node, last = _walk(out, key.strip(), create=False)
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def has_key(cfg: dict, dotted: str) -> bool:
    """Whether a dotted key (list items by index) is in a config."""
    try:
        node, last = _walk(cfg, dotted.strip(), create=False)
    except (ValueError, IndexError, TypeError, KeyError):
        return False
    if isinstance(node, list):
        return last.isdigit() and int(last) < len(node)
    return isinstance(node, dict) and last in node


def check_unsets(
    names: str | list[str], sets: list[str] | None, unsets: list[str] | None, root=None
) -> None:
    """An `--unset` that no stage of any recipe in NAMES has is a typo, not a no-op."""
    if not unsets:
        return
    names = [names] if isinstance(names, str) else list(names)
    configs, staged = [], False
    for name in names:
        top = render(name, sets, None, root)
        staged = staged or bool(top.stages)
        configs += [top.config] + [render(s, sets, None, root).config for s in top.stages]
    for key in unsets:
        if not any(has_key(cfg, key) for cfg in configs):
            where = " or ".join(names) + (" or any of its stages" if staged else "")
            raise RecipeError(f"--unset {key}: no such key in {where}")


def render(
    name: str,
    sets: list[str] | None = None,
    unsets: list[str] | None = None,
    root: Path | None = None,
) -> Rendered:
    """Fragments, then the recipe, then overrides -> (Axolotl config, recipe metadata)."""
    path = recipe_path(name, root)
    config: dict = {}
    meta: dict = {}
    files = []
    for fpath, data in _load_layers(path, root, ()):
        data = dict(data)
        layer_meta = data.pop("recipe", None) or {}
        layer_meta.pop("extends", None)
        if fpath != path:
            # A fragment's description or stages never describe the recipe that uses it.
            for own in ("description", "stages", "parent"):
                layer_meta.pop(own, None)
        config = deep_merge(config, data)
        meta = merge_meta(meta, layer_meta)
        files.append(os.path.relpath(fpath, recipes_dir(root).parent))
    overrides = [s for s in sets or [] if not s.startswith("recipe.")]
    meta_sets = [s.removeprefix("recipe.") for s in sets or [] if s.startswith("recipe.")]
    meta = apply_overrides(meta, meta_sets)
    config, meta = apply_choices(config, meta, path)
    config = drop_nulls(apply_overrides(config, overrides, unsets))
    config = apply_lr_scale(config, meta, path)
    return Rendered(name=name, config=config, meta=meta, files=files)


def apply_choices(config: dict, meta: dict, path: Path) -> tuple[dict, dict]:
    """Merge the bundle that `recipe.choose` picks on each axis of `recipe.choices` (a
    bundle's own `recipe:` block merges into the metadata)."""
    choices = meta.get("choices") or {}
    chosen = meta.get("choose") or {}
    if not isinstance(choices, dict) or not isinstance(chosen, dict):
        raise RecipeError(f"{path}: recipe.choices and recipe.choose must be mappings")
    for axis, value in chosen.items():
        bundles = choices.get(axis)
        if not isinstance(bundles, dict):
            known = ", ".join(choices) or "none"
            raise RecipeError(f"{path}: recipe.choose.{axis}: no such axis (axes: {known})")
        if str(value) not in {str(k) for k in bundles}:
            raise RecipeError(
                f"{path}: recipe.choose.{axis}={value}: no such choice "
                f"(choices: {', '.join(map(str, bundles))})"
            )
        bundle = next(v for k, v in bundles.items() if str(k) == str(value))
        if not isinstance(bundle, dict):
            raise RecipeError(f"{path}: recipe.choices.{axis}.{value} must be a mapping of keys")
        bundle = dict(bundle)
        meta = merge_meta(meta, bundle.pop("recipe", None) or {})
        config = deep_merge(config, bundle)
    return config, meta


def apply_lr_scale(config: dict, meta: dict, path: Path) -> dict:
    """learning_rate x recipe.lr_scale (after choices and overrides)."""
    scale = meta.get("lr_scale")
    if scale is None:
        return config
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise RecipeError(f"{path}: recipe.lr_scale={scale!r}: expected a number") from None
    if "learning_rate" not in config:
        raise RecipeError(f"{path}: recipe.lr_scale is set but the recipe has no learning_rate")
    config["learning_rate"] = float(config["learning_rate"]) * scale
    return config


def drop_nulls(cfg: dict) -> dict:
    """A key set to null in a later layer removes what an earlier layer gave it."""
    return {k: drop_nulls(v) if isinstance(v, dict) else v for k, v in cfg.items() if v is not None}


def to_yaml(config: dict, header: str | None = None) -> str:
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return (f"# {header}\n" if header else "") + body


def describe(name: str, root: Path | None = None) -> dict:
    """One row of `recipe list`."""
    r = render(name, root=root)
    soup = r.meta.get("soup") if isinstance(r.meta.get("soup"), dict) else None
    method = r.meta.get("method") or ("pipeline" if r.is_pipeline else "soup" if soup else "?")
    model = r.meta.get("model") or r.config.get("base_model", "")
    if r.meta.get("parent"):
        model = f"<- {r.meta['parent']}"
    elif soup:
        model = " + ".join(
            str(m.get("model")) for m in soup.get("models") or [] if isinstance(m, dict)
        )
    hardware = (r.meta.get("hardware") or {}).get("name", "")
    if r.is_pipeline:
        hardware = hardware or "see stages"
        model = " -> ".join(r.stages)
    return {
        "name": name,
        "method": method,
        "model": str(model),
        "hardware": hardware,
        "description": r.meta.get("description", ""),
    }
