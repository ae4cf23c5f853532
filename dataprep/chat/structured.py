"""Structured-output sets: (text, JSON target) pairs -> conversations whose assistant
turn is JSON, with every target parsed and checked against a user-given JSON Schema.

    {"text": "In the fourth line of the first Canto", "target": {"references": [{"canto": 1, "lines": [4]}]}}

becomes

    {"messages": [{"role": "system", "content": "<instruction>"},
                  {"role": "user", "content": "In the fourth line of the first Canto"},
                  {"role": "assistant", "content": "{\\"references\\": [{\\"canto\\": 1, \\"lines\\": [4]}]}"}]}

A target may be a JSON value or a string holding JSON. A target that does not parse or
does not match the schema is rejected with file, line and the failing field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cosmosage.dataprep.chat.messages import validate_messages
from cosmosage.dataprep.io import (
    Manifest,
    check_outputs,
    read_records,
    read_yaml,
    write_jsonl,
)
from cosmosage.dataprep.records import DataError, Reject
from cosmosage.dataprep.steps import Drops, numbered, refuse_nothing_kept, step


def load_schema(path: str | Path) -> Any:
    """A JSON Schema from a .json or .yaml file, itself checked against its metaschema."""
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    schema = read_yaml(path)  # YAML is a superset of JSON
    if not isinstance(schema, dict | bool):
        raise DataError(f"{path}: a JSON Schema must be an object")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise DataError(f"{path}: not a valid JSON Schema: {exc.message}") from exc
    return schema


def make_validator(schema: Any):
    from jsonschema.validators import validator_for

    return validator_for(schema)(schema)


def _pointer(path: Iterable) -> str:
    parts = [str(p) for p in path]
    return "/" + "/".join(parts) if parts else "(root)"


def parse_target(value: Any) -> Any:
    """The target as a JSON value; a string is parsed as JSON (ValueError if it is not)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"target: invalid JSON: {exc.msg} (column {exc.colno})") from exc
    return value


def check_target(target: Any, validator) -> None:
    """ValueError naming the first failing field when the target breaks the schema."""
    errors = sorted(validator.iter_errors(target), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValueError(
            f"target does not match schema at {_pointer(first.absolute_path)}: {first.message}{more}"
        )


def to_structured(
    items: Iterable[tuple[int, dict | Reject]],
    source: str,
    validator,
    instruction: str | None = None,
    text_field: str = "text",
    target_field: str = "target",
    indent: int | None = None,
) -> Iterator[dict | Reject]:
    """(line, {text, target}) pairs -> chat records with a JSON assistant turn, or Rejects."""
    fields = (text_field, target_field)
    return _to_chat(numbered(items), source, validator, instruction, fields, indent)


@step
def _to_chat(
    item: tuple[int, dict],
    source: str,
    validator,
    instruction: str | None,
    fields: tuple[str, str],
    indent: int | None,
) -> dict | Reject:
    lineno, rec = item
    text_field, target_field = fields
    try:
        for field_name in fields:
            if field_name not in rec:
                raise ValueError(f"field {field_name!r}: missing (fields are {sorted(rec)[:8]})")
        if not isinstance(rec[text_field], str):
            got = type(rec[text_field]).__name__
            raise ValueError(f"field {text_field!r}: expected text, got {got}")
        target = parse_target(rec[target_field])
        check_target(target, validator)
        answer = json.dumps(target, ensure_ascii=False, indent=indent)
        msgs = [
            {"role": "user", "content": rec[text_field]},
            {"role": "assistant", "content": answer},
        ]
        if instruction:
            msgs.insert(0, {"role": "system", "content": instruction})
        msgs = validate_messages(msgs)
    except ValueError as exc:
        return Reject(source, lineno, str(exc), rec)
    return {"messages": msgs, "source": f"{Path(source).name}:{lineno}"}


def build_structured(
    inputs: list[str],
    out: str | Path,
    schema_path: str | Path,
    instruction: str | None = None,
    include_schema: bool = False,
    text_field: str = "text",
    target_field: str = "target",
    indent: int | None = None,
) -> dict:
    """Pairs files (JSONL or CSV) -> chat JSONL whose assistant turns are schema-valid JSON."""
    check_outputs([*inputs, schema_path], {"--out": out})
    schema = load_schema(schema_path)
    validator = make_validator(schema)
    if include_schema:
        schema_text = json.dumps(schema, ensure_ascii=False)
        instruction = (
            f"{instruction}\n\nJSON Schema: {schema_text}"
            if instruction
            else f"Answer with JSON matching this schema: {schema_text}"
        )
    manifest = Manifest(str(out), extra={"schema": str(schema_path), "instruction": instruction})
    manifest.add_input(schema_path, role="schema")
    drops = Drops()

    def records() -> Iterator[dict]:
        for path in inputs:
            manifest.add_input(path)
            rows = read_records(path)
            fields = (text_field, target_field)
            yield from drops.keep(
                to_structured(rows, str(path), validator, instruction, *fields, indent)
            )

    manifest.kept = write_jsonl(out, records(), empty_ok=False)
    refuse_nothing_kept(out, manifest.kept, drops.rejects)
    manifest.dropped.update(drops.counts)
    drops.write(out)
    manifest.write()
    return {"output": str(out), "records": manifest.kept, "rejected": len(drops)}
