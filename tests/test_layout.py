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
    "dataprep.env": set(),
    "dataprep.records": set(),
    "dataprep.io": set(),
    "dataprep.tokenizer": set(),
    "dataprep.shard": {"dataprep.io"},
    "dataprep.steps": {"dataprep.io"},
    "dataprep.corpus": {"dataprep.io", "dataprep.tokenizer", "dataprep.shard", "dataprep.steps"},
    "dataprep.chat": {"dataprep.io", "dataprep.tokenizer", "dataprep.shard", "dataprep.steps"},
    "dataprep.synth": {"dataprep.io", "dataprep.shard", "dataprep.steps", "dataprep.corpus"},
    "dataprep.papers": {"dataprep.io", "dataprep.steps"},
    "tools.errors": set(),
    "tools.paths": {"dataprep.io"},
    "tools.recipe": {"dataprep.io", "dataprep.chat", "tools.paths", "tools.models"},
    "tools.models": {
        "dataprep.io",
        "dataprep.tokenizer",
        "dataprep.shard",
        "dataprep.corpus",
        "dataprep.chat",
        "tools.paths",
    },
    "tools.eval": {"dataprep.io", "dataprep.synth", "tools.paths"},
    "tools.run": {"dataprep.io", "tools.paths", "tools.recipe", "tools.models", "tools.eval"},
}


def area(module: str) -> str:
    parts = module.split(".")[1:]  # drop "cosmosage"
    return ".".join(parts[:2])


def imported(module: str, name: str) -> str:
    """`from module import name`: the module `name` is when it is one (a submodule), else
    `module`."""
    rel = Path(*module.split(".")[1:], name)
    return f"{module}.{name}" if (ROOT / rel).is_dir() or (ROOT / f"{rel}.py").is_file() else module


def imports() -> list[tuple[str, str, str]]:
    """(file, importing module, imported module) for every cosmosage import in the package."""
    found = []
    for top in ("dataprep", "tools"):
        for f in sorted((ROOT / top).rglob("*.py")):
            module = "cosmosage." + ".".join(f.relative_to(ROOT).with_suffix("").parts)
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cosmosage"):
                    found += [
                        (str(f.relative_to(ROOT)), module, imported(node.module, a.name))
                        for a in node.names
                    ]
                elif isinstance(node, ast.Import):
                    found += [
                        (str(f.relative_to(ROOT)), module, a.name)
                        for a in node.names
                        if a.name.startswith("cosmosage")
                    ]
    return found


# Below every area: the environment of the child processes (one offline rule) and the
# records and parsers that open no file (dataprep/records.py, under dataprep/io.py).
EVERY_AREA_MAY_IMPORT = {"dataprep.env", "dataprep.records"}
# ... and the tools' errors (tools/errors.py), which import nothing
TOOLS_MAY_IMPORT = {"tools.errors"}


def test_nothing_imports_upward():
    wrong = [
        f"{f}: {area(src)} imports {dst}"
        for f, src, dst in imports()
        if area(src) != area(dst)
        and not area(src).startswith("tools.cli")
        and area(dst) not in ALLOWED[area(src)] | EVERY_AREA_MAY_IMPORT
        and not (area(src).startswith("tools.") and area(dst) in TOOLS_MAY_IMPORT)
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


# The names of a run folder's files, written only in tools/paths.py (RunFolder,
# StageFolder); every other module asks it.
RUN_FILE_NAMES = (
    '"run.json"',
    '"summary.md"',
    '"metrics.json"',
    '"select.json"',
    '"merge_check.json"',
    '"mergekit.yaml"',
    '"train.log"',
    '"axolotl.yaml"',
    '"early_stop.json"',
    '/ "runs"',
)


def test_the_run_folder_layout_is_written_in_one_module():
    wrong = [
        f"{f.relative_to(ROOT)}:{n}: {name}"
        for top in ("dataprep", "tools")
        for f in sorted((ROOT / top).rglob("*.py"))
        if f != ROOT / "tools" / "paths.py"
        for n, line in enumerate(f.read_text().splitlines(), 1)
        for name in RUN_FILE_NAMES
        if name in line
    ]
    assert wrong == []


def test_only_one_module_decides_when_a_child_process_goes_offline():
    wrong = [
        f"{f.relative_to(ROOT)}:{n}"
        for top in ("dataprep", "tools")
        for f in sorted((ROOT / top).rglob("*.py"))
        if f != ROOT / "dataprep" / "env.py"
        for n, line in enumerate(f.read_text().splitlines(), 1)
        if '"HF_HUB_OFFLINE"' in line or '"HF_DATASETS_OFFLINE"' in line
    ]
    assert wrong == []


# Size limits: no module over 500 lines, no function over 80.
MODULE_LINES, FUNCTION_LINES = 500, 80
KNOWN_LONG_MODULES: dict[str, int] = {}
KNOWN_LONG_FUNCTIONS: dict[str, int] = {}


def sizes() -> tuple[dict[str, int], dict[str, int]]:
    modules, functions = {}, {}
    for top in ("dataprep", "tools"):
        for f in sorted((ROOT / top).rglob("*.py")):
            rel = str(f.relative_to(ROOT))
            text = f.read_text()
            modules[rel] = len(text.splitlines())
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    functions[f"{rel}:{node.name}"] = node.end_lineno - node.lineno + 1
    return modules, functions


def test_no_module_or_function_grows_past_its_limit():
    modules, functions = sizes()
    long_modules = {m: n for m, n in modules.items() if n > KNOWN_LONG_MODULES.get(m, MODULE_LINES)}
    long_functions = {
        f: n for f, n in functions.items() if n > KNOWN_LONG_FUNCTIONS.get(f, FUNCTION_LINES)
    }
    assert long_modules == {} and long_functions == {}
    # a known one that shrank below the limit leaves the list
    assert all(modules.get(m, 0) > MODULE_LINES for m in KNOWN_LONG_MODULES)
    assert all(functions.get(f, 0) > FUNCTION_LINES for f in KNOWN_LONG_FUNCTIONS)
