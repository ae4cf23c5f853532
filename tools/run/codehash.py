"""What code makes a build: the digest of the module that holds a `cosmosage ...`
command and of every module of the package it imports, directly or through others.

A build's stamp keeps this digest beside its command and inputs, so a build is redone
when the code that writes it changes (a fixed chunker, a new cleaning rule), not only
when its inputs do. The digest is of each module's syntax tree, so comments, blank lines
and formatting do not count; docstrings and code do. Imports are followed within the
package only: a new version of a library is not seen.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import importlib.util
import inspect
import sys
from pathlib import Path

import click

# path -> (size, mtime_ns, tree dump, modules it imports, data folders it reads): a
# launcher asks for the same modules once per build
_PARSED: dict[str, tuple[int, int, str, tuple[str, ...], tuple[str, ...]]] = {}

# A module that reads files bundled beside the package (prompt templates) names their
# folders, relative to the package's root, in a top-level `BUNDLED_DATA = ("prompts",)`;
# those files' bytes are then part of the digest, as its code is.
DATA_MARKER = "BUNDLED_DATA"


def command_module(argv: list[str], main: click.Group | None = None) -> str | None:
    """The module holding the callback of `cosmosage argv...` in the CLI `main` (default:
    the running command's root group), or None when there is no such command or no CLI
    is running."""
    if main is None:
        ctx = click.get_current_context(silent=True)
        if ctx is None:
            return None
        main = ctx.find_root().command
    cmd, args = main, list(argv)
    while isinstance(cmd, click.Group) and args:
        cmd = cmd.get_command(click.Context(cmd), args.pop(0))
    if cmd is None or isinstance(cmd, click.Group) or cmd.callback is None:
        return None
    return inspect.unwrap(cmd.callback).__module__


def _spec(module: str) -> importlib.machinery.ModuleSpec | None:
    """`module`'s spec, found without importing it: by the import system for a loaded
    module or a top-level one, else on its parent package's path."""
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__spec__", None):
        return loaded.__spec__
    parent, _, _ = module.rpartition(".")
    where = _spec(parent) if parent else None
    if where is not None and where.submodule_search_locations:
        found = importlib.machinery.PathFinder.find_spec(module, where.submodule_search_locations)
        if found is not None:
            return found
    if parent and where is None:
        return None
    try:  # a top-level package, or one an import hook maps (an editable install)
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def _source(module: str) -> Path | None:
    spec = _spec(module)
    origin = spec.origin if spec else None
    return Path(origin) if origin and origin.endswith(".py") else None


def _imports(tree: ast.AST, module: str, is_package: bool, top: str) -> set[str]:
    """The modules of the package `top` that `module`'s tree imports anywhere (functions
    included): `from a.b import c` is `a.b.c` when c is a module, else `a.b`."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here[: len(here) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            if _inside(base, top):
                found |= {f"{base}.{a.name}" for a in node.names if _source(f"{base}.{a.name}")}
    return {m for m in found if _inside(m, top)}


def _inside(module: str, top: str) -> bool:
    return module == top or module.startswith(top + ".")


def _bundled(tree: ast.Module) -> tuple[str, ...]:
    """The folders a module's top-level `BUNDLED_DATA = (...)` names (strings only)."""
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == DATA_MARKER for t in node.targets)
            and isinstance(node.value, ast.Tuple | ast.List)
        ):
            return tuple(
                e.value
                for e in node.value.elts
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            )
    return ()


def _parsed(module: str, path: Path, top: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """`module`'s tree dump, the package modules it imports and the data folders it reads."""
    st = path.stat()
    hit = _PARSED.get(str(path))
    if hit and hit[:2] == (st.st_size, st.st_mtime_ns):
        return hit[2:]
    tree = ast.parse(path.read_bytes(), filename=str(path))
    deps = tuple(sorted(_imports(tree, module, path.name == "__init__.py", top)))
    _PARSED[str(path)] = (st.st_size, st.st_mtime_ns, ast.dump(tree), deps, _bundled(tree))
    return _PARSED[str(path)][2:]


def _package_root(module: str, path: Path) -> Path:
    """The folder the top-level package of `module` maps to (its file is `path`)."""
    depth = module.count(".") + (path.name == "__init__.py")
    return path.parents[depth - 1]


def _data_files(root: Path, folders: tuple[str, ...]) -> list[Path]:
    return sorted(f for d in folders for f in (root / d).rglob("*") if f.is_file())


def module_closure(module: str) -> dict[str, Path]:
    """`module` and every module of its top-level package it imports, directly or not,
    with the packages (`__init__.py`) above each, which importing it runs."""
    top = module.split(".")[0]
    found: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            step = ".".join(parts[:i])
            if step in found:
                continue
            path = _source(step)
            if path is None:
                continue
            found[step] = path
            todo.extend(_parsed(step, path, top)[1])
    return found


def code_digest(module: str) -> str:
    """sha256 over the syntax trees of `module_closure(module)`, in name order, and the
    bytes of the bundled files any of them reads (`BUNDLED_DATA`)."""
    h = hashlib.sha256()
    closure = module_closure(module)
    for name, path in sorted(closure.items()):
        tree, _, folders = _parsed(name, path, name.split(".")[0])
        h.update(f"{name}\n{tree}\n".encode())
        for f in _data_files(root := _package_root(name, path), folders):
            h.update(f"{f.relative_to(root)}\n".encode() + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def build_code(argv: list[str]) -> str | None:
    """The digest of the code that runs `cosmosage argv...`, or None outside the CLI or
    for a command it does not have (the stamp then keeps command and inputs only)."""
    module = command_module([str(a) for a in argv])
    return code_digest(module) if module else None
