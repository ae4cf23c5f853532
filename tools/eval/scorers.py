"""Scorers: does an answer meet what a prompt expects? Each returns (passed, detail).

A prompt names its scorer with `score:` (default `contains`):

| score     | the prompt gives                 | passes when the answer ...                        |
|-----------|----------------------------------|---------------------------------------------------|
| contains  | `expect: [alternatives]`         | contains one of them (case-insensitive)           |
| exact     | `expect: [alternatives]`         | is one of them, case, spacing and end punctuation aside |
| regex     | `expect: [patterns]`             | matches one of them (`regex.search`, case-insensitive, 1 s limit per answer) |
| numeric   | `expect: [values]`, `tolerance`  | holds a number within tolerance of one ("2.7 K" vs 2.725; `tolerance: 0.05` absolute or `"2%"` relative) |
| json      | `schema: {...}` or a file        | is valid JSON (or holds one JSON value) that the JSON Schema accepts |
| judge     | `reference: text`                | a judge model says it agrees (scored by tools/eval/judge.py, not here) |

An empty expectation never passes: `expect: ['']` would pass any answer, so it is refused
when the suite is loaded.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from typing import Any

from cosmosage.dataprep.records import DataError

_NUMBER_RE = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_END_PUNCT = string.punctuation + " \n\t"

Scorer = Callable[[str, dict], tuple[bool, str]]


def normalize(text: str) -> str:
    """Lowercase, spacing folded, surrounding punctuation stripped."""
    return " ".join(text.lower().split()).strip(_END_PUNCT)


def contains(answer: str, prompt: dict) -> tuple[bool, str]:
    low = answer.lower()
    hit = next((e for e in prompt["expect"] if str(e).lower() in low), None)
    return hit is not None, f"contains {hit!r}" if hit is not None else "no expected substring"


def exact(answer: str, prompt: dict) -> tuple[bool, str]:
    got = normalize(answer)
    hit = next((e for e in prompt["expect"] if normalize(str(e)) == got), None)
    return hit is not None, f"is {hit!r}" if hit is not None else f"{got!r} is none of them"


REGEX_TIMEOUT_S = 1.0


def regex(answer: str, prompt: dict) -> tuple[bool, str]:
    """Patterns run on the `regex` engine with a time limit: a pattern that backtracks
    catastrophically on some answer (`(a+)+$`) fails that answer instead of hanging."""
    import regex as rx

    for pattern in prompt["expect"]:
        try:
            m = rx.search(str(pattern), answer, rx.IGNORECASE, timeout=REGEX_TIMEOUT_S)
        except TimeoutError:
            return False, (
                f"pattern {pattern!r} ran past {REGEX_TIMEOUT_S:g} s on this answer "
                "(catastrophic backtracking); rewrite it"
            )
        if m:
            return True, f"matches {pattern!r} at {m.group(0)!r}"
    return False, "no pattern matches"


def numbers_in(text: str) -> list[float]:
    out = []
    for m in _NUMBER_RE.finditer(text):
        try:
            out.append(float(m.group(0).replace(",", "")))
        except ValueError:
            continue
    return out


def within(value: float, target: float, tolerance: float | str) -> bool:
    if isinstance(tolerance, str) and tolerance.strip().endswith("%"):
        return abs(value - target) <= abs(target) * float(tolerance.strip()[:-1]) / 100
    return abs(value - target) <= float(tolerance)


def numeric(answer: str, prompt: dict) -> tuple[bool, str]:
    tol = prompt.get("tolerance", 0)
    found = numbers_in(answer)
    for value in found:
        for target in prompt["expect"]:
            if within(value, float(target), tol):
                return True, f"{value:g} is within {tol} of {float(target):g}"
    return False, f"numbers {found[:5]} not within {tol} of {prompt['expect']}"


def first_json(text: str) -> Any:
    """The first JSON value in `text` (the whole text, or from the first { or [)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                return decoder.raw_decode(text[i:])[0]
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON value in the answer")


def json_schema(answer: str, prompt: dict) -> tuple[bool, str]:
    import jsonschema

    try:
        value = first_json(answer)
    except ValueError as exc:
        return False, str(exc)
    errors = sorted(
        jsonschema.Draft202012Validator(prompt["schema"]).iter_errors(value), key=lambda e: e.path
    )
    if errors:
        where = "/".join(map(str, errors[0].absolute_path)) or "(root)"
        return False, f"schema: {where}: {errors[0].message}"
    return True, "valid JSON for the schema"


SCORERS: dict[str, Scorer] = {
    "contains": contains,
    "exact": exact,
    "regex": regex,
    "numeric": numeric,
    "json": json_schema,
}
NEEDS_EXPECT = {"contains", "exact", "regex", "numeric"}
KINDS = (*SCORERS, "judge")


def check_prompt(prompt: dict, where: str) -> None:
    """Refuse expectations that cannot tell a right answer from a wrong one."""
    kind = prompt.get("score", "contains")
    if kind not in KINDS:
        raise DataError(f"{where}.score: unknown scorer {kind!r}; use one of {', '.join(KINDS)}")
    if kind in NEEDS_EXPECT:
        expect = prompt.get("expect")
        if not isinstance(expect, list) or not expect:
            raise DataError(f"{where}.expect: a non-empty list is needed for score {kind}")
        for j, e in enumerate(expect):
            if not str(e).strip():
                raise DataError(f"{where}.expect[{j}]: empty, it would pass any answer")
        if kind == "numeric":
            for j, e in enumerate(expect):
                try:
                    float(e)
                except (TypeError, ValueError):
                    raise DataError(f"{where}.expect[{j}]: {e!r} is not a number") from None
            check_tolerance(prompt.get("tolerance", 0), f"{where}.tolerance")
        if kind == "regex":
            for j, e in enumerate(expect):
                try:
                    re.compile(str(e))
                except re.error as exc:
                    raise DataError(f"{where}.expect[{j}]: bad pattern: {exc}") from None
    if kind == "json" and not isinstance(prompt.get("schema"), dict):
        raise DataError(f"{where}.schema: a JSON Schema (mapping or file) is needed for score json")
    if kind == "judge" and not str(prompt.get("reference", "")).strip():
        raise DataError(f"{where}.reference: the judge needs a reference answer")


def check_tolerance(tol, where: str) -> None:
    """A number or a percentage ("5%"), not negative: `within` reads it."""
    text = tol.strip().removesuffix("%") if isinstance(tol, str) else tol
    try:
        ok = not isinstance(tol, bool) and float(text) >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(
            f"{where}: {tol!r} is not a number or a percentage "
            '(`tolerance: 0.05` or `tolerance: "5%"`)'
        )


def checked_score(answer: str, prompt: dict) -> tuple[bool, str]:
    """`score` after `check_prompt`: for expectations read from elsewhere than a suite
    (`data replay`'s prompts); a DataError names the field at fault."""
    check_prompt(prompt, "prompt")
    return score(answer, prompt)


def score(answer: str, prompt: dict) -> tuple[bool, str]:
    """Score one answer with the prompt's scorer (judge prompts are scored elsewhere)."""
    kind = prompt.get("score", "contains")
    if kind == "judge":
        raise ValueError("judge prompts are scored by tools.eval.judge")
    return SCORERS[kind](answer, prompt)
