"""The run registry: one JSON line per finished stage, so lineages can be rebuilt.

A record holds the run id, recipe and its hash, the parent model (a Hub id, a path, or
another record's model), data files with their hashes, the selected checkpoint and the
metrics. A model soup's record also lists every model it mixes in `parents` (with
`parent_model` the first of them) and its method and weights in `soup`. `tree` turns
the records into the model family tree.
"""

from __future__ import annotations

import json
from pathlib import Path

from cosmosage.dataprep.io import atomic_writer
from cosmosage.tools.recipe.render import ROOT


def registry_path(runs_dir: Path) -> Path:
    return runs_dir / "registry.jsonl"


def records(runs_dir: Path) -> list[dict]:
    path = registry_path(runs_dir)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append(runs_dir: Path, record: dict) -> None:
    """Rewrite atomically with the new record added (registries are small)."""
    existing = [r for r in records(runs_dir) if r.get("model") != record.get("model")]
    with atomic_writer(registry_path(runs_dir)) as fh:
        for r in [*existing, record]:
            fh.write(json.dumps(r, default=str) + "\n")


def annotate(runs_dir: Path, model: str, **fields) -> None:
    """Add fields (evaluation scores, say) to the record of `model`."""
    recs = records(runs_dir)
    if not any(r.get("model") == model for r in recs):
        return
    with atomic_writer(registry_path(runs_dir)) as fh:
        for r in recs:
            if r.get("model") == model:
                r = {**r, **fields}
            fh.write(json.dumps(r, default=str) + "\n")


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
            roots.setdefault(_key(p), p)
    lines: list[str] = []

    def walk(model: str, depth: int) -> None:
        for r, i in children.get(_key(model), []):
            loss = r.get("metrics", {}).get("eval_loss_best")
            loss_s = f" eval_loss={loss:.4f}" if isinstance(loss, float) else ""
            scores = f" {score_text(r)}" if r.get("scores") else ""
            soup = r.get("soup") or {}
            weights = soup.get("weights") or []
            mix = ""
            if soup:
                share = f" x{weights[i]:g}" if i < len(weights) else " (base)"
                mix = f" soup:{soup.get('method', '?')}{share}"
            if i > 0:
                lines.append(f"{'  ' * depth}└─ {r['recipe']} [{r['run_id']}]{mix}  {r['model']}")
                continue
            lines.append(
                f"{'  ' * depth}└─ {r['recipe']} [{r['run_id']}]{mix}{loss_s}{scores}  {r['model']}"
            )
            walk(r["model"], depth + 1)

    for root in roots.values():
        lines.append(root or "(unknown base)")
        walk(root, 1)
    return lines
