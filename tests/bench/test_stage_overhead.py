"""bench/stage_overhead.py's four forms of one stage's config: Axolotl's defaults (no
stage plugins, no dataset_num_proc; the other plugins kept), one dataset process, that
with the gc.freeze plugin, and the config as `recipe run` wrote it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_baseline_drops_only_what_recipe_run_adds_for_speed():
    spec = importlib.util.spec_from_file_location("so", ROOT / "bench" / "stage_overhead.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from cosmosage.tools.run.stage import GC_FREEZE, STAGE_PLUGINS, with_stage_plugins

    written = with_stage_plugins({"base_model": "m", "plugins": ["x.Y"], "dataset_num_proc": 1})
    base, one, frozen, as_run = bench.forms(written).values()
    assert base == {"base_model": "m", "plugins": ["x.Y"]}
    assert one == {**base, "dataset_num_proc": 1}
    assert frozen == {**one, "plugins": [GC_FREEZE, "x.Y"]}
    assert as_run is written and as_run["plugins"] == [*STAGE_PLUGINS, "x.Y"]
    alone = bench.forms(with_stage_plugins({"base_model": "m", "dataset_num_proc": 1}))
    assert next(iter(alone.values())) == {"base_model": "m"}  # no empty `plugins:` left
