"""The shape of a run folder, for comparing two runs whose numbers differ (training on
two CPU threads is not bit-for-bit repeatable): every file's path, with Axolotl's
hashed dataset folders named <hash>, and every JSON file's keys, nested, values left
out. `python -m tests.helpers.run_shape RUN_DIR` prints it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

_HASH = re.compile(r"\b[0-9a-f]{32}\b")
_STEP = re.compile(r"\b(checkpoint|step)-\d+\b")


def _name(rel: str) -> str:
    return _STEP.sub(r"\1-N", _HASH.sub("<hash>", rel))


def skeleton(value):
    """The keys of a JSON value, nested; a list by its first item; any other value '-'."""
    if isinstance(value, dict):
        return {_name(str(k)): skeleton(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [skeleton(value[0])] if value else []
    return "-"


def shape(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    files = sorted({_name(str(f.relative_to(run_dir))) for f in run_dir.rglob("*") if f.is_file()})
    keys = {}
    for f in sorted(run_dir.rglob("*.json")):
        rel = _name(str(f.relative_to(run_dir)))
        if "/output/" in f"/{rel}" or "/prepared/" in f"/{rel}":
            continue  # Axolotl's and the datasets library's own files
        keys[rel] = skeleton(json.loads(f.read_text()))
    return {"files": files, "json": keys}


if __name__ == "__main__":
    print(json.dumps(shape(Path(sys.argv[1])), indent=1))
