"""The run registry: one JSON line per finished stage, so lineages can be rebuilt.

A record holds the run id, recipe and its hash, the parent model (a Hub id, a path, or
another record's model), data files with their hashes, the selected checkpoint and the
metrics. A model soup's record also lists every model it mixes in `parents` (with
`parent_model` the first of them) and its method and weights in `soup`. `tree` turns
the records into the model family tree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cosmosage.dataprep.io import atomic_writer
from cosmosage.tools.paths import ROOT


def registry_path(runs_dir: Path) -> Path:
    return runs_dir / "registry.jsonl"


def _lines(runs_dir: Path) -> list[tuple[int, str, dict | None]]:
    """(line number, raw line, record or None when the line is not a JSON object)."""
    path = registry_path(runs_dir)
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        out.append((n, line, rec if isinstance(rec, dict) else None))
    return out


def records(runs_dir: Path) -> list[dict]:
    """The readable records; a line that is not a JSON object (a half-written line, a
    hand edit) is skipped with a warning naming the file and line, never a crash."""
    found = []
    for n, line, rec in _lines(runs_dir):
        if rec is None:
            print(
                f"warning: {registry_path(runs_dir)}:{n}: not a registry record, skipped "
                f"({line[:60]!r})",
                file=sys.stderr,
            )
            continue
        found.append(rec)
    return found


def _rewrite(runs_dir: Path, change) -> None:
    """Rewrite the registry atomically: each record through `change` (None drops it),
    unreadable lines kept as they were (they are the user's to mend, not ours to lose)."""
    with atomic_writer(registry_path(runs_dir)) as fh:
        for _, line, rec in _lines(runs_dir):
            if rec is None:
                fh.write(line + "\n")
                continue
            rec = change(rec)
            if rec is not None:
                fh.write(json.dumps(rec, default=str) + "\n")


def append(runs_dir: Path, record: dict) -> None:
    """Add a record (replacing an earlier one of the same model), rewriting the file
    atomically, so a crash leaves the old registry or the new one, never a half line."""
    records(runs_dir)  # say which lines are unreadable before rewriting around them
    model = record.get("model")
    with atomic_writer(registry_path(runs_dir)) as fh:
        for _, line, rec in _lines(runs_dir):
            if rec is None:
                fh.write(line + "\n")
            elif rec.get("model") != model:
                fh.write(json.dumps(rec, default=str) + "\n")
        fh.write(json.dumps(record, default=str) + "\n")


def annotate(runs_dir: Path, model: str, **fields) -> None:
    """Add fields (evaluation scores, say) to the record of `model`."""
    if not any(r.get("model") == model for r in records(runs_dir)):
        return
    _rewrite(runs_dir, lambda r: {**r, **fields} if r.get("model") == model else r)


def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def loss_text(loss) -> str:
    """A loss as every listing prints it: 4 decimals (2.0160), `-` when there is none."""
    return f"{loss:.4f}" if _number(loss) else "-"


def score_text(record: dict) -> str:
    """The headline scores of a record for `runs list` / `runs tree`."""
    s = record.get("scores") or {}
    parts = [f"{k}={s[k]:.0%}" for k in ("general", "trained", "held_out", "paper_only") if k in s]
    parts += [f"{k}={v:.0%}" for k, v in s.items() if k.startswith("mc:")]
    if "ppl" in s:
        parts.append(f"ppl={s['ppl']:.2f}")
    return " ".join(parts)


def latest_model(runs_dir: Path, recipe: str) -> str | None:
    """The model folder of the newest completed stage made by `recipe`."""
    found = [
        r
        for r in records(runs_dir)
        if r.get("recipe") == recipe and Path(r.get("model", "")).exists()
    ]
    return found[-1]["model"] if found else None


def parents(record: dict) -> list[str]:
    """Every model a record was made from: `parents` (a soup mixes several), else the one
    `parent_model`."""
    return list(record.get("parents") or [record.get("parent_model", "")])


def _key(model: str) -> str:
    """Local folders compare by their resolved path, so `build/models/x` (relative to the
    working directory or the project) and `/abs/build/models/x` meet."""
    if not model:
        return model
    for path in (Path(model), ROOT / model):
        if path.exists():
            return str(path.resolve())
    return model


def _shown(model: str) -> str:
    """A model as the tree prints it: a folder inside the project relative to it (however
    the record spelt it), anything else as recorded."""
    key = _key(model)
    if key and Path(key).is_absolute():
        try:
            return str(Path(key).relative_to(ROOT.resolve()))
        except ValueError:
            pass
    return model


def tree(runs_dir: Path) -> list[str]:
    """Lines of an indented family tree: each model under the model it started from. A soup
    appears under each of its parents with its weight there; its own descendants are shown
    under its first parent only."""
    recs = records(runs_dir)
    by_model = {_key(r["model"]): r for r in recs}
    children: dict[str, list[tuple[dict, int]]] = {}
    for r in recs:
        for i, p in enumerate(parents(r)):
            children.setdefault(_key(p), []).append((r, i))
    roots: dict[str, str] = {}
    for p in sorted({p for r in recs for p in parents(r)}):
        if _key(p) not in by_model:
            roots.setdefault(_key(p), _shown(p))
    lines: list[str] = []

    def walk(model: str, depth: int) -> None:
        for r, i in children.get(_key(model), []):
            loss = r.get("metrics", {}).get("eval_loss_best")
            loss_s = f" eval_loss={loss_text(loss)}" if _number(loss) else ""
            scores = f" {score_text(r)}" if r.get("scores") else ""
            soup = r.get("soup") or {}
            weights = soup.get("weights") or []
            mix = ""
            if soup:
                share = f" x{weights[i]:g}" if i < len(weights) else " (base)"
                mix = f" soup:{soup.get('method', '?')}{share}"
            if i > 0:
                shown = _shown(r["model"])
                lines.append(f"{'  ' * depth}└─ {r['recipe']} [{r['run_id']}]{mix}  {shown}")
                continue
            lines.append(
                f"{'  ' * depth}└─ {r['recipe']} [{r['run_id']}]{mix}{loss_s}{scores}  "
                f"{_shown(r['model'])}"
            )
            walk(r["model"], depth + 1)

    for root in roots.values():
        lines.append(root or "(unknown base)")
        walk(root, 1)
    return lines
