"""The layout reads top-down: each area imports only the areas below it, the installed
package list matches the tree, and nothing named plain `tools` or `dataprep` is installed."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# area -> the areas it may import (besides itself). Lower layers never import upper ones.
ALLOWED = {
    "dataprep.io": set(),
    "dataprep.shard": {"dataprep.io"},
    "dataprep.steps": {"dataprep.io"},
    "dataprep.corpus": {"dataprep.io", "dataprep.shard", "dataprep.steps"},
    "dataprep.chat": {"dataprep.io", "dataprep.shard", "dataprep.steps"},
    "dataprep.synth": {"dataprep.io", "dataprep.shard", "dataprep.steps", "dataprep.corpus"},
    "dataprep.papers": {"dataprep.io", "dataprep.steps"},
    "tools.recipe": {"dataprep.io"},
    "tools.models": {"dataprep.io", "dataprep.shard", "dataprep.corpus", "dataprep.chat"},
    "tools.eval": {"dataprep.io", "dataprep.synth"},
    "tools.run": {"dataprep.io", "tools.recipe", "tools.models", "tools.eval"},
}


def area(module: str) -> str:
    parts = module.split(".")[1:]  # drop "cosmosage"
    return ".".join(parts[:2])


def imports() -> list[tuple[str, str, str]]:
    """(file, importing module, imported module) for every cosmosage import in the package."""
    found = []
    for top in ("dataprep", "tools"):
        for f in sorted((ROOT / top).rglob("*.py")):
            module = "cosmosage." + ".".join(f.relative_to(ROOT).with_suffix("").parts)
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cosmosage"):
                    found.append((str(f.relative_to(ROOT)), module, node.module))
                elif isinstance(node, ast.Import):
                    found += [
                        (str(f.relative_to(ROOT)), module, a.name)
                        for a in node.names
                        if a.name.startswith("cosmosage")
                    ]
    return found


def test_nothing_imports_upward():
    wrong = [
        f"{f}: {area(src)} imports {dst}"
        for f, src, dst in imports()
        if area(src) != area(dst)
        and not area(src).startswith("tools.cli")
        and area(dst) not in ALLOWED[area(src)]
    ]
    assert wrong == []
    assert any(
        area(s) == "dataprep.synth" and area(d) == "dataprep.corpus" for _, s, d in imports()
    )


def test_command_modules_do_not_import_the_group_module():
    wrong = [
        f
        for f, src, dst in imports()
        if src.startswith("cosmosage.tools.cli.")
        and src != "cosmosage.tools.cli.main"
        and dst.startswith("cosmosage.tools.cli.main")
    ]
    assert wrong == []


def test_every_command_is_found_from_its_name():
    """`cosmosage <noun> <verb>`'s code is in tools/cli/<noun>.py (data: data_<area>.py)."""
    from cosmosage.tools.cli.main import main

    for noun, group in main.commands.items():
        for verb, command in group.commands.items():
            module = command.callback.__module__ if command.callback else type(command).__module__
            assert module.startswith(f"cosmosage.tools.cli.{noun}"), (noun, verb, module)


def test_installed_package_list_matches_the_tree():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        "cosmosage." + ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("dataprep", "tools")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert set(cfg["packages"]) == on_disk
    assert cfg["package-dir"] == {"cosmosage.dataprep": "dataprep", "cosmosage.tools": "tools"}


def test_no_plain_tools_or_dataprep_package_is_importable_outside_the_checkout(tmp_path):
    code = (
        "import importlib.util as u; "
        "print(u.find_spec('tools'), u.find_spec('dataprep'), u.find_spec('cosmosage.tools') is not None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["None", "None", "True"]
