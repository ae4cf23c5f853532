"""A build's stamp holds the code that runs it: a build is redone when that code
changes, and only that code."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import click
import pytest

from cosmosage.tools.run import codehash, process

PACKAGE = {
    "__init__.py": "",
    "cli.py": """
        import click
        from fakepkg import cmds

        @click.group()
        def main():
            pass

        main.add_command(cmds.make)
    """,
    "cmds.py": """
        import functools
        import click
        from . import util

        def logged(f):
            @functools.wraps(f)
            def inner(*a, **k):
                return f(*a, **k)
            return inner

        @click.command()
        @logged
        def make():
            from fakepkg.work import run  # imported where it is used
            run(util.SIZE)
    """,
    "util.py": "SIZE = 3\nBUNDLED_DATA = ('templates',)  # read beside the package\n",
    "work.py": "def run(n):\n    return n * 2\n",
    "other.py": "UNUSED = 1\n",
}


@pytest.fixture
def fakepkg(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    for name, text in PACKAGE.items():
        (pkg / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in [m for m in sys.modules if m == "fakepkg" or m.startswith("fakepkg.")]:
        del sys.modules[name]


def rewrite(path, text):
    """Write `text` with a newer mtime, so no cache can take it for the old file."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_the_command_module_and_what_it_imports_are_its_code(fakepkg):
    from fakepkg.cli import main

    module = codehash.command_module(["make"], main)
    assert module == "fakepkg.cmds"  # through a decorator that wraps the callback
    assert set(codehash.module_closure(module)) == {
        "fakepkg", "fakepkg.cmds", "fakepkg.util", "fakepkg.work",
    }  # fmt: skip
    assert codehash.command_module(["nothing"], main) is None


def test_the_digest_follows_code_not_comments_nor_unrelated_modules(fakepkg):
    first = codehash.code_digest("fakepkg.cmds")
    rewrite(fakepkg / "other.py", "UNUSED = 2\n")
    assert codehash.code_digest("fakepkg.cmds") == first
    rewrite(fakepkg / "work.py", "# doubles\n\ndef run(n):\n    return n * 2  # twice\n")
    assert codehash.code_digest("fakepkg.cmds") == first
    rewrite(fakepkg / "work.py", "def run(n):\n    return n * 3\n")
    changed = codehash.code_digest("fakepkg.cmds")
    assert changed != first
    rewrite(fakepkg / "util.py", "SIZE = 4\n")  # reached by a relative import
    assert codehash.code_digest("fakepkg.cmds") != changed


def test_the_digest_follows_the_bundled_files_a_module_names(fakepkg):
    (fakepkg / "templates").mkdir()
    (fakepkg / "templates" / "ask.yaml").write_text("template: Ask {{q}}\n")
    first = codehash.code_digest("fakepkg.cmds")
    (fakepkg / "templates" / "ask.yaml").write_text("template: Please ask {{q}}\n")
    assert codehash.code_digest("fakepkg.cmds") != first
    # the real templates: a build that uses them is redone when one changes
    from cosmosage.tools.cli.main import main

    module = codehash.command_module(["data", "synth"], main)
    closure = codehash.module_closure(module)
    assert "cosmosage.dataprep.synth.prompts" in closure
    path = closure["cosmosage.dataprep.synth.prompts"]
    root = codehash._package_root("cosmosage.dataprep.synth.prompts", path)
    files = codehash._data_files(root, codehash._parsed("x", path, "cosmosage")[2])
    assert root / "prompts" / "synth_qa.yaml" in files


def test_a_build_is_stale_when_the_code_that_runs_it_changes(tmp_path):
    """Under the CLI (as `recipe run` builds) the stamp records the code of the build's
    command; a stamp with other code, or none (made before stamps recorded it), is
    stale, and the reason says which."""
    from cosmosage.tools.cli.main import main

    (tmp_path / "in.txt").write_text("a")
    (tmp_path / "out.jsonl").write_text("{}")
    build = {"output": "out.jsonl", "command": ["data", "cloze", "in.txt", "--out", "out.jsonl"]}
    stamp = process.build_stamp("out.jsonl", tmp_path)
    stamp.parent.mkdir(parents=True)
    with click.Context(main):
        state = process.build_state(build, tmp_path)
        assert state["code"] == codehash.code_digest("cosmosage.tools.cli.data_papers")
        stamp.write_text(json.dumps(state))
        assert process.stale_reason(build, tmp_path) is None
        stamp.write_text(json.dumps(state | {"code": "0" * 64}))
        assert process.stale_reason(build, tmp_path) == "the code that runs it changed"
        stamp.write_text(json.dumps({k: v for k, v in state.items() if k != "code"}))
        assert "before builds recorded their code" in process.stale_reason(build, tmp_path)
    # outside the CLI the code is not known: a stamp that has it is not stale for that
    stamp.write_text(json.dumps(state))
    assert process.stale_reason(build, tmp_path) is None


def test_the_corpus_commands_code_includes_the_chunker_and_not_evaluation():
    from cosmosage.tools.cli.main import main

    closure = codehash.module_closure(codehash.command_module(["data", "corpus"], main))
    assert "cosmosage.dataprep.corpus.chunk.word_start" in closure
    # nor the recipe, run and publish code (a recipe check's edit does not rebuild data)
    assert not [
        m
        for m in closure
        if m.startswith(
            (
                "cosmosage.tools.eval",
                "cosmosage.tools.recipe",
                "cosmosage.tools.run",
                "cosmosage.tools.models",
            )
        )
    ]
