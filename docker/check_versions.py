"""Fail when the installed packages do not satisfy pyproject.toml's dependencies.

Run in the image after the install (and anywhere else, e.g. on a rented GPU box):

    python docker/check_versions.py pyproject.toml [--extra gpu]

Every dependency of [project] (and of the named extras) whose environment marker holds
must be installed at a version its specifier allows; above all the pinned Axolotl, whose
version decides which config keys exist. Prints one line per dependency and exits 1 on
any mismatch.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement


def declared(pyproject: Path, extras: list[str]) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    reqs = list(project.get("dependencies") or [])
    optional = project.get("optional-dependencies") or {}
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"{pyproject}: no extra {extra!r} (has: {', '.join(optional)})")
        reqs += optional[extra]
    return [Requirement(r) for r in reqs]


def problems(reqs: list[Requirement]) -> list[str]:
    out = []
    for req in reqs:
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            print(f"skip     {req}  (marker does not apply here)")
            continue
        try:
            found = version(req.name)
        except PackageNotFoundError:
            out.append(f"{req}: not installed")
            print(f"MISSING  {req}")
            continue
        if req.specifier and not req.specifier.contains(found, prereleases=True):
            out.append(f"{req}: installed {found}")
            print(f"WRONG    {req}  (installed {found})")
        else:
            print(f"ok       {req}  ({found})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--extra", action="append", default=[], help="Check an extra too.")
    args = parser.parse_args(argv)
    bad = problems(declared(args.pyproject, args.extra))
    if bad:
        print(f"{len(bad)} dependency problem(s): " + "; ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
