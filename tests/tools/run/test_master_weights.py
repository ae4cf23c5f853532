"""Full fine-tunes in bf16 keep fp32 master weights (docs/gpu.md): Axolotl itself loads a
tiny model with a rendered full recipe as a GPU would run it (bf16 on), and the optimizer
HF's Trainer builds for it updates fp32 parameters; without the plugin it updates bf16
ones, the defect, and `recipe check` fails that recipe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cosmosage.tools.paths import ROOT
from cosmosage.tools.recipe.check import (
    MASTER_WEIGHTS_PLUGIN,
    check_master_weights,
    check_rendered,
    memory_estimate,
)
from cosmosage.tools.recipe.render import render

# run in a fresh interpreter: Axolotl's plugin manager is a process-wide singleton
PROBE = """
import json, sys
from axolotl.cli.config import load_cfg
from axolotl.integrations.base import PluginManager
from axolotl.loaders import ModelLoader, load_tokenizer
from transformers import Trainer, TrainingArguments

cfg = load_cfg(sys.argv[1])
tok = load_tokenizer(cfg)
model, _ = ModelLoader(cfg, tok).load()
args = TrainingArguments(output_dir=sys.argv[2], bf16=True, use_cpu=True,
                         optim="adamw_torch", report_to=[])
optimizer = Trainer(model=model, args=args).create_optimizer()
seen = {}
for g in optimizer.param_groups:
    for p in g["params"]:
        seen[str(p.dtype)] = seen.get(str(p.dtype), 0) + p.numel()
optimizer.zero_grad()
PluginManager.get_instance().post_train(cfg, model)
saved = sorted({str(p.dtype) for p in model.parameters()})
print("PROBE " + json.dumps({"load_dtype": str(cfg.torch_dtype), "optimizer": seen,
                             "saved": saved}))
"""


def probe(cfg: dict, tmp_path: Path) -> dict:
    path = tmp_path / "axolotl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), str(tmp_path / "trainer")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    line = next((x for x in res.stdout.splitlines() if x.startswith("PROBE ")), None)
    assert res.returncode == 0 and line, res.stdout[-2000:] + res.stderr[-4000:]
    return {**json.loads(line.removeprefix("PROBE ")), "output": res.stdout + res.stderr}


def gpu_like(tiny_model: Path, tmp_path: Path, plugins: bool) -> dict:
    """tiny/smoke (a full recipe) as a GPU profile runs it: bf16 mixed precision."""
    cfg = dict(render("tiny/smoke").config)
    cfg.update(
        base_model=str(tiny_model),
        tokenizer_config=str(tiny_model),
        bf16=True,
        output_dir=str(tmp_path / "out"),
        dataset_prepared_path=str(tmp_path / "prepared"),
    )
    if not plugins:
        cfg.pop("plugins", None)
    return cfg


def test_every_full_recipe_names_the_plugin_and_it_imports():
    import importlib

    module, name = MASTER_WEIGHTS_PLUGIN.rsplit(".", 1)
    assert hasattr(importlib.import_module(module), name)
    for recipe in ("tiny/smoke", "smoke/1gpu", "llama-3.1-8b/fsdp-full", "scratch/1b"):
        assert MASTER_WEIGHTS_PLUGIN in render(recipe).config["plugins"], recipe


@pytest.mark.parametrize("recipe", ["llama-3.1-8b/fsdp-full", "smoke/1gpu", "scratch/150m"])
def test_check_fails_a_bf16_full_fine_tune_without_a_master_copy(recipe):
    r = render(recipe)
    assert not [p for p in check_rendered(r, ROOT, schema=False) if p.check == "precision"]
    r.config.pop("plugins")
    got = [p for p in check_rendered(r, ROOT, schema=False) if p.check == "precision"]
    assert len(got) == 1 and got[0].severity == "error"
    assert MASTER_WEIGHTS_PLUGIN in got[0].message and "round away" in got[0].message


def test_deepspeed_fp32_and_adapters_need_no_plugin():
    zero3 = render("llama-3.1-8b/pretrain-full")  # ZeRO-3 keeps its own master copy
    zero3.config.pop("plugins", None)
    assert check_master_weights(zero3.config, zero3.meta) == []
    cpu = render("tiny/smoke")  # fp32 training
    cpu.config.pop("plugins", None)
    assert check_master_weights(cpu.config, cpu.meta) == []
    lora = render("llama-3.2-1b/qlora-1x24gb")
    assert "plugins" not in lora.config
    assert check_master_weights(lora.config, lora.meta) == []


def test_the_memory_estimate_counts_fp32_weights_grads_and_moments():
    r = render("scratch/150m")
    with_plugin = memory_estimate(r.config, r.meta, ROOT).parts
    r.config.pop("plugins")
    without = memory_estimate(r.config, r.meta, ROOT).parts
    assert with_plugin["weights"] == pytest.approx(2 * without["weights"])
    assert with_plugin["grads"] == pytest.approx(2 * without["grads"])
    assert with_plugin["optimizer"] == pytest.approx(2 * without["optimizer"])


def test_axolotl_loads_bf16_weights_and_the_plugin_gives_the_optimizer_fp32(tiny_model, tmp_path):
    before = probe(gpu_like(tiny_model, tmp_path / "without", plugins=False), tmp_path)
    assert before["load_dtype"] == "torch.bfloat16"
    # the defect: the optimizer updates bf16 weights (every linear layer of the blocks;
    # Axolotl keeps the embeddings and norms fp32, most of this tiny model's parameters
    # but a few percent of a real one's)
    assert before["optimizer"].get("torch.bfloat16", 0) > 0.5 * sum(before["optimizer"].values())

    after = probe(gpu_like(tiny_model, tmp_path / "with", plugins=True), tmp_path)
    assert after["load_dtype"] == "torch.bfloat16"
    assert list(after["optimizer"]) == ["torch.float32"]
    assert sum(after["optimizer"].values()) == sum(before["optimizer"].values())
    # the final save (no FSDP) is in the dtype the weights were loaded in
    assert after["saved"] == ["torch.bfloat16"]
    # and the log says so (Axolotl's logging passes only axolotl.* below warnings)
    assert "fp32 master weights:" in after["output"] and "upcast from bfloat16" in after["output"]
    assert "fp32 master weights:" not in before["output"]
