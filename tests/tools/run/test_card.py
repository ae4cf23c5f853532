"""Model cards are written from the run record: lineage, data, losses, honest limits."""

from __future__ import annotations

import json

import pytest
import yaml

from cosmosage.tools.recipe.render import RecipeError, Rendered
from cosmosage.tools.run.card import card_markdown, summary_markdown, write_publish_folder

# a recipe whose first model was built from scratch says so: its card names no base model
SCRATCH = Rendered("x", {}, {"card": {"base_model": "none"}})


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
    text = card_markdown(record("build/models/tiny-llama", {}), SCRATCH)
    assert "base_model" not in front_matter(text)


def test_a_card_without_base_model_fails_unless_the_recipe_says_from_scratch(tmp_path):
    with pytest.raises(RecipeError, match=r"no base_model.*build/models/tiny-llama.*--hub-id"):
        card_markdown(record("build/models/tiny-llama", {}), Rendered("x", {}, {}))
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(RecipeError, match="recipe.card.base_model: none"):
        write_publish_folder(
            tmp_path / "run",
            record("build/models/tiny-llama", {}),
            Rendered("x", {}, {}),
            str(model),
        )
    # the recipe may name the Hub id itself
    named = Rendered("x", {}, {"card": {"base_model": "org/base"}})
    assert (
        front_matter(card_markdown(record("build/models/tiny-llama", {}), named))["base_model"]
        == "org/base"
    )


