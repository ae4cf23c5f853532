"""Prompt templates as YAML files: name, version, system and user text with `{{placeholders}}`.

A template's `version` is recorded with everything made from it, so a resumed run can
tell when the wording changed. `output` says how the reply is read: `json` (the first
JSON value) or `lines` (`Label: value` lines, the form small models can keep to);
`sampling` holds the request settings the prompt was written for (max_tokens, stop,
temperature, ...): a command's own options override them. `min_grounding` is the share
of an answer's content words that must occur in its chunk (`data synth`). `examples`
are worked examples sent as earlier turns of the chat, each the user template filled
with the example's own values and its `reply` as the assistant's answer: a small model
copies the form of a reply it has seen far more reliably than one it is told about.

The bundled templates live in `prompts/` at the root of the repository;
`load_prompt("synth_qa")` finds them by name.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from cosmosage.dataprep.io import read_yaml
from cosmosage.dataprep.records import DataError
from cosmosage.dataprep.synth.parse import OUTPUT_KINDS

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
# the templates are part of the code of a build that uses them (tools/run/codehash.py)
BUNDLED_DATA = ("prompts",)

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def placeholders(template: str) -> set[str]:
    return set(_PLACEHOLDER.findall(template))


def fill(template: str, values: dict) -> str:
    """Replace `{{name}}` with `values[name]`; braces anywhere else are left alone."""
    missing = placeholders(template) - set(values)
    if missing:
        raise ValueError(f"template needs {', '.join(sorted(missing))}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    user: str
    system: str = ""
    output: str = "json"
    sampling: dict = field(default_factory=dict)
    min_grounding: float | None = None
    examples: tuple = ()
    path: str = ""
    sha: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def messages(self, **values) -> list[dict]:
        """The chat messages for one request."""
        msgs = []
        if self.system.strip():
            msgs.append({"role": "system", "content": fill(self.system, values).strip()})
        for ex in self.examples:
            shown = {**values, **{k: v for k, v in ex.items() if k != "reply"}}
            msgs.append({"role": "user", "content": fill(self.user, shown).strip()})
            msgs.append({"role": "assistant", "content": str(ex["reply"]).strip()})
        msgs.append({"role": "user", "content": fill(self.user, values).strip()})
        return msgs

    def check(self, allowed: set[str]) -> None:
        """Fail before any request if the template uses a placeholder the step cannot fill."""
        unknown = (placeholders(self.system) | placeholders(self.user)) - allowed
        if unknown:
            raise DataError(
                f"{self.path}: unknown placeholder(s) {', '.join('{{' + u + '}}' for u in sorted(unknown))}; "
                f"this step fills {', '.join(sorted(allowed))}"
            )
        for i, ex in enumerate(self.examples, start=1):
            extra = set(ex) - allowed - {"reply"}
            if extra:
                raise DataError(
                    f"{self.path}: examples[{i}]: unknown key(s) {', '.join(sorted(extra))}; "
                    f"an example gives {', '.join(sorted(allowed))} and its reply"
                )

    def provenance(self) -> dict:
        return {"name": self.name, "version": self.version, "sha": self.sha}


def resolve_prompt_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    bundled = PROMPTS_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    raise DataError(
        f"{name_or_path}: no such prompt file (bundled ones: {', '.join(sorted(x.stem for x in PROMPTS_DIR.glob('*.yaml')))})"
    )


def load_yaml(name_or_path: str | Path) -> tuple[Path, dict]:
    path = resolve_prompt_path(name_or_path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping with name, version, user")
    for key in ("name", "version"):
        if data.get(key) in (None, ""):
            raise DataError(f"{path}: missing '{key}'")
    return path, data


def load_prompt(name_or_path: str | Path) -> PromptTemplate:
    """Read a chat prompt template (keys: name, version, system, user, output)."""
    path, data = load_yaml(name_or_path)
    if not isinstance(data.get("user"), str) or not data["user"].strip():
        raise DataError(f"{path}: missing 'user' template text")
    output = str(data.get("output", "json"))
    if output not in OUTPUT_KINDS:
        raise DataError(f"{path}: output: {output!r} is not one of {', '.join(OUTPUT_KINDS)}")
    sampling = data.get("sampling") or {}
    if not isinstance(sampling, dict):
        raise DataError(f"{path}: sampling: expected a mapping such as {{max_tokens: 200}}")
    if "stop" in sampling and not (
        isinstance(sampling["stop"], str)
        or (
            isinstance(sampling["stop"], list) and all(isinstance(x, str) for x in sampling["stop"])
        )
    ):
        raise DataError(f"{path}: sampling.stop: expected a string or a list of strings")
    grounding = data.get("min_grounding")
    if grounding is not None and (
        isinstance(grounding, bool)
        or not isinstance(grounding, (int, float))
        or not 0 <= grounding <= 1
    ):
        raise DataError(f"{path}: min_grounding: expected a share from 0 to 1, got {grounding!r}")
    examples = data.get("examples") or []
    if not isinstance(examples, list) or not all(
        isinstance(ex, dict) and isinstance(ex.get("reply"), str) and ex["reply"].strip()
        for ex in examples
    ):
        raise DataError(f"{path}: examples: expected a list of mappings, each with a 'reply' text")
    keys = (
        "name",
        "version",
        "system",
        "user",
        "output",
        "sampling",
        "min_grounding",
        "examples",
    )
    # the newer keys count only when set, so older prompt files keep their hash
    core = {k: data.get(k) for k in keys if k in keys[:5] or data.get(k) is not None}
    sha = hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]
    known = set(keys) | {"description"}
    return PromptTemplate(
        name=str(data["name"]),
        version=str(data["version"]),
        user=data["user"],
        system=data.get("system") or "",
        output=output,
        sampling=dict(sampling),
        min_grounding=None if grounding is None else float(grounding),
        examples=tuple(dict(ex) for ex in examples),
        path=str(path),
        sha=sha,
        extra={k: v for k, v in data.items() if k not in known},
    )
