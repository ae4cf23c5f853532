"""Publishing with the real huggingface_hub client against a local stand-in Hub on 127.0.0.1."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import huggingface_hub.constants as hub_constants
import numpy as np
import pytest
from click.testing import CliRunner

from cosmosage.dataprep.io import DataError
from cosmosage.tools.cli.main import main
from cosmosage.tools.models.publish import PublishError, publish
from tests.helpers.fake_hub import FakeHub

TOKEN = "hf_test_0123456789abcdefSECRET"
REPO = "you/cosmosage-tiny"
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
CARD = """---
license: apache-2.0
base_model: build/models/tiny-llama
tags:
- cosmosage
- axolotl
language:
- en
pipeline_tag: text-generation
---

# cosmosage tiny

Answers questions about cosmology (a test card; ünïcödé survives the trip).
"""


@pytest.fixture
def online(monkeypatch):
    """The suite runs with HF_HUB_OFFLINE=1; the client checks the flag it read at import."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def hub(online):
    with FakeHub(TOKEN) as h:
        yield h


@pytest.fixture
def folder(tmp_path) -> Path:
    """A publish folder as a run writes it: model files (real safetensors weights) plus README.md,
    and one file in a subfolder."""
    from safetensors.numpy import save_file

    out = tmp_path / "publish"
    out.mkdir()
    rng = np.random.default_rng(0)
    save_file(
        {
            "model.embed_tokens.weight": rng.standard_normal((1024, 64), dtype=np.float32),
            "model.norm.weight": np.ones(64, dtype=np.float32),
        },
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "vocab_size": 1024,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text('{"bos_token_id": 1, "eos_token_id": 2}\n')
    (out / "tokenizer.json").write_bytes(bytes(range(256)) * 8)
    (out / "tokenizer_config.json").write_text('{"model_max_length": 2048}\n')
    (out / "README.md").write_text(CARD, encoding="utf-8")
    (out / "eval").mkdir()
    (out / "eval" / "suite.md").write_text("| model | all |\n|---|---|\n| tiny | 40% |\n")
    return out


def local_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_publish_sends_card_and_weights_byte_for_byte(hub, folder, caplog):
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    url = publish(folder, REPO, endpoint=hub.url)

    assert url == f"{hub.url}/{REPO}"
    repo = hub.repos[REPO]
    assert repo.repo_type == "model" and repo.visibility == "public"
    assert repo.files == local_files(folder)
    assert repo.files["README.md"].decode("utf-8") == CARD
    assert len(repo.files["model.safetensors"]) > 100_000
    assert [c.summary for c in repo.commits] == ["Upload from cosmosage"]
    assert set(repo.commits[0].added) == {*MODEL_FILES, "README.md", "eval/suite.md"}

    assert hub.calls() == [
        "POST /api/repos/create",
        "POST /api/validate-yaml",
        "POST /api/validate-yaml",
        f"POST /api/models/{REPO}/preupload/main",
        f"POST /api/models/{REPO}/commit/main",
    ]
    assert hub.unhandled == []
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in hub.requests)
    assert TOKEN not in caplog.text


def test_second_publish_reuses_the_repo_and_sends_only_changes(hub, folder):
    publish(folder, REPO, endpoint=hub.url)
    (folder / "README.md").write_text(CARD + "\n## Limitations\n\n- Tiny.\n", encoding="utf-8")
    (folder / "eval" / "suite.md").unlink()

    url = publish(folder, REPO, endpoint=hub.url)

    repo = hub.repos[REPO]
    assert url == f"{hub.url}/{REPO}" and len(hub.repos) == 1
    assert len(repo.commits) == 2 and repo.commits[1].summary == "Upload from cosmosage"
    assert set(repo.commits[1].added) == {"README.md"}
    assert repo.files["README.md"] == (folder / "README.md").read_bytes()
    assert "eval/suite.md" in repo.files, "publishing adds and updates files, it does not delete"

    before = len(hub.requests)
    assert publish(folder, REPO, endpoint=hub.url) == url
    assert len(repo.commits) == 2, "an unchanged folder makes no empty commit"
    assert hub.calls()[before:] == [
        "POST /api/repos/create",
        "POST /api/validate-yaml",
        "POST /api/validate-yaml",
        f"POST /api/models/{REPO}/preupload/main",
        f"GET /api/models/{REPO}/revision/main",
    ]


def test_cli_publishes_privately_and_never_prints_the_token(hub, folder, caplog):
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    args = ["model", "publish", str(folder), "--repo-id", REPO, "--endpoint", hub.url, "--private"]

    first = CliRunner().invoke(main, args, catch_exceptions=False)
    again = CliRunner().invoke(main, args, catch_exceptions=False)

    for res in (first, again):
        assert res.exit_code == 0, res.output
        assert res.output.strip() == f"published {folder} -> {hub.url}/{REPO}"
        assert TOKEN not in res.output
    assert TOKEN not in caplog.text
    repo = hub.repos[REPO]
    assert repo.visibility == "private" and repo.files == local_files(folder)
    assert len(repo.commits) == 1
    assert hub.requests and all(
        r.headers["authorization"] == f"Bearer {TOKEN}" for r in hub.requests
    )


def test_folder_without_card_is_refused_before_any_request(hub, folder):
    (folder / "README.md").unlink()

    with pytest.raises(DataError, match="README.md: a publish folder needs its model card"):
        publish(folder, REPO, endpoint=hub.url)
    res = CliRunner().invoke(
        main, ["model", "publish", str(folder), "--repo-id", REPO, "--endpoint", hub.url]
    )

    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {folder}/README.md: a publish folder needs its model card"
    assert hub.requests == [] and hub.repos == {}


def test_rejected_token_is_one_clear_line_without_the_token(online, folder):
    with FakeHub("hf_the_right_one") as hub:
        res = CliRunner().invoke(
            main, ["model", "publish", str(folder), "--repo-id", REPO, "--endpoint", hub.url]
        )

    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip() == (
        f"Error: publishing {folder} to {REPO} failed: 401 from {hub.url}/api/repos/create: "
        "Invalid credentials in Authorization header"
    )
    assert TOKEN not in res.output
    assert [r.headers["authorization"] for r in hub.requests] == [f"Bearer {TOKEN}"]
    assert hub.repos == {}


def test_card_with_broken_yaml_is_refused_and_nothing_is_committed(hub, folder):
    (folder / "README.md").write_text("---\nlicense: [apache-2.0\n---\n# card\n")

    with pytest.raises(PublishError, match="Invalid metadata in README.md"):
        publish(folder, REPO, endpoint=hub.url)

    assert hub.repos[REPO].commits == [] and hub.repos[REPO].files == {}
    assert not any("/commit/" in c for c in hub.calls())


def test_offline_mode_is_refused_with_a_hint(hub, folder, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)

    with pytest.raises(PublishError, match="HF_HUB_OFFLINE is set: unset it to publish"):
        publish(folder, REPO, endpoint=hub.url)
    assert hub.requests == []
