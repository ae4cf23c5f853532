"""`sweep`: train one recipe over a grid of settings, one run per combination, and compare
the runs in one table and one plot.

    runs/sweeps/<recipe>/<name>/      <name>: --name, or a hash of recipe, grid and overrides
      sweep.json    the grid, the fixed overrides and every combination: its --set values,
                    status (pending, running, complete, failed, failed thresholds,
                    interrupted), run folder, wall time, error
      results.md    one row per combination, sorted by a metric; with a `seed` axis, also
                    each configuration's mean, spread and range over its seeds
      results.csv   the same columns, plain values
      results.png   the sort metric per combination, and against the first numeric axis
      prepared/     the tokenized datasets every combination shares (Axolotl's
                    dataset_prepared_path, unless the sweep sets it itself)

Every combination is an ordinary `recipe run` with its values as `--set` overrides after
the sweep's own (so every stage of a pipeline gets them); its run folder is
runs/<recipe>/<run-id>/ and the registry records it as usual. Running the same sweep again
skips what finished, resumes an interrupted combination from its last checkpoint when its
run is still the recipe's newest unfinished one (else restarts it) and runs the rest. Run
with more values on the same axes under the same --name, a sweep grows: what finished is
kept and only the new combinations run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from cosmosage.dataprep.io import write_json
from cosmosage.tools import paths
from cosmosage.tools.paths import ROOT, RunFolder
from cosmosage.tools.run import launcher, registry
from cosmosage.tools.run.stage import Echo, LaunchError

SWEEPS_DIR = "sweeps"
FINISHED = ("complete", "failed thresholds")
# the last part of a column name (after its last dot) that makes lower values better
_AXIS_START = re.compile(r"\s+(?=[A-Za-z_][\w.:-]*=)")


class SweepError(LaunchError):
    """A sweep cannot start or be reported; the message says why."""


# --------------------------------------------------------------------------- the grid


def split_values(text: str) -> list[str]:
    """`1e-4,1e-3` -> ["1e-4", "1e-3"]; commas inside [] or {} belong to the value."""
    values, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    """`--grid` arguments -> {key: [value text, ...]} in the order given. One argument holds
    one axis `KEY=V1,V2,...` or several separated by spaces; values stay as typed (they
    become `--set KEY=V` overrides)."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        for axis in _AXIS_START.split(spec.strip()):
            key, sep, text = axis.partition("=")
            key = key.strip()
            values = split_values(text) if sep else []
            if not key or not sep or not text.strip() or "" in values:
                raise SweepError(f"--grid {axis!r}: expected KEY=V1,V2,...")
            if key in grid:
                raise SweepError(f"--grid: {key} is given twice; list all its values once")
            if len(set(values)) != len(values):
                raise SweepError(f"--grid {axis!r}: a value is repeated")
            grid[key] = values
    if not grid:
        raise SweepError("a sweep needs at least one --grid KEY=V1,V2")
    return grid


