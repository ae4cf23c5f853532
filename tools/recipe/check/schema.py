"""Axolotl's own validation of the config, and keys it renamed or dropped."""

from __future__ import annotations

import difflib
import json

from cosmosage.tools.recipe.check.base import Problem, _quiet

# --------------------------------------------------------------------------- schema


def known_keys(plugins: bool = False) -> set[str]:
    """Axolotl's option names (with `plugins`, those of the registered plugins too)."""
    with _quiet():
        from axolotl.utils.schemas.config import AxolotlInputConfig

        if plugins:
            from axolotl.integrations.config import merge_input_args

            AxolotlInputConfig = merge_input_args()[1]  # noqa: N806
    keys = set()
    for name, f in AxolotlInputConfig.model_fields.items():
        keys.add(name)
        if f.alias:
            keys.add(f.alias)
    return keys


def dataset_keys() -> set[str]:
    from axolotl.utils.schemas.datasets import SFTDataset

    return set(SFTDataset.model_fields)


def deprecated_keys() -> dict[str, str]:
    """Keys Axolotl still accepts but has deprecated, with its own advice."""
    with _quiet():
        from axolotl.utils.schemas.config import AxolotlInputConfig
        from axolotl.utils.schemas.deprecated import DeprecatedParameters

    out: dict[str, str] = {}
    for name, f in AxolotlInputConfig.model_fields.items():
        note = f.deprecated
        if note:
            out[name] = note if isinstance(note, str) else getattr(note, "message", str(note))
    for name in DeprecatedParameters.model_fields:
        out.setdefault(name, "no longer supported")
    return out


# Options Axolotl renamed; the old names are dropped without a word.
RENAMED = {
    "relora_steps": "jagged_restart_steps",
    "relora_warmup_steps": "jagged_restart_warmup_steps",
    "relora_anneal_steps": "jagged_restart_anneal_steps",
}


def suggest(key: str, candidates: set[str]) -> str:
    if key in RENAMED:
        return f"; it was renamed: use `{RENAMED[key]}`"
    close = difflib.get_close_matches(key, sorted(candidates), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def check_axolotl_schema(cfg: dict) -> list[Problem]:
    """Validate with Axolotl's pydantic schema; report keys it silently drops."""
    problems = []
    for group in ("datasets", "test_datasets"):
        value = cfg.get(group)
        if value is not None and not isinstance(value, list):
            # Axolotl's validation fails on this before its schema can name the field
            return [Problem("axolotl", f"`{group}` must be a list (one mapping per dataset), "
                                       f"got {type(value).__name__} {value!r}")]  # fmt: skip
    try:
        with _quiet():
            from axolotl.utils.config import prepare_plugins, validate_config
            from axolotl.utils.dict import DictDefault

            plain = DictDefault(json.loads(json.dumps(cfg)))
            # as Axolotl's own CLI does: plugins add their keys to the schema first
            prepare_plugins(plain)
            validated = validate_config(plain)
    except Exception as exc:  # pydantic ValidationError or Axolotl's ValueError
        problems, kept = schema_errors(exc, cfg), set()
    else:
        kept = set(validated.keys())
    known = known_keys(plugins=bool(cfg.get("plugins")))
    for key in cfg:
        if key not in kept and key not in known:
            problems.append(
                Problem(
                    "unknown-key",
                    f"`{key}` is not an Axolotl option and would be silently dropped{suggest(key, known)}",
                )
            )
    ds_known = dataset_keys()
    for group in ("datasets", "test_datasets"):
        for i, ds in enumerate(cfg.get(group) or []):
            if not isinstance(ds, dict):
                continue
            for key in ds:
                if key not in ds_known:
                    problems.append(
                        Problem(
                            "unknown-key",
                            f"`{group}[{i}].{key}` is not a dataset option{suggest(key, ds_known)}",
                        )
                    )
    return problems


def schema_errors(exc: Exception, cfg: dict) -> list[Problem]:
    """One line per field Axolotl's schema refused, naming the field, why and the value
    (pydantic's own text is two lines an error, with a link); another error as one line."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return [Problem("axolotl", " ".join(str(exc).split()))]
    at = ""
    if exc.title != "AxolotlInputConfig" and "Dataset" in exc.title:
        # a dataset is validated on its own before the config: find which one it is
        at = next((f"{g}[{i}]." for g in ("datasets", "test_datasets")
                   for i, ds in enumerate(cfg.get(g) or []) if _refused(exc.title, ds)), "")  # fmt: skip
    problems = []
    for err in exc.errors():
        field = at + ".".join(f"[{x}]" if isinstance(x, int) else str(x) for x in err["loc"])
        field = field.replace(".[", "[")
        why = err["msg"].removeprefix("Value error, ")
        got = f" (got {err['input']!r})" if field and not isinstance(err["input"], dict) else ""
        problems.append(Problem("axolotl", f"`{field}`: {why}{got}" if field else why))
    return problems


def _refused(model: str, ds) -> bool:
    """Whether Axolotl's dataset schema `model` refuses dataset entry `ds`."""
    from axolotl.utils.schemas import datasets
    from pydantic import ValidationError

    try:
        getattr(datasets, model)(**dict(ds))
    except (ValidationError, TypeError, AttributeError):
        return True
    return False


def check_deprecated(cfg: dict) -> list[Problem]:
    """Deprecated keys: Axolotl still maps most of them, but the legacy attention flags
    (`flash_attention`, `sdp_attention`, ...) are refused beside `attn_implementation`,
    so `--set attn_implementation=...` fails on any recipe that carries one."""
    from axolotl.utils.schemas.enums import LEGACY_ATTN_FLAG_TO_IMPL

    problems = []
    notes = deprecated_keys()
    for key, value in cfg.items():
        if key not in notes:
            continue
        extra = ""
        if key in LEGACY_ATTN_FLAG_TO_IMPL:
            extra = (
                f" (Axolotl refuses it beside `attn_implementation`, so `--set attn_implementation=...` "
                f"fails; write `attn_implementation: {LEGACY_ATTN_FLAG_TO_IMPL[key]}` instead)"
            )
        problems.append(
            Problem("deprecated", f"`{key}: {value}` is deprecated: {notes[key]}{extra}", "warning")
        )
    return problems
