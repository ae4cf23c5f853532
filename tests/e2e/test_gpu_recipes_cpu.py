"""The CPU twins of the GPU recipes train for real with Axolotl, and bench/gpu_check.py
measures full fine-tune, LoRA and QLoRA at toy size: AstroSage's pipeline (full pretrain
-> full instruct from its output), 8-bit LoRA, the from-scratch curriculum (a `model
init` model, one more tier per stage, each stage from the last), the smoke test (saves
once)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cosmosage.tools.cli.main import main
from cosmosage.tools.run.stage import STAGE_PLUGINS

pytestmark = pytest.mark.train
ROOT = Path(__file__).resolve().parents[2]


def run(name: str, runs: Path) -> tuple[Path, dict]:
    res = CliRunner().invoke(
        main, ["recipe", "run", name, "--runs-dir", str(runs)], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    run_dir = next(runs.glob(f"{name}/*/run.json")).parent
    return run_dir, json.loads((run_dir / "run.json").read_text())


def finite(stage: dict) -> None:
    for key in ("eval_loss_before", "eval_loss_best", "final_train_loss"):
        assert stage["metrics"][key] is not None and math.isfinite(stage["metrics"][key]), key


def test_astrosage_twin_instruct_starts_from_pretrain(tmp_path, tiny_model):
    run_dir, record = run("tiny/astrosage", tmp_path)
    pre, ins = record["stages"]["pretrain"], record["stages"]["instruct"]
    assert record["status"] == "complete"
    assert ins["parent_model"] == pre["model"]
    for stage in (pre, ins):
        finite(stage)
    assert pre["metrics"]["eval_loss_best"] < pre["metrics"]["eval_loss_before"]
    cfg = yaml.safe_load((run_dir / "instruct" / "axolotl.yaml").read_text())
    assert "adapter" not in cfg  # full instruct tuning, as AstroSage's
    # then the 75/25 soup with the model it started from, which the card names as a parent
    merge = record["stages"]["merge"]
    assert merge["parents"][0] == ins["model"] and merge["soup"]["weights"] == [0.75, 0.25]
    assert (run_dir / "publish" / "README.md").is_file()


def test_lora_8bit_twin_trains_over_an_8bit_base(tmp_path, tiny_model):
    run_dir, record = run("tiny/lora-8bit", tmp_path)
    finite(record["stages"]["lora-8bit"])
    config = json.loads((run_dir / "lora-8bit" / "output" / "config.json").read_text())
    quant = config.get("quantization_config") or {}
    assert quant.get("quant_method") == "bitsandbytes", config
    assert quant.get("load_in_8bit") is True and quant.get("load_in_4bit") is False, quant
    assert (run_dir / "lora-8bit" / "output" / "adapter_config.json").is_file()
    # peft_trainable_token_indices: row 2 (</s>) of the embedding trained beside the adapter
    # and was merged into the model; every other row is the base's
    from safetensors.torch import load_file

    key = "model.embed_tokens.weight"
    base = load_file(str(tiny_model / "model.safetensors"))[key]
    (merged,) = (run_dir / "lora-8bit" / "model").glob("*.safetensors")
    changed = (load_file(str(merged))[key] - base).abs().sum(dim=1).nonzero().flatten().tolist()
    assert changed == [2], changed


def test_curriculum_twin_adds_a_tier_per_stage_from_a_random_init(tmp_path, tiny_model):
    run_dir, record = run("tiny/curriculum", tmp_path)
    keys = ["tier1", "tiers1-2", "tiers1-3"]
    stages = [record["stages"][k] for k in keys]
    init = json.loads((ROOT / "build/models/scratch-tiny/cosmosage-init.json").read_text())
    assert init["settings"]["preset"] == "tiny"
    assert stages[0]["parent_model"] == "build/models/scratch-tiny"
    assert stages[1]["parent_model"] == stages[0]["model"]
    assert stages[2]["parent_model"] == stages[1]["model"]
    for key, stage in zip(keys, stages, strict=True):
        finite(stage)
        cfg = yaml.safe_load((run_dir / key / "axolotl.yaml").read_text())
        assert len(cfg["datasets"]) == keys.index(key) + 1
        # the held-out document is in no tier: every stage's eval loss is on unseen text
        (val,) = [ROOT / d["path"] for d in cfg["test_datasets"]]
        held_out = {json.loads(line)["doc_id"] for line in val.read_text().splitlines()}
        for ds in cfg["datasets"]:
            trained = (ROOT / ds["path"]).read_text().splitlines()
            assert not held_out & {json.loads(line)["doc_id"] for line in trained}, ds["path"]
    # a random model at ln(vocab) learns something in the first stage
    assert stages[0]["metrics"]["eval_loss_best"] < stages[0]["metrics"]["eval_loss_before"]


def test_smoke_twin_saves_once(tmp_path, tiny_model):
    run_dir, record = run("tiny/smoke", tmp_path)
    finite(record["stages"]["smoke"])
    checkpoints = sorted(p.name for p in (run_dir / "smoke" / "output").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-4"]
    # the stage ran with the stage plugins first: it froze inside Axolotl, and saved its
    # prepared splits in the process (one shard each, no spawned pool)
    cfg = yaml.safe_load((run_dir / "smoke" / "axolotl.yaml").read_text())
    assert cfg["plugins"][:2] == list(STAGE_PLUGINS) and cfg["dataset_num_proc"] == 1
    log = (run_dir / "smoke" / "train.log").read_text()
    assert "gc.freeze after the imports" in log and "gc.freeze before the model loads" in log
    assert "save_to_disk writes a one-process save in this process" in log
    assert "Saving the dataset (1/1 shards)" in log
    # and thawed at exit: no native extension lists frozen objects as leaked
    assert "leaked" not in log, log[-2000:]


def test_gpu_check_runs_at_toy_size_on_the_cpu(tmp_path, tiny_model):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "results.json"
    results = gpu_check.main(
        ["--device", "cpu", "--preset", "tiny", "--steps", "3", "--warmup", "1"]
        + ["--docs-per-row", "2", "--work", str(tmp_path / "work"), "--json", str(out)]
    )
    assert [r["method"] for r in results] == ["full", "lora", "qlora"]
    for r in results:
        assert r["steps"] == 3, r
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1, r
        assert r["peak_memory_gib"] > 0 and r["check_estimate_gib"] > 0, r
        assert math.isfinite(r["final_loss"]), r
    saved = json.loads(out.read_text())
    assert saved["attn"] == "sdpa" and saved["docs_per_row"] == 2 and saved["results"] == results
    # what Axolotl tokenized: every document exactly half of a 128-token row, BOS to EOS
    import datasets

    (prepared,) = [p.parent for p in (tmp_path / "work" / "full" / "prepared").glob("*/state.json")]
    rows = datasets.load_from_disk(str(prepared))["input_ids"]
    assert rows and {len(r) for r in rows} == {64}
