"""The gc.freeze plugin every stage gets (tools/run/gc_freeze.py): `recipe run` puts it
first in `plugins:` once, and inside Axolotl's own config loading it moves what the
imports built out of reach of full collections, so Axolotl's own `gc.collect()` calls
stop walking them; objects made afterwards are still collected."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from cosmosage.tools.paths import ROOT
from cosmosage.tools.run.stage import GC_FREEZE, STAGE_PLUGINS, with_stage_plugins


def test_the_stage_plugins_come_first_once_and_keep_the_others():
    assert STAGE_PLUGINS[0] == GC_FREEZE  # registered first: it freezes after the imports
    cfg = {"base_model": "m", "plugins": ["a.B", GC_FREEZE, "c.D"]}
    out = with_stage_plugins(cfg)
    assert out["plugins"] == [*STAGE_PLUGINS, "a.B", "c.D"]
    assert cfg["plugins"] == ["a.B", GC_FREEZE, "c.D"]  # the stage's own config untouched
    assert with_stage_plugins({"base_model": "m"})["plugins"] == list(STAGE_PLUGINS)
    assert with_stage_plugins(with_stage_plugins(cfg)) == out


# a fresh interpreter: Axolotl's plugin manager is a process-wide singleton
PROBE = """
import gc, json, sys, time
from axolotl.cli.config import load_cfg
from axolotl.integrations.base import PluginManager

before = gc.get_freeze_count()
cfg = load_cfg(sys.argv[1])
frozen = gc.get_freeze_count()
t = time.perf_counter(); gc.collect(); collect_s = time.perf_counter() - t
PluginManager.get_instance().pre_model_load(cfg)
class Cycle: pass
a, b = Cycle(), Cycle(); a.other, b.other = b, a
del a, b
print(json.dumps({"before": before, "frozen": frozen, "tracked": len(gc.get_objects()),
                  "after_pre_model_load": gc.get_freeze_count(), "collect_s": collect_s,
                  "freed": gc.collect(), "plugins": list(cfg.plugins)}))
"""


def test_axolotls_config_loading_freezes_the_imports_and_later_garbage_is_freed(
    tmp_path, tiny_model
):
    data = tmp_path / "corpus.jsonl"
    data.write_text(json.dumps({"text": "The sky is dark at night."}) + "\n")
    cfg = {
        "base_model": str(tiny_model),
        "datasets": [{"path": str(data), "type": "completion"}],
        "sequence_len": 64,
        "micro_batch_size": 1,
        "num_epochs": 1,
        "learning_rate": 1e-4,
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "axolotl.yaml"
    path.write_text(yaml.safe_dump(with_stage_plugins(cfg)))
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["plugins"] == list(STAGE_PLUGINS)
    assert seen["before"] == 0
    # Axolotl, transformers and torch: hundreds of thousands of objects, frozen
    assert seen["frozen"] > 100_000, seen
    assert seen["frozen"] > 10 * seen["tracked"], seen  # what a collection still walks
    assert seen["after_pre_model_load"] >= seen["frozen"], seen
    assert seen["freed"] >= 2, seen  # a cycle made after the freezes is still collected
