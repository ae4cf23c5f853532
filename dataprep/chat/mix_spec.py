"""The `data mix` spec: its sources, stages and settings, checked key by key with the file
and line of every mistake (docs/chat-data.md describes the format). dataprep/chat/mix.py
builds the mix."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmosage.dataprep.chat import messages as chatmod
from cosmosage.dataprep.chat.convert import (
    ConvertOptions,
)
from cosmosage.dataprep.io import read_yaml
from cosmosage.dataprep.records import DataError

TIERS = ("high", "medium", "low")
DEFAULT_CACHE = "build/cache/hub"
SOURCE_KEYS = {
    "name", "path", "dataset", "config", "split", "data_files", "revision", "streaming",
    "max_records", "format", "map", "system_prompt", "system_rules", "replace_system",
    "weight", "count", "tier", "validation", "repeat", "cache", "type",
}  # fmt: skip
TYPES = ("chat", "completion")
SPEC_KEYS = {
    "seed",
    "tokenizer",
    "sequence_len",
    "validation",
    "out",
    "val_out",
    "total_tokens",
    "sources",
    "stages",
    "cache_dir",
    "text_out",
}
STAGE_KEYS = {"name", "tiers", "out", "val_out", "total_tokens", "text_out"}


@dataclass
class Source:
    name: str
    path: str | None = None
    dataset: str | None = None
    config: str | None = None
    split: str = "train"
    data_files: Any = None
    revision: str | None = None
    streaming: bool = True
    max_records: int | None = None
    opts: ConvertOptions = field(default_factory=ConvertOptions)
    weight: float | None = None
    count: int | None = None
    tier: str = "medium"
    validation: float = 0.0
    repeat: bool = False
    cache: bool = True
    type: str = "chat"
    """`chat` (conversations) or `completion` (`{"text"}` records, written to `text_out`)."""

    @property
    def label(self) -> str:
        return self.path if self.path else f"hub:{self.dataset}[{self.split}]"


@dataclass
class Stage:
    name: str
    tiers: list[str]
    out: str
    val_out: str | None
    total_tokens: int | None = None
    text_out: str | None = None


@dataclass
class MixSpec:
    sources: list[Source]
    stages: list[Stage]
    seed: int = 0
    tokenizer: str | None = None
    sequence_len: int | None = None
    path: str = "<spec>"
    cache_dir: str | None = DEFAULT_CACHE


# --------------------------------------------------------------------------- spec


def _check_keys(obj: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _typed(raw: dict, key: str, kind: str, at: str, default: Any = None) -> Any:
    """`raw[key]` when it has the type `kind` names (flag, whole, number, text), else
    `default` when absent or null; any other value is a DataError naming the field (a
    quoted "false" is not false, and "zero" is not a seed)."""
    value = raw.get(key)
    if value is None:
        return default
    ok = {
        "flag": isinstance(value, bool),
        "whole": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "text": isinstance(value, str),
    }[kind]
    if not ok:
        wanted = {"flag": "true or false", "whole": "a whole number", "number": "a number",
                  "text": "text"}[kind]  # fmt: skip
        field = f"{at}.{key}" if ": " in at else f"{at}: {key}"
        raise DataError(f"{field}: expected {wanted}, got {value!r}")
    return value


def _parse_source(raw: Any, i: int, path: str, names: set[str], default_val: float) -> Source:
    """sources[i] of the spec -> Source; its name joins `names` (a repeat is an error)."""
    at = f"{path}: sources[{i}]"
    if not isinstance(raw, dict):
        raise DataError(f"{at}: expected a mapping")
    _check_keys(raw, SOURCE_KEYS, at)
    if bool(raw.get("path")) == bool(raw.get("dataset")):
        raise DataError(f"{at}: give exactly one of `path` (local file) or `dataset` (Hub id)")
    if (raw.get("weight") is None) == (raw.get("count") is None):
        raise DataError(
            f"{at}: give exactly one of `weight` (share of tokens) or `count` (conversations)"
        )
    for key in ("name", "path", "dataset", "config", "split", "revision", "system_prompt"):
        _typed(raw, key, "text", at)
    name = str(raw.get("name") or raw.get("path") or raw.get("dataset"))
    if name in names:
        raise DataError(f"{at}: duplicate source name {name!r}")
    names.add(name)
    tier = raw.get("tier", "medium")
    if tier not in TIERS:
        raise DataError(f"{at}.tier: {tier!r} is not one of {', '.join(TIERS)}")
    weight = raw.get("weight")
    if weight is not None and (not isinstance(weight, int | float) or weight <= 0):
        raise DataError(
            f"{at}.weight: must be a positive number (a share of tokens), got {weight!r}"
        )
    count = raw.get("count")
    if count is not None and (not isinstance(count, int) or count < 0):
        raise DataError(f"{at}.count: must be a whole number of conversations, got {count!r}")
    kind = raw.get("type", "chat")
    if kind not in TYPES:
        raise DataError(f"{at}.type: {kind!r} is not one of {', '.join(TYPES)}")
    if kind == "completion" and raw.get("validation"):
        raise DataError(
            f"{at}.validation: completion sources keep no validation slice (set it to 0)"
        )
    val = (
        0.0 if kind == "completion" else float(_typed(raw, "validation", "number", at, default_val))
    )
    if not 0.0 <= val < 1.0:
        raise DataError(f"{at}.validation: a fraction in [0, 1), got {val}")
    mapping = raw.get("map")
    if mapping is not None and not isinstance(mapping, dict):
        raise DataError(
            f"{at}.map: expected a mapping role -> column, e.g. {{user: question, assistant: answer}}"
        )
    try:
        rules = [chatmod.SystemRule.parse(r) for r in raw.get("system_rules") or []]
        opts = ConvertOptions(
            fmt=raw.get("format", "auto"),
            mapping=mapping,
            system_prompt=raw.get("system_prompt"),
            system_rules=rules,
            replace_system=_typed(raw, "replace_system", "flag", at, False),
        )
    except ValueError as exc:
        raise DataError(f"{at}: {exc}") from exc
    return Source(
        name=name,
        path=raw.get("path"),
        dataset=raw.get("dataset"),
        config=raw.get("config"),
        split=raw.get("split", "train"),
        data_files=raw.get("data_files"),
        revision=raw.get("revision"),
        streaming=_typed(raw, "streaming", "flag", at, True),
        max_records=_typed(raw, "max_records", "whole", at),
        opts=opts,
        weight=float(weight) if weight is not None else None,
        count=count,
        tier=tier,
        validation=val,
        repeat=_typed(raw, "repeat", "flag", at, False),
        cache=_typed(raw, "cache", "flag", at, True),
        type=kind,
    )


def _parse_stages(data: dict, path: str) -> list[Stage]:
    """`stages:` (each with its tiers and outputs), else the one stage `all` of `out:`."""
    stages = []
    raw_stages = data.get("stages")
    if raw_stages:
        if not isinstance(raw_stages, list):
            raise DataError(f"{path}: `stages:` must be a list")
        for i, raw in enumerate(raw_stages):
            at = f"{path}: stages[{i}]"
            if not isinstance(raw, dict) or not raw.get("out"):
                raise DataError(f"{at}: expected a mapping with at least `out:`")
            _check_keys(raw, STAGE_KEYS, at)
            tiers = raw.get("tiers") or list(TIERS)
            bad = [t for t in tiers if t not in TIERS]
            if bad:
                raise DataError(f"{at}.tiers: {bad} not among {', '.join(TIERS)}")
            stages.append(
                Stage(
                    str(raw.get("name", f"stage{i + 1}")),
                    list(tiers),
                    raw["out"],
                    raw.get("val_out"),
                    _positive_tokens(raw, at),
                    raw.get("text_out", data.get("text_out")),
                )
            )
    else:
        if not data.get("out"):
            raise DataError(f"{path}: give `out:` (or `stages:` with one `out:` each, or --out)")
        stages.append(
            Stage(
                "all",
                list(TIERS),
                data["out"],
                data.get("val_out"),
                _positive_tokens(data, path),
                data.get("text_out"),
            )
        )
    return stages


def _positive_tokens(raw: dict, at: str) -> int | None:
    total = _typed(raw, "total_tokens", "whole", at)
    if total is not None and total <= 0:
        raise DataError(f"{at}.total_tokens: must be a positive number of tokens, got {total}")
    return total


def _check_stages(stages: list[Stage], sources: list[Source], path: str) -> None:
    """Every stage has sources; completion sources have a `text_out`; counts and weights
    mix only with weights below 1 (or a `total_tokens`)."""
    for st in stages:
        members = [s for s in sources if s.tier in st.tiers]
        if not members:
            raise DataError(f"{path}: stage {st.name!r} (tiers {st.tiers}) has no sources")
        weighted = [s for s in members if s.weight is not None]
        counted = [s for s in members if s.count is not None]
        if any(s.type == "completion" for s in members) and not st.text_out:
            raise DataError(
                f"{path}: stage {st.name!r} has completion sources: give `text_out:` (their "
                "records go there, for an Axolotl `completion` dataset beside the chat one)"
            )
        if counted and weighted and sum(s.weight for s in weighted) >= 1.0 and not st.total_tokens:
            raise DataError(
                f"{path}: stage {st.name!r} mixes `count` and `weight` sources, so weights are shares of "
                f"all tokens and must sum below 1 (they sum to {sum(s.weight for s in weighted):g})"
            )


def parse_spec(data: Any, path: str = "<spec>", overrides: dict | None = None) -> MixSpec:
    """A mix spec (already parsed YAML) -> MixSpec, with every mistake named."""
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping with a `sources:` list")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if data.get("stages") and ({"out", "val_out"} & set(overrides)):
        raise DataError(
            f"{path}: the spec has stages, each with its own `out:`; --out/--val-out apply to single-output specs"
        )
    data = {**data, **overrides}
    _check_keys(data, SPEC_KEYS, path)
    raw_sources = data.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise DataError(f"{path}: `sources:` must be a non-empty list")
    default_val = float(_typed(data, "validation", "number", path, 0.0))
    sources, names = [], set()
    for i, raw in enumerate(raw_sources):
        sources.append(_parse_source(raw, i, path, names, default_val))
    stages = _parse_stages(data, path)
    _check_stages(stages, sources, path)
    seq = _typed(data, "sequence_len", "whole", path)
    return MixSpec(
        sources,
        stages,
        _typed(data, "seed", "whole", path, 0),
        _typed(data, "tokenizer", "text", path),
        seq or None,
        path,
        data.get("cache_dir", DEFAULT_CACHE),
    )


def load_spec(path: str | Path, overrides: dict | None = None) -> MixSpec:
    return parse_spec(read_yaml(path), str(path), overrides)
