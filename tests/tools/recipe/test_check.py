"""`recipe check`: Axolotl's schema plus the mistakes Axolotl lets through."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from cosmosage.tools.paths import ROOT
from cosmosage.tools.recipe.check import check_rendered
from cosmosage.tools.recipe.render import Rendered, list_recipes, render


def stage(name: str) -> Rendered:
    r = render(name)
    return Rendered(name, copy.deepcopy(r.config), copy.deepcopy(r.meta))


def errors(r: Rendered, root: Path = ROOT) -> list[str]:
    return [str(p) for p in check_rendered(r, root) if p.severity == "error"]


@pytest.fixture(scope="module")
def built(tiny_model):
    """The tiny model folder exists, so tokenizer checks read the real files."""
    return tiny_model


@pytest.mark.parametrize("name", list_recipes())
def test_every_bundled_recipe_passes_its_checks(name, built):
    from cosmosage.tools.recipe.check import check_stage

    top = render(name)
    for stage_name in top.stages or [name]:
        problems = check_stage(stage(stage_name), ROOT)
        assert [str(p) for p in problems if p.severity == "error"] == [], stage_name


def test_renamed_relora_key_is_caught_with_the_new_name(built):
    r = stage("tiny/relora")
    r.config["relora_steps"] = 4
    errs = errors(r)
    assert any(
        "`relora_steps` is not an Axolotl option" in e and "jagged_restart_steps" in e for e in errs
    ), errs


def test_typo_key_suggests_the_known_key(built):
    r = stage("quickstart-tiny/pretrain")
    r.config["learning_rat"] = 0.1
    errs = errors(r)
    assert any("`learning_rat`" in e and "did you mean `learning_rate`" in e for e in errs), errs


def test_unknown_dataset_key_is_caught(built):
    r = stage("quickstart-tiny/instruct")
    r.config["datasets"][0]["feild_messages"] = "messages"
    assert any("datasets[0].feild_messages" in e and "field_messages" in e for e in errors(r))


def test_axolotl_schema_errors_are_reported(built):
    r = stage("quickstart-tiny/pretrain")
    r.config["warmup_ratio"] = 0.1  # beside warmup_steps: Axolotl refuses both
    assert any("axolotl:" in e and "warmup_steps and warmup_ratio" in e for e in errors(r))


def test_pad_equal_to_eos_fails_with_the_fix(built):
    r = stage("quickstart-tiny/pretrain")
    r.config["special_tokens"] = {"pad_token": "</s>"}
    errs = errors(r)
    assert any(
        "pad token equals eos" in e and "never learns to stop" in e and "pad_token" in e
        for e in errs
    ), errs


def test_missing_pad_on_a_hub_model_fails():
    r = stage("mistral-7b/pretrain-full")
    r.config.pop("special_tokens")
    assert any("no pad token" in e and "falls back to eos" in e for e in errors(r))


def test_chat_data_without_template_fails(built):
    r = stage("mistral-7b/instruct-qlora")
    r.config.pop("chat_template")
    assert any("no `chat_template` set" in e and "has none" in e for e in errors(r))
    r = stage("mistral-7b/instruct-qlora")
    r.config["chat_template"] = "tokenizer_default"  # Mistral base ships no template
    assert any("tokenizer_default`, but the tokenizer has none" in e for e in errors(r))


def chat_template_errors(r: Rendered) -> list[str]:
    return [e for e in errors(r) if "chat-template" in e]


def test_a_template_is_found_where_axolotl_looks_for_it(built):
    """Axolotl renders a dataset with its own `chat_template`, else the config's, else the
    tokenizer's: a dataset-level template, or none with a tokenizer that has one, is no
    fault; `jinja` without its text is."""
    r = stage("mistral-7b/instruct-qlora")
    r.config.pop("chat_template")
    for ds in r.config["datasets"]:
        ds["chat_template"] = "chatml"
    assert chat_template_errors(r) == []
    r = stage("tiny/qlora")  # the tiny model's tokenizer carries a template
    r.config.pop("chat_template")
    assert chat_template_errors(r) == []
    r.config["datasets"][0]["chat_template"] = "jinja"
    assert chat_template_errors(r) == [
        "[error] chat-template: datasets[0]: `chat_template: jinja` without `chat_template_jinja`"
    ]
    r.config["datasets"][0]["chat_template_jinja"] = "{{ messages }}"
    assert chat_template_errors(r) == []


def test_missing_data_file_is_reported_unless_a_build_makes_it(built):
    r = stage("quickstart-tiny/pretrain")
    r.config["datasets"][0]["path"] = "build/data/nowhere.jsonl"
    errs = errors(r)
    assert any(
        "datasets[0].path: build/data/nowhere.jsonl does not exist" in e and "cosmosage data" in e
        for e in errs
    )
    ok = stage("quickstart-tiny/pretrain")
    ok.config["datasets"][0]["path"] = "build/data/quickstart-tiny/never-built.jsonl"
    ok.meta["builds"].append(
        {"output": "build/data/quickstart-tiny/never-built.jsonl", "command": ["data"]}
    )
    assert not any("never-built" in e for e in errors(ok))


def test_cuda_only_options_on_the_cpu_profile_fail(built):
    r = stage("quickstart-tiny/pretrain")
    r.config.update({"flash_attention": True, "bf16": "auto", "lora_mlp_kernel": True})
    errs = " ".join(errors(r))
    for key in ("flash_attention", "bf16", "lora_mlp_kernel"):
        assert f"`{key}:" in errs and "cpu profile" in errs


def test_model_too_large_for_the_hardware_fails():
    r = stage("mistral-7b/pretrain-full")
    r.meta["hardware"] = {"name": "1x24gb", "gpu_memory_gb": 24, "gpus": 1}
    r.config.pop("deepspeed")
    errs = errors(r)
    assert any("7.24B-parameter" in e and "1x24gb profile has 24 GiB" in e for e in errs), errs
    # the same model under QLoRA fits
    q = stage("mistral-7b/instruct-qlora")
    assert not any("hardware" in e for e in errors(q))


def test_parameter_count_comes_from_the_model_config(built):
    import json

    from transformers import AutoModelForCausalLM

    from cosmosage.tools.recipe.check import model_params, params_from_config

    cfg = json.loads((built / "config.json").read_text())
    actual = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(built).parameters())
    assert params_from_config(cfg) == actual
    r = stage("quickstart-tiny/pretrain")
    assert model_params(r.config, {"params": 1}, ROOT) == actual  # config wins over the hint
    # Mistral-7B's published config gives its published size
    mistral = {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "vocab_size": 32000,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "tie_word_embeddings": False,
    }
    assert abs(params_from_config(mistral) - 7.24e9) / 7.24e9 < 0.01


def test_a_plain_axolotl_config_is_checked_by_its_path(tmp_path, monkeypatch, tiny_model):
    from click.testing import CliRunner

    from cosmosage.tools.cli.main import main

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text('{"text": "hello"}\n')
    cfg = {
        "base_model": str(tiny_model),
        "datasets": [{"path": "data/a.jsonl", "ds_type": "json", "type": "completion"}],
        "sequence_len": 128,
        "micro_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "num_epochs": 1,
        "learning_rate": 1e-3,
        "optimizer": "adamw_torch",
        "output_dir": "out",
    }
    import yaml

    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({**cfg, "learnin_rate": 1e-3}))
    (tmp_path / "nodata.yaml").write_text(
        yaml.safe_dump({**cfg, "datasets": [{"path": "data/b.jsonl", "type": "completion"}]})
    )
    monkeypatch.chdir(tmp_path)  # relative paths are Axolotl's: from the current folder
    ok = CliRunner().invoke(main, ["recipe", "check", "plain.yaml"])
    assert ok.exit_code == 0 and ok.output.strip() == "ok    plain.yaml", ok.output
    typo = CliRunner().invoke(main, ["recipe", "check", "typo.yaml"])
    assert typo.exit_code == 1 and "did you mean `learning_rate`?" in typo.output
    nodata = CliRunner().invoke(main, ["recipe", "check", "nodata.yaml"])
    assert nodata.exit_code == 1 and "data/b.jsonl does not exist" in nodata.output
    # values of the wrong type are the schema's errors, never a crash of a later check
    (tmp_path / "wtype.yaml").write_text(yaml.safe_dump({**cfg, "micro_batch_size": "four"}))
    wtype = CliRunner().invoke(main, ["recipe", "check", "wtype.yaml"])
    assert wtype.exit_code == 1 and isinstance(wtype.exception, SystemExit), wtype.output
    assert "micro_batch_size" in wtype.output and "Traceback" not in wtype.output
    (tmp_path / "dsdict.yaml").write_text(yaml.safe_dump({**cfg, "datasets": cfg["datasets"][0]}))
    dsdict = CliRunner().invoke(main, ["recipe", "check", "dsdict.yaml"])
    assert dsdict.exit_code == 1 and "`datasets` must be a list" in dsdict.output
    missing = CliRunner().invoke(main, ["recipe", "check", "absent.yaml"])
    assert missing.exit_code == 1 and missing.output.strip() == "Error: absent.yaml: no such file"


def test_check_prints_what_a_gpu_stage_needs():
    """`recipe check` on a GPU recipe prints its memory per GPU, its disk, and that the
    best checkpoint is kept; errors would fail it."""
    from click.testing import CliRunner

    from cosmosage.tools.cli.main import main

    res = CliRunner().invoke(main, ["recipe", "check", "mistral-7b/pretrain-full"])
    assert res.exit_code == 0, res.output
    assert "[info] memory: full with zero3 over 8 GPUs" in res.output
    assert "[info] disk: ~435 GB: 4 checkpoints x 101.4 GB" in res.output
    assert "[info] checkpoints: the checkpoint with the lowest eval loss is kept" in res.output
    bad = CliRunner().invoke(
        main, ["recipe", "check", "mistral-7b/pretrain-full", "--unset", "metric_for_best_model"]
    )
    assert bad.exit_code == 1 and "[error] checkpoints: no `metric_for_best_model`" in bad.output


def test_plugin_keys_validate_once_their_plugin_is_named_and_a_misspelt_one_still_fails():
    from cosmosage.tools.recipe.check import check_axolotl_schema

    base = {
        "base_model": "build/models/tiny-llama",
        "datasets": [{"path": "x.jsonl", "type": "completion"}],
        "micro_batch_size": 1,
        "num_epochs": 1,
        "learning_rate": 1e-4,
        "output_dir": "/tmp/o",
        "sequence_len": 64,
    }
    liger = {**base, "plugins": ["axolotl.integrations.liger.LigerPlugin"]}
    assert check_axolotl_schema({**liger, "liger_fused_linear_cross_entropy": True}) == []
    bad = check_axolotl_schema({**liger, "liger_fused_linear_cross_entropyy": True})
    assert [p.check for p in bad] == ["unknown-key"] and "entropyy" in bad[0].message
    # without its plugin the key means nothing to Axolotl
    alone = check_axolotl_schema({**base, "liger_fused_linear_cross_entropy": True})
    assert [p.check for p in alone] == ["unknown-key"]


def test_schema_errors_are_one_line_each_naming_field_and_value_beside_unknown_keys():
    from cosmosage.tools.recipe.check import check_axolotl_schema

    cfg = {
        "base_model": "build/models/tiny-llama",
        "datasets": [{"path": "x.jsonl", "type": "completion", "split": 3.5}],
        "micro_batch_size": [1],
        "num_epochs": 1,
        "learning_rate": "fast",
        "output_dir": "/tmp/o",
        "sequence_len": 64,
        "lora_rr": 8,
    }
    problems = check_axolotl_schema(cfg)
    assert [p.message for p in problems if p.check == "axolotl"] == [
        "`datasets[0].split`: Input should be a valid string (got 3.5)"
    ]  # a dataset is validated first: the config's own fields come after it is fixed
    cfg["datasets"][0].pop("split")
    messages = {p.check + ": " + p.message for p in check_axolotl_schema(cfg)}
    assert "axolotl: `micro_batch_size`: Input should be a valid integer (got [1])" in messages
    assert any(m.startswith("axolotl: `learning_rate`: could not convert") for m in messages)
    assert (
        "unknown-key: `lora_rr` is not an Axolotl option and would be silently dropped; "
        "did you mean `lora_r`?" in messages
    )  # said even when the schema refused the config
    assert not any("\n" in m or "errors.pydantic.dev" in m for m in messages)


def test_a_pretraining_stage_that_ends_chunks_with_the_end_of_turn_token_is_flagged():
    from cosmosage.tools.recipe.check import check_completion_eos
    from cosmosage.tools.recipe.render import render

    good = render("llama-3.1-8b/pretrain-full")
    assert good.config["special_tokens"]["eos_token"] == "<|end_of_text|>"
    assert check_completion_eos(good.config, good.meta) == []
    broken = render("llama-3.1-8b/pretrain-full", ["special_tokens.eos_token=<|eot_id|>"])
    got = check_completion_eos(broken.config, broken.meta)
    assert [p.check for p in got] == ["eos"] and "'<|end_of_text|>'" in got[0].message
    # a chat stage ends turns with the end-of-turn token, as it should
    chat = render("llama-3.1-8b/instruct-full")
    assert chat.config["special_tokens"]["eos_token"] == "<|eot_id|>"
    assert check_completion_eos(chat.config, chat.meta) == []


def test_flash_attention_without_its_package_is_said_before_any_gpu_time(monkeypatch):
    import importlib.util

    import torch

    from cosmosage.tools.recipe import check

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "flash_attn" else real(n, *a)
    )
    cfg = {"attn_implementation": "flash_attention_2"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    got = check.check_flash_attention(cfg)
    assert got[0].severity == "error" and "attn_implementation=sdpa" in got[0].message
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check.check_flash_attention(cfg)[0].severity == "warning"
    assert check.check_flash_attention({"attn_implementation": "sdpa"}) == []


def test_a_chat_stage_whose_tokenizer_is_not_on_disk_passes_check_but_stops_a_run(
    tmp_path, monkeypatch
):
    from cosmosage.tools.recipe.check import check_end_of_turn, unchecked_end_of_turn

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    cfg = {
        "base_model": "someorg/never-downloaded-model",
        "chat_template": "chatml",
        "datasets": [{"path": "x.jsonl", "type": "chat_template", "field_messages": "messages"}],
    }
    got = check_end_of_turn(cfg, {}, tmp_path)
    assert [p.severity for p in got] == ["warning"] and unchecked_end_of_turn(got[0])
    assert "hf download someorg/never-downloaded-model" in got[0].message


@pytest.mark.parametrize("preset", ["150m", "410m", "1b"])
def test_scratch_fragments_carry_their_presets_shape_so_the_estimate_counts_logits(preset):
    from cosmosage.tools.models.init import PRESETS, count_params
    from cosmosage.tools.paths import ROOT
    from cosmosage.tools.recipe.check import memory_estimate, params_from_config
    from cosmosage.tools.recipe.render import render

    r = render(f"scratch/{preset}")
    arch, p = r.meta["architecture"], PRESETS[preset]
    assert (arch["hidden_size"], arch["num_hidden_layers"], arch["intermediate_size"]) == (
        p.hidden_size, p.num_hidden_layers, p.intermediate_size
    )  # fmt: skip
    assert params_from_config(arch) == count_params(p, p.vocab_size)
    est = memory_estimate(r.config, r.meta, ROOT)
    assert not any("rule of thumb" in k for k in est.parts) and any(
        "logits" in k for k in est.parts
    )
    # the header states the estimate it gets (within a GiB)
    header = (ROOT / "recipes" / "scratch" / f"{preset}.yaml").read_text().splitlines()[0]
    stated = float(re.search(r"~(\d+(?:\.\d+)?) GiB", header).group(1))
    assert abs(stated - est.total / 2**30) < 1.0, (header, est.total / 2**30)


def test_the_smoke_recipe_carries_the_shape_model_init_gives_it(tiny_tokenizer):
    """smoke/1gpu builds preset 150m with the tiny tokenizer: the vocabulary stays the
    preset's (the tokenizer is smaller), so its shape is scratch/150m's."""
    from cosmosage.tools.models.init import PRESETS, vocab_size

    arch = render("smoke/1gpu").meta["architecture"]
    assert arch["vocab_size"] == vocab_size(PRESETS["150m"], len(tiny_tokenizer))
    assert arch == render("scratch/150m").meta["architecture"]


def test_gradient_checkpointing_that_buys_nothing_is_flagged():
    from cosmosage.tools.paths import ROOT
    from cosmosage.tools.recipe.check import check_hardware
    from cosmosage.tools.recipe.render import render

    def flagged(r):
        return [
            p
            for p in check_hardware(r.config, r.meta, ROOT)
            if "gradient_checkpointing is on" in p.message
        ]

    assert flagged(render("scratch/1b")) == []  # turned off: it fits without
    on = flagged(render("scratch/1b", ["gradient_checkpointing=true"]))
    assert on and on[0].severity == "warning" and "of 80 per device" in on[0].message
    # an 8B full fine-tune needs it: not flagged
    assert flagged(render("llama-3.1-8b/pretrain-full")) == []
