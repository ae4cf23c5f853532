"""Compare two evaluations question by question: what a model gained, lost, and still
gets wrong, relative to another (a stage and its parent, a soup and its parts)."""

from __future__ import annotations

import json
from pathlib import Path

from cosmosage.dataprep.records import DataError
from cosmosage.tools.paths import RunFolder


def load_result(path: str | Path) -> dict:
    """scores.json, or a run folder (its eval/scores.json)."""
    p = Path(path)
    if p.is_dir():
        p = RunFolder(p).scores
    if not p.is_file():
        raise DataError(f"{path}: no evaluation here (expected scores.json or a run folder)")
    return json.loads(p.read_text())


def pick(result: dict, label: str | None, where: str) -> str:
    labels = list(result["models"])
    if label is None:
        return labels[-1]
    if label not in labels:
        raise DataError(f"{where}: no model {label!r} (models: {', '.join(labels)})")
    return label


def compare(a: dict, b: dict, label_a: str | None = None, label_b: str | None = None) -> dict:
    """Questions both evaluations asked, sorted into gained / lost / still_wrong / still_right."""
    la, lb = pick(a, label_a, "first"), pick(b, label_b, "second")
    rows_b = {r["id"]: r for r in b["answers"]}
    out: dict[str, list] = {"gained": [], "lost": [], "still_wrong": [], "still_right": []}
    for ra in a["answers"]:
        rb = rows_b.get(ra["id"])
        if rb is None or ra.get(f"{la}_pass") is None or rb.get(f"{lb}_pass") is None:
            continue
        pa, pb = bool(ra[f"{la}_pass"]), bool(rb[f"{lb}_pass"])
        key = {(False, True): "gained", (True, False): "lost", (False, False): "still_wrong"}.get(
            (pa, pb), "still_right"
        )
        out[key].append({"id": ra["id"], "prompt": ra["prompt"], "a": ra[la], "b": rb[lb]})
    return {"a": la, "b": lb, **out}


def compare_markdown(diff: dict) -> str:
    lines = [
        f"# {diff['a']} -> {diff['b']}",
        "",
        "| gained | lost | still wrong | still right |",
        "|---|---|---|---|",
        f"| {len(diff['gained'])} | {len(diff['lost'])} | {len(diff['still_wrong'])} | "
        f"{len(diff['still_right'])} |",
        "",
    ]
    for key, title in (("gained", "Gained"), ("lost", "Lost"), ("still_wrong", "Still wrong")):
        if diff[key]:
            lines += [f"## {title}", ""]
            for q in diff[key]:
                lines.append(f"- **{q['id']}**: {q['prompt']}")
                lines.append(f"  - {diff['a']}: {q['a']!r}")
                lines.append(f"  - {diff['b']}: {q['b']!r}")
            lines.append("")
    return "\n".join(lines)
