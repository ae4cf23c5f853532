"""The merge check: a merged LoRA must give the logits of base + adapter (peft, unmerged)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cosmosage.tools.models import merge
from cosmosage.tools.run import launcher
from cosmosage.tools.run.launcher import LaunchError

TEXTS = [
    "The Hubble constant measures the expansion rate of the universe today.",
    "Dark energy makes up about seventy percent of the energy density.",
]


def train_lora(base: Path, out: Path, steps: int = 6, seed: int = 0) -> Path:
    """A LoRA adapter on every linear layer, trained a few steps with peft (no Axolotl)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0)
    peft_model = get_peft_model(model, cfg)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-2)
    ids = [torch.tensor([tok(t)["input_ids"]]) for t in TEXTS]
    for step in range(steps):
        batch = ids[step % len(ids)]
        loss = peft_model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    peft_model.save_pretrained(out)
    return out


def drop_one_layer(monkeypatch) -> None:
    """Make merge_lora lose the adapter's delta on one layer (the last one's q_proj)."""
    real = merge.merge_lora

    def corrupted(model, adapter_dir):
        layer = model.model.layers[-1].self_attn.q_proj
        before = layer.weight.detach().clone()
        merged = real(model, adapter_dir)
        merged.model.layers[-1].self_attn.q_proj.weight.data.copy_(before)
        return merged

    monkeypatch.setattr(merge, "merge_lora", corrupted)


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory) -> Path:
    return train_lora(tiny_model, tmp_path_factory.mktemp("lora") / "adapter")


def test_a_real_merge_passes_within_the_tolerance(tiny_model, adapter, tmp_path):
    merged = merge.merge_adapter(str(tiny_model), adapter, tmp_path / "merged", tiny_model)
    check = merge.check_merge(tiny_model, adapter, merged)

    assert check.passed and check.dtype == "float32"
    assert check.tolerance == pytest.approx(1e-3 + 1e-4 * check.max_abs_logit)
    assert check.max_abs_diff < 1e-4
    # the check means something: the adapter moves the logits far more than the tolerance
    assert check.adapter_effect > 100 * check.tolerance
    assert check.tokens > 40


def test_a_corrupted_merge_is_caught(tiny_model, adapter, tmp_path, monkeypatch):
    drop_one_layer(monkeypatch)
    merged = merge.merge_adapter(str(tiny_model), adapter, tmp_path / "merged", tiny_model)

    with pytest.raises(merge.MergeCheckError, match="does not reproduce") as err:
        merge.check_merge(tiny_model, adapter, merged)
    assert not err.value.check.passed
    assert err.value.check.max_abs_diff > 10 * err.value.check.tolerance


def stage_with_adapter(tiny_model: Path, adapter: Path, root: Path) -> Path:
    """A stage folder as Axolotl leaves it: the adapter checkpoint and the tokenizer."""
    stage_dir = root / "lora-facts"
    output = stage_dir / "output"
    shutil.copytree(adapter, output / "checkpoint-6")
    for f in tiny_model.iterdir():
        if f.name.startswith("tokenizer") or f.name == "chat_template.jinja":
            shutil.copy2(f, output / f.name)
    return stage_dir


def test_the_launcher_stops_loudly_on_a_failed_merge_check(
    tiny_model, adapter, tmp_path, monkeypatch
):
    stage_dir = stage_with_adapter(tiny_model, adapter, tmp_path)
    best = {"path": str(stage_dir / "output" / "checkpoint-6"), "step": 6}
    cfg = {"base_model": str(tiny_model)}

    model = launcher.select_and_merge(cfg, stage_dir, best)
    found = json.loads((stage_dir / "merge_check.json").read_text())
    assert model == stage_dir / "model" and found["max_abs_diff"] <= found["tolerance"]

    drop_one_layer(monkeypatch)
    with pytest.raises(
        LaunchError,
        match=r"merge check failed for stage lora-facts: max \|logit difference\| [0-9.e-]+ "
        r".* above the tolerance",
    ):
        launcher.select_and_merge(cfg, stage_dir, best)


def test_a_lora_on_a_merged_model_merges_exactly_again(tiny_model, tmp_path):
    first = train_lora(tiny_model, tmp_path / "lora1", seed=1)
    once = merge.merge_adapter(str(tiny_model), first, tmp_path / "once", tiny_model)
    second = train_lora(once, tmp_path / "lora2", seed=2)
    twice = merge.merge_adapter(str(once), second, tmp_path / "twice", once)

    c1 = merge.check_merge(tiny_model, first, once)
    c2 = merge.check_merge(once, second, twice)

    assert c1.passed and c2.passed
    assert c2.max_abs_diff < 1e-4 and c2.adapter_effect > 100 * c2.tolerance
    # the second merge built on the first: its weights hold both deltas
    from safetensors.torch import load_file

    w0, w1, w2 = (
        load_file(str(p / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"]
        for p in (tiny_model, once, twice)
    )
    assert not torch.equal(w0, w1) and not torch.equal(w1, w2)


def test_a_bfloat16_merge_passes_and_a_lost_adapter_does_not(
    tiny_model, adapter, tmp_path, monkeypatch
):
    """Merges on a GPU machine load the base in its own dtype; a bfloat16 merge rounds
    W + BA to 8 bits, so it gets the looser bound, which still catches a lost adapter."""
    monkeypatch.setattr(merge, "_merge_dtype", lambda: torch.bfloat16)
    merged = merge.merge_adapter(str(tiny_model), adapter, tmp_path / "bf16", tiny_model)
    check = merge.check_merge(tiny_model, adapter, merged)
    assert check.passed and check.dtype == "bfloat16"
    assert check.tolerance == pytest.approx(1e-1 + 5e-2 * check.max_abs_logit)

    monkeypatch.setattr(merge, "merge_lora", lambda model, adapter_dir: model)
    lost = merge.merge_adapter(str(tiny_model), adapter, tmp_path / "lost", tiny_model)
    with pytest.raises(merge.MergeCheckError, match="above the tolerance"):
        merge.check_merge(tiny_model, adapter, lost)
