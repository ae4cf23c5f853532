"""Wall time of `cosmosage recipe run quickstart` against raw Axolotl on the same configs.

Runs the whole quickstart cold in a fresh copy of the project (tiny model and data
built, checks, two trainings, selection, merge, evaluation, card), then runs
`axolotl train` alone on the two configs that run wrote, and prints both with their
ratio. Target: quickstart (SmolLM2 import included) <= 600 s on 2 cores after install.

    make bench            # or: .venv/bin/python bench/quickstart_wall.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET_S = 600.0


def timed(argv: list[str], env: dict, cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary project copy")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cosmosage-bench-"))
    # A project root as after `git clone` + install: nothing built yet.
    for part in ("recipes", "samples", "prompts"):
        if (ROOT / part).exists():
            shutil.copytree(ROOT / part, tmp / part)
    env = {
        **os.environ,
        "COSMOSAGE_ROOT": str(tmp),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "DO_NOT_TRACK": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
    }
    quick = timed([str(BIN / "cosmosage"), "recipe", "run", "quickstart"], env, cwd=tmp)
    run_dir = next((tmp / "runs" / "quickstart").iterdir())
    raw = 0.0
    for stage in ("pretrain", "instruct"):
        cfg = yaml.safe_load((run_dir / stage / "axolotl.yaml").read_text())
        cfg["output_dir"] = str(tmp / "raw" / stage)
        cfg["dataset_prepared_path"] = str(tmp / "raw" / stage / "prepared")
        path = tmp / f"raw-{stage}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        raw += timed(
            [str(BIN / "axolotl"), "train", str(path), "--launcher", "python"], env, cwd=tmp
        )
    print(f"{'measure':44} {'seconds':>8}")
    print(f"{'cosmosage recipe run quickstart, cold':44} {quick:8.1f}")
    print(f"{'axolotl train x2 on the same configs (base)':44} {raw:8.1f}")
    print(f"{'ratio quickstart / raw training':44} {quick / raw:8.2f}")
    verdict = "met" if quick <= TARGET_S else "NOT met"
    print(f"{'target for the quickstart':44} {TARGET_S:8.1f}  -> {verdict}")
    print(f"cores: {os.cpu_count()}  project copy: {tmp if args.keep else '(removed)'}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
