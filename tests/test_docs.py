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


def _command_of(words: list[str]):
    """The click command that `cosmosage WORDS...` runs (a group's default command for
    `cosmosage eval MODEL`), or None when the words name none."""
    import click

    from cosmosage.tools.cli.main import main

    cmd, i = main, 0
    while isinstance(cmd, click.Group):
        if i == len(words):
            return None
        sub = cmd.commands.get(words[i])
        if sub is None:
            default = getattr(cmd, "default", None)
            if not default or words[i].startswith("-"):
                return None
            sub, i = cmd.commands[default], i - 1
        cmd, i = sub, i + 1
    return cmd


COMMAND_LINE_RE = re.compile(r"\bcosmosage ((?:[a-z][\w-]*(?: |$)){1,3})(.*)")


def doc_options(text: str) -> list[tuple[str, str, set[str]]]:
    """(command words, --option, the command's own options) for every option written on
    a `cosmosage ...` line of a doc's code (continuation lines joined; stops at a pipe,
    `&&`, `;` or a comment)."""
    found = []
    for line in code(text).replace("\\\n", " ").splitlines():
        for m in COMMAND_LINE_RE.finditer(line):
            words = m.group(1).split()
            cmd = _command_of([*words, "X"])
            if cmd is None:
                continue
            known = {"--help"}
            for p in cmd.params:
                known |= {*p.opts, *getattr(p, "secondary_opts", [])}
            rest = re.split(r"\s(?:\||&&|;|#)\s?", m.group(2))[0]
            for tok in f"{m.group(1)} {rest}".split():
                opt = tok.strip("[](),`'\"").split("=")[0]
                if opt.startswith("--") and len(opt) > 2:
                    found.append((" ".join(words), opt, known))
    return found


def test_doc_options_finds_a_misspelt_option():
    opts = doc_options(
        "```bash\ncosmosage data corpus in --out o \\\n    --sequnce-len 8 | head\n```"
    )
    assert [(w, o, o in k) for w, o, k in opts] == [
        ("data corpus in", "--out", True),
        ("data corpus in", "--sequnce-len", False),
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_options_in_docs_exist(doc):
    wrong = [
        f"{words}: {opt}" for words, opt, known in doc_options(doc.read_text()) if opt not in known
    ]
    assert wrong == [], f"{doc.name} names options the command does not have: {wrong}"


RECIPE_NAME_RE = re.compile(r"\bmake (?:recipe|docker-run) NAME=([a-z0-9][\w./-]+)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_make_targets_and_recipes_in_docs_exist(doc):
    from cosmosage.tools.recipe.render import list_recipes

    targets = set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.M))
    text = code(doc.read_text())
    wrong = [f"make {t}" for t in re.findall(r"\bmake ([\w-]+)", text) if t not in targets]
    recipes = set(list_recipes())
    wrong += [f"NAME={n}" for n in RECIPE_NAME_RE.findall(text) if n not in recipes and n != "x"]
    assert wrong == [], f"{doc.name} names make targets or recipes that do not exist: {wrong}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_examples_in_docs_parse(doc):
    """A YAML block a reader copies into a suite, spec or recipe must load as written."""
    import yaml

    wrong = []
    for m in re.finditer(r"```ya?ml\n(.*?)```", doc.read_text(), re.S):
        try:
            yaml.safe_load(m.group(1))
        except yaml.YAMLError as exc:
            wrong.append(f"{m.group(1)[:60]!r}: {str(exc).splitlines()[0]}")
    assert wrong == [], f"{doc.name} has YAML examples that do not load: {wrong}"
