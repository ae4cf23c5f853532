"""Compare two evaluations question by question: what a model gained, lost, and still
gets wrong, relative to another (a stage and its parent, a soup and its parts)."""

from __future__ import annotations

import json
from pathlib import Path

from cosmosage.dataprep.records import DataError
from cosmosage.tools.paths import RunFolder


def scores_file(path: str | Path) -> Path:
    """The scores.json a path names: itself, or a run folder's eval/scores.json."""
    p = Path(path)
    return RunFolder(p).scores if p.is_dir() else p


def load_result(path: str | Path) -> dict:
    """scores.json, or a run folder (its eval/scores.json)."""
    p = scores_file(path)
    if not p.is_file():
        raise DataError(f"{path}: no evaluation here (expected scores.json or a run folder)")
    return json.loads(p.read_text())


def pick(result: dict, label: str | None, option: str, where: str | Path) -> str:
    """The model `label` of an evaluation (its last one when None); `option` and `where`
    (the file) name it in the error."""
    labels = list(result["models"])
    if label is None:
        return labels[-1]
    if label not in labels:
        raise DataError(
            f"{option} {label!r}: {where} has no model of that label (its models: "
            f"{', '.join(labels)})"
        )
    return label


def compare(
    a: dict,
    b: dict,
    label_a: str | None = None,
    label_b: str | None = None,
    where: tuple[str | Path, str | Path] = ("A", "B"),
) -> dict:
    """Questions both evaluations asked, sorted into gained / lost / still_wrong /
    still_right; `where` names the two evaluations (their files) in errors."""
    la, lb = pick(a, label_a, "--label-a", where[0]), pick(b, label_b, "--label-b", where[1])
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