def expand(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the axes; the first axis changes slowest, the last fastest."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def combination_sets(values: dict[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in values.items()]


def values_text(values: dict[str, str]) -> str:
    return " ".join(combination_sets(values))


def sweep_name(recipe: str, grid: dict, sets: list[str], unsets: list[str]) -> str:
    """The default sweep name: the same command gives the same folder."""
    text = json.dumps([recipe, grid, sets, unsets], sort_keys=False)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def sweep_dir(runs_dir: Path, recipe: str, name: str) -> Path:
    return runs_dir / SWEEPS_DIR / recipe / name


def runs_dir_of(folder: Path, doc: dict) -> Path:
    """The runs folder a sweep folder lies in: runs/sweeps/<recipe>/<name> -> runs."""
    return folder.resolve().parents[len(doc["recipe"].split("/")) + 1]


# --------------------------------------------------------------------------- planning


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def plan(
    recipe: str,
    grid: dict[str, list[str]],
    sets: list[str] | None = None,
    unsets: list[str] | None = None,
    name: str | None = None,
    runs_dir: Path | None = None,
    root: Path | None = None,
) -> tuple[Path, dict]:
    """The sweep folder and its sweep.json content: the saved one when this sweep ran
    before, else a new one with every combination pending. Renders every combination
    first, so a bad key or value stops the sweep before anything trains."""
    root = root or ROOT
    runs_dir = paths.runs_dir(runs_dir, root)
    sets, unsets = list(sets or []), list(unsets or [])
    _, stages = launcher.plan(recipe, sets, unsets, root)
    keys = {s.key for s in stages}
    if len(stages) > 1:
        for axis in grid:
            if axis.split(".", 1)[0] in keys:
                raise SweepError(
                    f"--grid {axis}: grid values apply to every stage of {recipe}; to sweep one "
                    f"stage, sweep its own recipe (e.g. `cosmosage sweep "
                    f"{stages[-1].name} --grid ...`)"
                )
    combos = expand(grid)
    for values in combos:
        launcher.plan(recipe, [*sets, *combination_sets(values)], unsets, root)
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
        raise SweepError(f"--name {name!r}: letters, digits, '.', '_' and '-' only")
    name = name or sweep_name(recipe, grid, sets, unsets)
    folder = sweep_dir(runs_dir, recipe, name).resolve()
    definition = {"recipe": recipe, "grid": grid, "sets": sets, "unsets": unsets}
    saved = folder / "sweep.json"
    if saved.is_file():
        doc = json.loads(saved.read_text())
        if extends_grid(doc, definition):
            return folder, extend(doc, combos, grid)
        if {k: doc.get(k) for k in definition} != definition:
            raise SweepError(
                f"{folder} holds another sweep ({doc.get('recipe')}, grid {doc.get('grid')}, "
                f"--set {doc.get('sets')}); give this one another --name"
            )
        return folder, doc
    given = [*grid, *(s.split("=", 1)[0].strip() for s in sets), *unsets]
    shared = (
        [] if "dataset_prepared_path" in given else [f"dataset_prepared_path={folder / 'prepared'}"]
    )
    doc = {
        **definition,
        "name": name,
        "stages": [s.key for s in stages],
        "shared_sets": shared,
        "created": _now(),
        "combinations": [],
    }
    return folder, extend(doc, combos, grid)


def extends_grid(doc: dict, definition: dict) -> bool:
    """The new definition is the saved sweep with more values on some of the same axes."""
    old, new = doc.get("grid") or {}, definition["grid"]
    same_rest = all(doc.get(k) == definition[k] for k in ("recipe", "sets", "unsets"))
    return (
        same_rest
        and old != new
        and list(old) == list(new)
        and all(set(old[axis]) <= set(new[axis]) for axis in old)
    )


def extend(doc: dict, combos: list[dict[str, str]], grid: dict[str, list[str]]) -> dict:
    """Add the combinations a larger grid has beyond the saved ones (pending), keeping every
    saved combination, its status and its run."""
    known = [c["values"] for c in doc["combinations"]]
    added = [v for v in combos if v not in known]
    start = len(doc["combinations"])
    doc["combinations"] += [
        {
            "index": start + i,
            "values": values,
            "sets": combination_sets(values),
            "status": "pending",
            "run": None,
            "attempts": 0,
            "wall_s": 0.0,
            "error": None,
        }
        for i, values in enumerate(added, start=1)
    ]
    doc["grid"] = grid
    return doc


def run_sets(doc: dict, combo: dict) -> list[str]:
    """The --set overrides of a combination's run: the sweep's, then the shared tokenized
    dataset folder, then the combination's values."""
    return [*doc["sets"], *doc.get("shared_sets", []), *combo["sets"]]


def save(folder: Path, doc: dict) -> None:
    doc["updated"] = _now()
    write_json(folder / "sweep.json", doc)


def load(folder: Path) -> dict:
    path = folder / "sweep.json"
    if not path.is_file():
        raise SweepError(f"{folder}: no sweep.json here (not a sweep folder)")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- running


def read_counts(runs_dir: Path, run: str | None) -> dict:
    """[passed, scored] per model label and score key, from the run's eval/scores.json."""
    path = RunFolder(runs_dir / run).scores if run else None
    if not path or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get("counts") or {}
    except ValueError:
        return {}


def read_run(runs_dir: Path, run: str | None) -> dict:
    return RunFolder(runs_dir / run).record() if run else {}


def find_run(
    runs_dir: Path, recipe: str, sets: list[str], unsets: list[str], since: str
) -> str | None:
    """The newest run of `recipe` started at or after run id `since` with exactly these
    overrides (the folder `run_recipe` made for a combination), relative to runs_dir."""
    base = runs_dir / recipe
    if not base.is_dir():
        return None
    for d in sorted(base.iterdir(), reverse=True):
        if d.name < since or not RunFolder.is_run(d):
            continue
        record = RunFolder(d).record()
        if record.get("overrides") == {"set": sets, "unset": unsets}:
            return str(d.relative_to(runs_dir))
    return None


def _wait_for_new_run_id(runs_dir: Path, recipe: str) -> None:
    """Run ids have one-second resolution: never start a run where the last one started."""
    deadline = time.monotonic() + 2.0
    while (runs_dir / recipe / launcher.new_run_id()).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _label(combo: dict, total: int) -> str:
    return f"[{combo['index']}/{total}] {values_text(combo['values'])}"


def decide(combo: dict, doc: dict, runs_dir: Path, retry_failed: bool) -> tuple[str, str]:
    """What to do with a combination now: ("skip" | "run" | "resume", why)."""
    status, run = combo["status"], combo.get("run")
    if status in FINISHED and read_run(runs_dir, run):
        return "skip", f"{status} in {runs_dir / run}"
    if status == "failed" and not retry_failed:
        return "skip", f"failed earlier ({combo.get('error')}); --retry-failed runs it again"
    if status in ("interrupted", "running"):
        sets = run_sets(doc, combo)
        run = run or find_run(runs_dir, doc["recipe"], sets, doc["unsets"], combo.get("since", ""))
        newest = launcher.find_resumable(runs_dir, doc["recipe"])
        if run and newest is not None and newest.resolve() == (runs_dir / run).resolve():
            combo["run"] = run
            return "resume", f"resuming {runs_dir / run}"
        return "run", "interrupted earlier; its run is not the newest unfinished one, restarting"
    return "run", ""


def run_combination(
    folder: Path, doc: dict, combo: dict, resume: bool, runs_dir: Path, root: Path, echo: Echo
) -> None:
    """One `recipe run` with the combination's overrides; the outcome goes into sweep.json.
    Errors are recorded and not raised; an interruption (Ctrl-C) is recorded and raised."""
    recipe = doc["recipe"]
    sets, unsets = run_sets(doc, combo), list(doc["unsets"])
    if not resume:
        if combo.get("run"):
            combo.setdefault("previous_runs", []).append(combo["run"])
        combo["run"] = None
        _wait_for_new_run_id(runs_dir, recipe)
    combo.update(
        status="running",
        since=launcher.new_run_id(),
        started=_now(),
        attempts=combo.get("attempts", 0) + 1,
        error=None,
    )
    combo.pop("error_detail", None)
    save(folder, doc)
    t0 = time.monotonic()
    try:
        launcher.run_recipe(
            recipe, sets, unsets, resume=resume, echo=echo, root=root, runs_dir=runs_dir
        )
        combo["status"] = "complete"
    except KeyboardInterrupt:
        combo["status"], combo["error"] = "interrupted", "interrupted"
        raise
    except Exception as exc:  # one combination's failure must not end the sweep
        text = str(exc) or type(exc).__name__
        combo["status"], combo["error"], combo["error_detail"] = (
            "failed",
            text.splitlines()[0],
            text,
        )
    finally:
        combo["wall_s"] = round(combo.get("wall_s", 0.0) + time.monotonic() - t0, 3)
        combo["finished"] = _now()
        combo["run"] = combo.get("run") or find_run(runs_dir, recipe, sets, unsets, combo["since"])
        record = read_run(runs_dir, combo["run"])
        if record.get("status") == "failed thresholds":
            combo["status"] = "failed thresholds"
            combo["error"] = "; ".join(record.get("threshold_failures") or []) or combo["error"]
        if combo["status"] in FINISHED:
            for stage in (record.get("stages") or {}).values():
                registry.annotate(
                    runs_dir,
                    stage["model"],
                    sweep=f"{recipe}/{doc['name']}",
                    sweep_values=combo["values"],
                )
        save(folder, doc)


def run_sweep(
    recipe: str,
    grid_specs: list[str],
    sets: list[str] | None = None,
    unsets: list[str] | None = None,
    name: str | None = None,
    sort: str | None = None,
    retry_failed: bool = False,
    dry_run: bool = False,
    echo: Echo = print,
    root: Path | None = None,
    runs_dir: Path | None = None,
) -> dict:
    """Run every combination not finished yet, then write results.md/.csv/.png. Returns
    {"dir", "doc", "ran", "skipped", and from `report`: "rows", "sort", "files"}."""
    root = root or ROOT
    runs_dir = paths.runs_dir(runs_dir, root)
    grid = parse_grid(grid_specs)
    folder, doc = plan(recipe, grid, sets, unsets, name, runs_dir, root)
    total = len(doc["combinations"])
    echo(f"sweep  {recipe}: {total} combinations of {', '.join(grid)}  ({folder})")
    ran, skipped = [], []
    if dry_run:
        for combo in doc["combinations"]:
            action, why = decide(dict(combo), doc, runs_dir, retry_failed)
            line = f"{action:6} {_label(combo, total)}"
            echo(f"{line}  ({why})" if why else line)
        return {"dir": folder, "doc": doc, "ran": ran, "skipped": skipped, "dry_run": True}
    folder.mkdir(parents=True, exist_ok=True)
    save(folder, doc)
    for combo in doc["combinations"]:
        action, why = decide(combo, doc, runs_dir, retry_failed)
        if action == "skip":
            echo(f"skip   {_label(combo, total)}: {why}")
            skipped.append(combo["index"])
            continue
        echo(f"run    {_label(combo, total)}" + (f"  ({why})" if why else ""))
        run_combination(folder, doc, combo, action == "resume", runs_dir, root, echo)
        ran.append(combo["index"])
        outcome = combo["status"] + (f": {combo['error']}" if combo.get("error") else "")
        echo(f"done   {_label(combo, total)}: {outcome} ({combo['wall_s']} s)")
    from cosmosage.tools.run.sweep_report import report

    result = report(folder, sort, echo=echo)
    return {**result, "ran": ran, "skipped": skipped}
