"""Reading JSON out of untrusted model output.

Models wrap JSON in code fences, add a sentence before or after it, think aloud in
`<think>` blocks, or stop half way. `extract_json` finds the first complete JSON value
and says what it skipped; anything it cannot read raises `ParseError` whose reason
starts with a short category ("no JSON", "cut off", "invalid JSON") so rejects can
be counted by kind.

Small models rarely manage JSON, but they follow a plainer form: one `Label: value`
line per field ("Question: ...", "Answer: ..."). `extract_fields` reads that form
(prompt `output: lines`) into the same shapes: a list of objects, one per item, a new
item starting whenever a label repeats. A prompt whose answer is the text itself (one
question, one passage) says `output: text`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
# "Question: ...", "**Answer:** ...", "2. Q: ...", "- Overall score: 80"
_LABEL = re.compile(
    r"^\s*(?:[-*#>]+\s*|\d{1,2}[.)]\s*)?(?:\*\*|__)?"
    r"([A-Za-z][A-Za-z ]{0,24}?)\s*(?:\d{1,2})?\s*(?:\*\*|__)?\s*:\s*(?:\*\*|__)?\s*(.*)$"
)
OUTPUT_KINDS = ("json", "lines", "text")


class ParseError(ValueError):
    """Output that could not be used; `reason` is "category: detail"."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def extract_json(text: str, finish_reason: str | None = None) -> tuple[Any, list[str]]:
    """The first JSON object or array in `text`, and notes on what was skipped around it."""
    notes: list[str] = []
    if text is None or not text.strip():
        raise ParseError("empty output: the model returned no text")
    body = _THINK.sub("", text)
    if body != text:
        notes.append("reasoning block removed")
    fence = _FENCE.search(body)
    if fence:
        body = fence.group(1)
        notes.append("code fence removed")
    starts = [m.start() for m in re.finditer(r"[\[{]", body)]
    if not starts:
        if finish_reason == "length":
            raise ParseError("cut off: output reached max_tokens before any JSON")
        raise ParseError("no JSON: no object or array in the output")
    decoder = json.JSONDecoder()
    first_error = None
    for pos in starts[:50]:
        try:
            obj, end = decoder.raw_decode(body, pos)
        except json.JSONDecodeError as exc:
            first_error = first_error or exc
            continue
        if not isinstance(obj, (dict, list)):
            continue
        if body[:pos].strip():
            notes.append(f"{len(body[:pos].strip())} characters of text before the JSON ignored")
        if body[end:].strip():
            notes.append(f"{len(body[end:].strip())} characters of text after the JSON ignored")
        return obj, notes
    if finish_reason == "length":
        raise ParseError("cut off: output reached max_tokens inside the JSON (partial JSON)")
    assert first_error is not None
    raise ParseError(f"invalid JSON: {first_error.msg} at character {first_error.pos}")


def extract_fields(
    text: str,
    finish_reason: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> tuple[list[dict], list[str]]:
    """Items written as `Label: value` lines, and notes on what was skipped.

    `labels` maps each label that counts (lower case) to the field it fills ("q" ->
    "question"); other `Word:` lines continue the current value, so a colon inside an
    answer does no harm. Without `labels` every label counts as itself. Lines without a label
    continue the current value, unless a blank line came first: a value is one paragraph,
    and unlabelled text after a blank line (a small model rambling on after its answer)
    ends the item and is ignored up to the next label. A label that the current item
    already has starts the next item. An item still open when max_tokens cut the output is dropped with a note.
    """
    if text is None or not text.strip():
        raise ParseError("empty output: the model returned no text")
    body = _THINK.sub("", text)
    notes = ["reasoning block removed"] if body != text else []
    known = {k.lower(): v for k, v in (labels or {}).items()}
    items: list[dict] = []
    current: dict = {}
    field_name = None
    skipped = trailing = 0
    blank = False

    def close() -> None:
        nonlocal current
        if current:
            items.append({k: " ".join(v.split()) for k, v in current.items()})
        current = {}

    for line in body.splitlines():
        m = _LABEL.match(line)
        name = " ".join(m.group(1).lower().split()) if m else None
        if not line.strip():
            blank = True
            continue
        if name is not None and (not known or name in known):
            name = known.get(name, name)
            if name in current:
                close()
            field_name, current[name] = name, m.group(2)
        elif field_name is not None and not blank:
            current[field_name] += "\n" + line
        elif field_name is not None or items:
            close()  # text after a finished paragraph: the item is complete
            field_name = None
            trailing += 1
        else:
            skipped += 1
        blank = False
    open_at_end = bool(current)
    close()
    if skipped:
        notes.append(f"{skipped} line(s) before the first label ignored")
    if trailing:
        notes.append(f"{trailing} line(s) of text after an item ignored")
    if finish_reason == "length" and open_at_end:
        items.pop()
        notes.append("the last item reached max_tokens and was dropped")
        if not items:
            raise ParseError("cut off: output reached max_tokens inside the first item")
    if not items:
        want = ", ".join(sorted(known)) or "any"
        raise ParseError(f"no fields: no 'Label: value' lines ({want}) in the output")
    return items, notes


def extract_output(
    kind: str,
    text: str,
    finish_reason: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> tuple[Any, list[str]]:
    """The parsed answer for a prompt whose `output` is `kind`: "json", "lines", or
    "text" (the reply itself, reasoning blocks removed)."""
    if kind == "lines":
        return extract_fields(text, finish_reason, labels)
    if kind == "text":
        return extract_text(text)
    return extract_json(text, finish_reason)


def extract_text(text: str) -> tuple[str, list[str]]:
    """The reply as plain text, stripped, without a `<think>` block."""
    if text is None or not text.strip():
        raise ParseError("empty output: the model returned no text")
    body = _THINK.sub("", text).strip()
    notes = ["reasoning block removed"] if body != text.strip() else []
    if not body:
        raise ParseError("empty output: only a reasoning block")
    return body, notes


def as_number(value: Any) -> float | None:
    """92, 92.0, "92", "92/100", "92%" -> 92.0; anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*100|%)?\s*", value)
        if m:
            return float(m.group(1))
    return None
