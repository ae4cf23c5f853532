"""Reading JSON out of untrusted model output.

Models wrap JSON in code fences, add a sentence before or after it, think aloud in
`<think>` blocks, or stop half way. `extract_json` finds the first complete JSON value
and says what it skipped; anything it cannot read raises `ParseError` whose reason
starts with a short category ("no JSON", "cut off", "invalid JSON") so rejects can
be counted by kind.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)


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