def test_an_imported_model_carries_its_hub_id_into_the_card(tmp_path):
    from cosmosage.tools.models.importer import RECORD

    folder = tmp_path / "imported"
    folder.mkdir()
    (folder / RECORD).write_text(json.dumps({"hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    text = card_markdown(record(str(folder), {}), Rendered("x", {}, {}))
    assert front_matter(text)["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_card_names_no_machine_paths(tmp_path):
    from cosmosage.tools.paths import ROOT

    run_dir = tmp_path / "runs" / "fam" / "20260101-000000"
    parent = run_dir / "pretrain" / "model"
    data = {
        str(ROOT / "build" / "data" / "qa.jsonl"): "f" * 64,
        "/elsewhere/x/chat.jsonl": "e" * 64,
    }
    text = card_markdown(record(str(parent), data), SCRATCH, run_dir)
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


def scored_record(parent: str, data: dict) -> dict:
    rec = record(parent, data)
    rec["stages"]["instruct"]["model"] = "runs/x/instruct/model"
    rec["eval"] = {
        "base": {"all": 0.25, "general": 0.9, "trained": 0.0, "held_out": 0.0},
        "instruct": {
            "all": 0.6,
            "general": 0.8,
            "trained": 0.95,
            "held_out": 0.7,
            "flagged": 0.125,
            "suite:recall": 0.83,
            "mc:everyday": 0.5,
            "ppl": 12.5,
            "consistency_auroc": 0.9,
        },
    }
    return rec


def hub_card(tmp_path, rec: dict, top: Rendered, tiny_model):
    """The card as write_publish_folder writes it, read back with huggingface_hub."""
    from huggingface_hub import ModelCard, ModelCardData

    out = write_publish_folder(tmp_path / "run", rec, top, str(tiny_model))
    card = ModelCard.load(out / "README.md")
    # strict: a malformed model-index raises instead of being dropped with a warning
    strict = ModelCardData(ignore_metadata_errors=False, **card.data.to_dict())
    return card, strict


def test_card_front_matter_is_valid_hub_metadata_with_the_scores(tmp_path, tiny_model):
    from cosmosage.tools.run.card import HUB_LICENSES

    top = Rendered(
        "fam/pipe",
        {},
        {
            "description": "d",
            "card": {"title": "cosmosage test", "tags": ["cosmology"], "datasets": ["org/qa"]},
        },
    )
    card, data = hub_card(tmp_path, scored_record("org/base-7b", {}), top, tiny_model)

    assert data.license == "apache-2.0" and data.license in HUB_LICENSES
    assert data.base_model == "org/base-7b" and data.datasets == ["org/qa"]
    assert data.language == ["en"] and data.pipeline_tag == "text-generation"
    assert data.library_name == "transformers" and "cosmology" in data.tags
    assert data.model_name == "cosmosage test"
    got = {(r.dataset_name, r.metric_name): r.metric_value for r in data.eval_results}
    assert got == {
        ("general prompt suite", "share passed"): 0.8,
        ("fact recall", "recall (trained wording)"): 0.95,
        ("fact recall", "recall (held-out wording)"): 0.7,
        ("everyday (multiple choice)", "acc_norm"): 0.5,
        ("held-out general text", "perplexity"): 12.5,
    }
    assert all(r.task_type == "text-generation" for r in data.eval_results)
    text = card.text
    # how to prompt it: the tiny model's own template, applied to a question
    assert "## How to prompt it" in text and "[INST] What is the cosmic microwave" in text
    assert "Generation ends at `</s>`" in text
    # measured limitations
    assert "Recalls 70% of the trained facts when asked in wordings it never saw" in text
    assert "Self-consistency flags 12% of its scored answers" in text
    assert "General prompt suite: 80% passed, against 90% for the starting model." in text


def test_local_parents_and_unknown_licenses_stay_valid(tmp_path, tiny_model):
    top = Rendered(
        "x", {}, {"card": {"license": "Llama 3.1 Community License", "base_model": "none"}}
    )
    rec = scored_record(str(tiny_model), {})
    card, data = hub_card(tmp_path, rec, top, tiny_model)
    assert data.base_model is None and "base_model" not in card.data.to_dict()
    assert data.license == "other" and data.license_name == "llama-3.1-community-license"
    assert str(tiny_model) not in str(card)


def test_non_commercial_data_is_stated_at_the_top(tmp_path, tiny_model):
    qa, corpus = tmp_path / "qa.jsonl", tmp_path / "corpus.jsonl"
    for f in (qa, corpus):
        f.write_text("{}\n")
    (tmp_path / "qa.manifest.json").write_text(
        json.dumps({"inputs": [{"path": "a", "license": "CC-BY-NC-4.0"}]})
    )
    (tmp_path / "corpus.manifest.json").write_text(
        json.dumps(
            {
                "inputs": [],
                "licenses": {
                    "http://creativecommons.org/licenses/by-nc-sa/4.0/": 3,
                    "cc-by-4.0": 2,
                },
            }
        )
    )
    rec = scored_record("org/base", {str(qa): "a" * 64, str(corpus): "b" * 64})
    card, _ = hub_card(tmp_path, rec, Rendered("x", {}, {"description": "d"}), tiny_model)
    text = card.text
    head = text.split("## Lineage")[0]
    assert "**Non-commercial use only.**" in head
    assert "CC-BY-NC-4.0" in head and "by-nc-sa/4.0" in head and "cc-by-4.0" not in head
    assert "Source licenses recorded in the data manifests:" in text and "cc-by-4.0" in text

    clean = scored_record("org/base", {})
    card, _ = hub_card(tmp_path / "clean", clean, Rendered("x", {}, {}), tiny_model)
    assert "Non-commercial" not in card.text


def test_a_soup_stage_is_named_as_a_mix_of_its_parents(tmp_path):
    from cosmosage.tools.paths import ROOT

    run_dir = tmp_path / "run"
    rec = record("org/base", {})
    rec["stages"] = {
        "soup": {
            "recipe": "fam/soup",
            "parent_model": str(run_dir / "tuned" / "model"),
            "parents": [str(run_dir / "tuned" / "model"), str(ROOT / "build/models/tiny-llama")],
            "soup": {"method": "linear", "weights": [0.75, 0.25]},
            "model": str(run_dir / "soup" / "model"),
            "data": {},
            "metrics": {
                "eval_loss_before": None,
                "eval_loss_best": None,
                "final_train_loss": None,
                "steps": 0,
                "wall_s": 1.0,
            },
            "best_checkpoint": None,
        }
    }
    text = card_markdown(rec, SCRATCH, run_dir)
    assert (
        "- `fam/soup`: model soup (linear) of 0.75 x `tuned/model` + 0.25 x "
        "`build/models/tiny-llama`" in text
    )
    assert "| fam/soup | - | - | 0 |" in text


def test_card_gives_each_pass_rate_its_interval_when_the_counts_are_known(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    counts = {"base": {"all": [6, 24], "general": [24, 24]}, "final": {"all": [12, 24]}}
    (run / "eval" / "scores.json").write_text(json.dumps({"counts": counts}))
    text = card_markdown(record("org/base", {}), Rendered("x", {}, {}), run_dir=run)
    assert "| base | 25% [12-45] | 0% | 100% [86-100] |" in text
    # domain has no counts: the bare rate, as before
    assert "| final | 50% [31-69] | 50% | 50% |" in text and "Wilson" in text
