"""`recipe check` on distillation datasets: the KD plugin must be on, and the teacher's
rows must line up with the tokens the recipe's chat template makes of each record
(Axolotl would place them silently off by the difference)."""

from __future__ import annotations

import json

import pytest

from cosmosage.dataprep.synth.distill import DistillConfig, run_distill
from cosmosage.tools.recipe.check import check_distillation


@pytest.fixture(scope="module")
def distilled(tiny_model, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = tmp_path_factory.mktemp("kd")
    src = tmp / "chat.jsonl"
    src.write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
        for q, a in [("Capital of Italy?", "Rome."), ("Say hello.", "Hello there.")]
    ))  # fmt: skip
    out = tmp / "kd.jsonl"
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    run_distill(DistillConfig([str(src)], str(out), str(tiny_model), top_k=2), model,
                AutoTokenizer.from_pretrained(tiny_model), echo=lambda m: None)  # fmt: skip
    return out


def config(tiny_model, path, **over) -> dict:
    cfg = {
        "base_model": str(tiny_model),
        "chat_template": "tokenizer_default",
        "train_on_inputs": False,
        "sequence_len": 2048,
        "plugins": ["axolotl.integrations.kd.KDPlugin"],
        "kd_trainer": True,
        "sample_packing": False,
        "datasets": [{"path": str(path), "type": "axolotl.integrations.kd.chat_template",
                      "field_messages": "messages", "logprobs_field": "logprobs"}],
    }  # fmt: skip
    cfg.update(over)
    return cfg


def test_rows_made_with_the_recipes_template_pass(tiny_model, distilled, tmp_path):
    assert check_distillation(config(tiny_model, distilled), {}, tmp_path) == []


def test_another_chat_template_is_an_error_naming_file_line_and_offset(
    tiny_model, distilled, tmp_path
):
    problems = check_distillation(
        config(tiny_model, distilled, chat_template="chatml"), {}, tmp_path
    )
    assert len(problems) == 1 and problems[0].severity == "error"
    assert f"{distilled}:1:" in problems[0].message and "token(s) off" in problems[0].message


def test_the_plugin_and_trainer_are_required_and_packing_is_warned(tiny_model, distilled, tmp_path):
    cfg = config(tiny_model, distilled, plugins=None, sample_packing=True)
    got = {(p.severity, p.message.split(":")[0]) for p in check_distillation(cfg, {}, tmp_path)}
    assert ("error", "datasets[0] is a distillation dataset") in got
    assert ("warning", "sample_packing with a distillation dataset") in got
    # and a recipe with no distillation dataset is not looked at
    assert (
        check_distillation({"datasets": [{"path": "x", "type": "chat_template"}]}, {}, tmp_path)
        == []
    )


def test_a_malformed_line_is_an_error_naming_file_and_line(tiny_model, distilled, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(distilled.read_text().splitlines()[0] + "\n{not json\n")
    problems = check_distillation(config(tiny_model, bad), {}, tmp_path)
    assert len(problems) == 1 and problems[0].severity == "error"
    assert problems[0].message.startswith(f"datasets[0]: {bad}:2: ")
