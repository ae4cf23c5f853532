"""What one CPU training stage costs beyond its training steps, with and without the
settings `recipe run` gives CPU stages: `dataset_num_proc: 1` (recipes/_base/hardware/
cpu.yaml), the gc.freeze plugin (tools/run/gc_freeze.py) and the plugin that saves
prepared splits without a spawned pool (tools/run/save_in_process.py).

Runs the recipe once with `recipe run` (data built, the stage's Axolotl config written),
then times `axolotl train` on that config in four forms, taking turns, `--rounds` times
each: Axolotl's defaults (one dataset process per core, no plugin: the baseline), one
dataset process, that with the gc.freeze plugin, and the config as `recipe run` writes
it (all three). Prints each form's median wall time and its ratio to the baseline,
measured in the same run.

    .venv/bin/python bench/stage_overhead.py                 # tiny/smoke, 3 rounds
    .venv/bin/python bench/stage_overhead.py --recipe tiny/qlora --rounds 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cosmosage.tools.run.process import build_argv, build_env, tail
from cosmosage.tools.run.stage import GC_FREEZE, STAGE_PLUGINS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def forms(cfg: dict) -> dict[str, dict]:
    """The stage's config as Axolotl's defaults, with one dataset process, with the
    gc.freeze plugin too, and as written."""
    others = [p for p in cfg.get("plugins") or [] if p not in STAGE_PLUGINS]
    plain = {k: v for k, v in cfg.items() if k not in ("dataset_num_proc", "plugins")}
    if others:
        plain["plugins"] = others
    one = {**plain, "dataset_num_proc": 1}
    return {
        "Axolotl's defaults (baseline)": plain,
        "dataset_num_proc: 1": one,
        "+ gc.freeze plugin": {**one, "plugins": [GC_FREEZE, *others]},
        "+ save in process (recipe run)": cfg,
    }


def timed_train(cfg: dict, work: Path, env: dict) -> float:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = {**cfg, "output_dir": str(work / "out"), "dataset_prepared_path": str(work / "prep")}
    path = work / "axolotl.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    t0 = time.perf_counter()
    with open(work / "train.log", "wb") as log:
        rc = subprocess.run(
            build_argv(path, {}), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        ).returncode
    if rc:  # the folder is removed on the way out: the log's end goes with the error
        raise SystemExit(f"axolotl train failed (exit {rc}):\n{tail(work / 'train.log')}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--recipe", default="tiny/smoke", help="a one-stage CPU recipe")
    ap.add_argument("--rounds", type=int, default=3, help="timed runs of each form")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="cosmosage-stage-"))
    try:
        first = [str(BIN / "cosmosage"), "recipe", "run", args.recipe]
        done = subprocess.run(first + ["--runs-dir", str(tmp / "runs")], cwd=ROOT)
        if done.returncode:  # recipe run has said why, above
            raise SystemExit(f"stage_overhead: `{' '.join(first[1:])}` failed")
        written = sorted((tmp / "runs").rglob("axolotl.yaml"))
        if len(written) != 1:
            raise SystemExit(
                f"{args.recipe}: wrote {len(written)} stage configs; name a one-stage recipe"
            )
        written = written[0]
        cfg = yaml.safe_load(written.read_text())
        env = build_env(cfg, ROOT)
        walls: dict[str, list[float]] = {name: [] for name in forms(cfg)}
        for r in range(args.rounds):
            for i, (name, form) in enumerate(forms(cfg).items()):
                walls[name].append(timed_train(form, tmp / f"form{i}", env))
                print(f"round {r + 1}: {name:34} {walls[name][-1]:6.1f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(next(iter(walls.values())))
    print(f"\n{args.recipe}: one stage, `axolotl train` wall, median of {args.rounds}")
    print(f"{'form':34} {'median s':>9} {'min-max s':>12} {'x baseline':>11}")
    for name, ws in walls.items():
        med = statistics.median(ws)
        print(f"{name:34} {med:9.1f} {min(ws):5.1f}-{max(ws):<6.1f} {med / base:11.2f}")
    print(f"cores: {os.cpu_count()}")
    return walls


if __name__ == "__main__":
    main()
