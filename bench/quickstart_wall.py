"""Wall time of `cosmosage recipe run quickstart` against raw Axolotl on the same configs.

Runs the whole quickstart (builds, checks, two trainings, selection, merge, evaluation,
card) in a fresh runs folder, then runs `axolotl train` alone on the two configs that
run wrote, and prints both with their ratio. Target: quickstart <= 180 s on 2 cores.

    make bench            # or: .venv/bin/python bench/quickstart_wall.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET_S = 180.0


def timed(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary runs folder")
    args = ap.parse_args()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "DO_NOT_TRACK": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
    }
    tmp = Path(tempfile.mkdtemp(prefix="cosmosage-bench-"))
    # Warm the shared builds (tiny model, data) so both sides measure training work only
    # the first time is not counted against either.
    subprocess.run(
        [str(BIN / "cosmosage"), "recipe", "run", "quickstart", "--dry-run"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    quick = timed(
        [str(BIN / "cosmosage"), "recipe", "run", "quickstart", "--runs-dir", str(tmp / "runs")],
        env,
    )
    run_dir = next((tmp / "runs" / "quickstart").iterdir())
    raw = 0.0
    for stage in ("pretrain", "instruct"):
        cfg = yaml.safe_load((run_dir / stage / "axolotl.yaml").read_text())
        cfg["output_dir"] = str(tmp / "raw" / stage)
        cfg["dataset_prepared_path"] = str(tmp / "raw" / stage / "prepared")
        path = tmp / f"raw-{stage}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        raw += timed([str(BIN / "axolotl"), "train", str(path), "--launcher", "python"], env)
    print(f"{'measure':42} {'seconds':>8}")
    print(f"{'cosmosage recipe run quickstart (all steps)':42} {quick:8.1f}")
    print(f"{'axolotl train x2, same configs (baseline)':42} {raw:8.1f}")
    print(f"{'ratio quickstart / raw training':42} {quick / raw:8.2f}")
    print(
        f"{'target (quickstart wall)':42} {TARGET_S:8.1f}  -> {'met' if quick <= TARGET_S else 'NOT met'}"
    )
    print(f"cores: {os.cpu_count()}  runs folder: {tmp if args.keep else '(removed)'}")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
