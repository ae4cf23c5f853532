"""Model cards are written from the run record: lineage, data, losses, honest limits."""

from __future__ import annotations

import json

import yaml

from cosmosage.tools.recipe.render import Rendered
from cosmosage.tools.run.card import card_markdown, summary_markdown, write_publish_folder


def record(parent: str, data: dict) -> dict:
    return {
        "recipe": "fam/pipe",
        "run_id": "20260101-000000",
        "recipe_hash": "abc",
        "stages": {
            "instruct": {
                "recipe": "fam/instruct",
                "parent_model": parent,
                "model": "runs/x/instruct/model",
                "data": data,
                "metrics": {
                    "eval_loss_before": 2.5,
                    "eval_loss_best": 1.25,
                    "final_train_loss": 1.1,
                    "steps": 10,
                    "wall_s": 3.0,
                },
                "best_checkpoint": {"step": 8},
            }
        },
        "eval": {
            "base": {"all": 0.25, "domain": 0.0, "general": 1.0},
            "final": {"all": 0.5, "domain": 0.5, "general": 0.5},
        },
    }


def front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


def test_card_states_lineage_losses_scores_and_licenses(tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("{}\n")
    (tmp_path / "qa.manifest.json").write_text(
        json.dumps({"inputs": [{"path": "a", "license": "CC-BY-4.0"}]})
    )
    top = Rendered(
        "fam/pipe",
        {},
        {
            "description": "A test model",
            "card": {"title": "T", "tags": ["cosmology"], "warning": "toy"},
        },
    )
    text = card_markdown(record("mistralai/Mistral-7B-v0.1", {str(data): "f" * 64}), top)
    fm = front_matter(text)
    assert (
        fm["base_model"] == "mistralai/Mistral-7B-v0.1"
        and "cosmology" in fm["tags"]
        and fm["license"] == "apache-2.0"
    )
    assert "# T" in text and "> toy" in text
    assert "| fam/instruct | 2.5000 | 1.2500 | 10 |" in text
    assert "| final | 50% | 50% | 50% |" in text
    assert "CC-BY-4.0" in text and "best checkpoint at step 8" in text
    assert "## Limitations" in text and "fam/pipe" in text


def test_local_parent_is_not_claimed_as_a_hub_base_model(tmp_path):
    text = card_markdown(record("build/models/tiny-llama", {}), Rendered("x", {}, {}))
    assert "base_model" not in front_matter(text)


def test_card_names_no_machine_paths(tmp_path):
    from cosmosage.tools.recipe.render import ROOT

    run_dir = tmp_path / "runs" / "fam" / "20260101-000000"
    parent = run_dir / "pretrain" / "model"
    data = {
        str(ROOT / "build" / "data" / "qa.jsonl"): "f" * 64,
        "/elsewhere/x/chat.jsonl": "e" * 64,
    }
    text = card_markdown(record(str(parent), data), Rendered("x", {}, {}), run_dir)
    assert "from `pretrain/model`" in text
    assert "`build/data/qa.jsonl`" in text and "`.../chat.jsonl`" in text
    assert str(tmp_path) not in text and str(ROOT) not in text and "/elsewhere" not in text


def test_publish_folder_holds_model_files_and_the_card(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "README.md").write_text("trainer's own readme")
    rec = record("org/base", {})
    out = write_publish_folder(tmp_path / "run", rec, Rendered("x", {}, {}), str(model))
    assert (out / "model.safetensors").read_bytes() == b"weights"
    assert (out / "README.md").read_text().startswith("---")
    rec["publish"] = str(out)
    summary = summary_markdown(tmp_path / "run", rec)
    assert "| instruct | 2.5000 | 1.2500 | 8 | 10 | 3.0 |" in summary and str(out) in summary
