"""Prompt suites: YAML files of prompts, each with the scorer that judges its answers.

    prompts:
      - id: cmb-temperature
        prompt: What is the temperature of the cosmic microwave background today?
        score: numeric          # contains (default) | exact | regex | numeric | json | judge
        expect: [2.725]
        tolerance: "5%"
        kind: domain            # domain | general: forgetting shows in `general`
        system: You are a cosmologist.   # optional system message
        history:                # optional earlier turns, asked before the prompt
          - {role: user, content: Hello, I am reading about the CMB.}
          - {role: assistant, content: Happy to help. What would you like to know?}
      - id: fact-003/held_out-1
        prompt: ...
        expect: [Ilse Marnow]
        fact: fact-003          # recall suites written by `data facts` carry the fact
        wording: held_out       # and whether the wording was trained or held out

A suite's name is its file name without `.yaml`. `schema:` of a json prompt may name a
YAML/JSON file relative to the suite.
"""

from __future__ import annotations

from pathlib import Path

from cosmosage.dataprep.io import read_yaml
from cosmosage.dataprep.records import DataError
from cosmosage.tools.eval.scorers import check_prompt


def load_suite(path: str | Path) -> list[dict]:
    """The prompts of one suite, checked, with defaults filled in and `suite` set."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such prompt suite")
    data = read_yaml(path) or {}
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(prompts, list) or not prompts:
        raise DataError(f"{path}: expected a top-level `prompts:` list")
    out = []
    ids: dict[str, int] = {}
    for i, p in enumerate(prompts):
        where = f"{path}: prompts[{i}]"
        if not isinstance(p, dict) or not isinstance(p.get("prompt"), str) or not p["prompt"]:
            raise DataError(f"{where}.prompt: missing or not text")
        p = dict(p)
        p.setdefault("id", f"p{i}")
        p.setdefault("kind", "domain")
        p.setdefault("score", "contains")
        p.setdefault("expect", [])
        if isinstance(p["expect"], (str, int, float)):
            p["expect"] = [p["expect"]]
        if isinstance(p.get("schema"), str):
            schema_path = path.parent / p["schema"]
            if not schema_path.is_file():
                raise DataError(f"{where}.schema: {schema_path} does not exist")
            p["schema"] = read_yaml(schema_path)
        check_fields(p, where)
        check_kind(p["kind"], f"{where}.kind")
        check_history(p.get("history"), f"{where}.history")
        check_prompt(p, where)
        p["suite"] = path.stem
        if p["id"] in ids:
            raise DataError(
                f"{where}.id: {p['id']!r} is already the id of prompts[{ids[p['id']]}]; "
                "ids name answers in reports and caches, so each must be unique"
            )
        ids[p["id"]] = i
        out.append(p)
    return out


# the fields eval reads from a prompt, and the labels the project's suite writers add
# (`data facts`, `closed-book`, `cloze`), which reports group by
FIELDS = ("id", "prompt", "score", "expect", "tolerance", "schema", "reference", "system",
          "history", "kind")  # fmt: skip
LABELS = ("fact", "wording", "group", "document", "sentence")


def check_fields(prompt: dict, where: str) -> None:
    """A key one or two letters from a field eval reads (`scorer:`, `tolerence:`) is a
    misspelling that would be dropped without a word; any other key is a label of one's
    own and kept."""
    import difflib

    for key in prompt:
        close = difflib.get_close_matches(str(key), FIELDS, n=1, cutoff=0.75)
        if key not in FIELDS and key not in LABELS and close:
            raise DataError(f"{where}.{key}: not a field of a prompt; did you mean {close[0]!r}?")


# kinds the reports read: `general` prompts measure forgetting (drift, the flag), `domain`
# is the default, `metaqa` what `data metaqa` writes; any other label is a group of its own
KNOWN_KINDS = ("domain", "general", "metaqa")


def check_kind(kind, where: str) -> None:
    """A label; one a letter or two from a known kind is taken for a misspelling (a
    `generl` prompt would drop out of the forgetting measures without a word)."""
    import difflib

    if not isinstance(kind, str) or not kind.strip():
        raise DataError(f"{where}: expected a label such as {' or '.join(KNOWN_KINDS[:2])}")
    close = difflib.get_close_matches(kind, KNOWN_KINDS, n=1, cutoff=0.7)
    if kind not in KNOWN_KINDS and close:
        raise DataError(f"{where}: {kind!r} is not a kind; did you mean {close[0]!r}?")


def check_history(history, where: str) -> None:
    """Earlier turns: a list of {role: user|assistant, content: text}, starting with the
    user and alternating, so the asked prompt follows an assistant turn."""
    if history is None:
        return
    if not isinstance(history, list) or not history:
        raise DataError(f"{where}: expected a list of {{role, content}} turns")
    for j, turn in enumerate(history):
        want = "user" if j % 2 == 0 else "assistant"
        if not isinstance(turn, dict) or turn.get("role") != want:
            raise DataError(f"{where}[{j}].role: expected {want} (turns alternate, user first)")
        if not isinstance(turn.get("content"), str) or not turn["content"]:
            raise DataError(f"{where}[{j}].content: missing or not text")
    if len(history) % 2:
        raise DataError(
            f"{where}: must end with an assistant turn (the prompt is the next user turn)"
        )


def load_suites(paths: list[str | Path], limit: int | None = None) -> list[dict]:
    """Prompts of several suites (with `limit`, the first `limit` of each); ids are
    prefixed with the suite's name where they clash."""
    prompts: list[dict] = []
    seen: set[str] = set()
    for path in paths:
        for p in load_suite(path)[:limit]:
            if p["id"] in seen:
                p["id"] = f"{Path(path).stem}/{p['id']}"
            seen.add(p["id"])
            prompts.append(p)
    return prompts
