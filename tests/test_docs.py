"""README.md and docs/ name only commands and files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
    *sorted(ROOT.glob("*/README.md")),
]
COMMAND_RE = re.compile(r"\bcosmosage((?: [a-z][a-z0-9-]*){1,3})")
PATH_RE = re.compile(
    r"(?<![\w./-])((?:dataprep|tools|tests|bench|recipes|samples|prompts|docker|docs)/"
    r"[\w./-]*[\w])"
)
GENERATED = ("build/", "runs/")


CODE_RE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`", re.S)


def code(text: str) -> str:
    """The code blocks and code spans of a markdown text, where commands are written."""
    return "\n".join(m.group(1) or m.group(2) for m in CODE_RE.finditer(text))


def commands() -> dict[str, set[str]]:
    from cosmosage.tools.cli.main import main

    out: dict[str, set[str]] = {}
    for noun, group in main.commands.items():
        verbs = set(getattr(group, "commands", {}))
        for verb, sub in getattr(group, "commands", {}).items():
            verbs |= {f"{verb} {v}" for v in getattr(sub, "commands", {})}
        out[noun] = verbs
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_in_docs_exist(doc):
    known = commands()
    wrong = []
    for m in COMMAND_RE.finditer(code(doc.read_text())):
        words = m.group(1).split()
        noun = words[0]
        if noun not in known:
            wrong.append(" ".join(words))
            continue
        rest = [w for w in words[1:] if not w.startswith("-")]
        if not rest or not known[noun]:
            continue
        # `cosmosage eval MODEL` and `cosmosage sweep RECIPE` run their default command
        if (
            rest[0] in known[noun]
            or f"{rest[0]} {rest[1] if len(rest) > 1 else ''}".strip() in known[noun]
        ):
            continue
        if noun in ("eval", "sweep"):
            continue
        wrong.append(" ".join(words))
    assert wrong == [], f"{doc.name} names commands that do not exist: {wrong}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_named_in_docs_exist(doc):
    missing = sorted(
        {
            m.group(1)
            for m in PATH_RE.finditer(doc.read_text())
            if not any(ch in m.group(1) for ch in "<>*{}")
            and not (ROOT / m.group(1)).exists()
            and not (ROOT / m.group(1).rstrip(".")).exists()
        }
    )
    assert missing == [], f"{doc.name} names files that do not exist: {missing}"
