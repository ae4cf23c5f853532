"""Publishing a run with the real huggingface_hub client against a local stand-in Hub on
127.0.0.1: the exact folder, one commit and one tag per version, refusals before any
request, and the token never shown."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import huggingface_hub.constants as hub_constants
import numpy as np
import pytest
from click.testing import CliRunner

from cosmosage.dataprep.records import DataError
from cosmosage.tools.cli.main import main
from cosmosage.tools.models.publish import PublishError, publish
from tests.helpers.fake_hub import FakeHub

TOKEN = "hf_test_0123456789abcdefSECRET"
REPO = "you/cosmosage-tiny"
RUN_ID = "20260101-000000"
TAG = f"fam-pipe-{RUN_ID}"
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
CARD = """---
license: apache-2.0
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
def online(monkeypatch, tmp_path):
    """The suite runs with HF_HUB_OFFLINE=1; the client checks the flag it read at import.
    No login cache unless a test writes one."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def hub(online):
    with FakeHub(TOKEN) as h:
        yield h


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A finished run as `recipe run` leaves it: run.json and publish/ (model files with
    real safetensors weights, README.md, and one file in a subfolder)."""
    from safetensors.numpy import save_file

    run = tmp_path / "runs" / "fam" / "pipe" / RUN_ID
    out = run / "publish"
    out.mkdir(parents=True)
    record = {
        "recipe": "fam/pipe",
        "run_id": RUN_ID,
        "recipe_hash": "abc123",
        "status": "complete",
        "stages": {},
    }
    (run / "run.json").write_text(json.dumps(record))
    rng = np.random.default_rng(0)
    save_file(
        {
            "model.embed_tokens.weight": rng.standard_normal((1024, 64), dtype=np.float32),
            "model.norm.weight": np.ones(64, dtype=np.float32),
        },
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text('{"bos_token_id": 1, "eos_token_id": 2}\n')
    (out / "tokenizer.json").write_bytes(bytes(range(256)) * 8)
    (out / "tokenizer_config.json").write_text('{"model_max_length": 2048}\n')
    (out / "README.md").write_text(CARD, encoding="utf-8")
    (out / "eval").mkdir()
    (out / "eval" / "suite.md").write_text("| model | all |\n|---|---|\n| tiny | 40% |\n")
    return run


def set_status(run: Path, status: str, failures: list[str] | None = None) -> None:
    record = json.loads((run / "run.json").read_text())
    record["status"] = status
    record["threshold_failures"] = failures or []
    (run / "run.json").write_text(json.dumps(record))


def local_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def cli(*args: str):
    return CliRunner().invoke(main, ["model", "publish", *args])


def test_a_run_is_sent_byte_for_byte_as_one_tagged_commit(hub, run_dir, caplog):
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    res = publish(run_dir, REPO, endpoint=hub.url)

    assert res["url"] == f"{hub.url}/{REPO}" and res["tag"] == TAG and res["files"] == 7
    repo = hub.repos[REPO]
    assert repo.repo_type == "model" and repo.visibility == "public"
    assert repo.files == local_files(run_dir / "publish")
    assert repo.files["README.md"].decode("utf-8") == CARD
    assert [c.summary for c in repo.commits] == [f"fam/pipe run {RUN_ID} ({TAG})"]
    assert "recipe hash: abc123" in repo.commits[0].description
    assert set(repo.commits[0].added) == {*MODEL_FILES, "README.md", "eval/suite.md"}
    assert repo.tags == {TAG: repo.commits[0].oid} and res["commit"] == repo.commits[0].oid

    assert hub.calls() == [
        "POST /api/repos/create",
        f"GET /api/models/{REPO}/refs",
        "POST /api/validate-yaml",
        "POST /api/validate-yaml",
        f"POST /api/models/{REPO}/preupload/main",
        f"POST /api/models/{REPO}/commit/main",
        f"POST /api/models/{REPO}/tag/{repo.commits[0].oid}",
    ]
    assert hub.unhandled == []
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in hub.requests)
    assert TOKEN not in caplog.text


def test_each_version_is_one_commit_and_one_tag(hub, run_dir):
    publish(run_dir, REPO, endpoint=hub.url, revision="v1")
    card = run_dir / "publish" / "README.md"
    card.write_text(CARD + "\n## Limitations\n\n- Tiny.\n", encoding="utf-8")

    publish(run_dir, REPO, endpoint=hub.url, revision="v2")

    repo = hub.repos[REPO]
    assert len(repo.commits) == 2 and set(repo.commits[1].added) == {"README.md"}
    assert repo.tags == {"v1": repo.commits[0].oid, "v2": repo.commits[1].oid}
    assert repo.files["README.md"] == card.read_bytes()

    before = len(hub.requests)
    with pytest.raises(PublishError, match="already has a version tagged v2: give another"):
        publish(run_dir, REPO, endpoint=hub.url, revision="v2")
    assert len(repo.commits) == 2
    assert not any("/commit/" in c or "/preupload/" in c for c in hub.calls()[before:])


def test_dry_run_shows_the_exact_folder_and_sends_nothing(hub, run_dir, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")  # a dry run needs no token
    res = cli(str(run_dir), "--repo", REPO, "--dry-run", "--endpoint", hub.url)

    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == f"{run_dir / 'publish'} -> {REPO} (tag {TAG}):"
    assert any(line.split() == ["model.safetensors", "262.6", "KB"] for line in lines), res.output
    assert any(line.split()[:1] == ["eval/suite.md"] for line in lines)
    assert lines[-2].strip().startswith("7 files, ") and lines[-1] == "dry run: nothing uploaded"
    assert hub.requests == [] and hub.repos == {}


def test_cli_publishes_privately_and_never_prints_the_token(hub, run_dir, caplog):
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    res = cli(str(run_dir), "--repo", REPO, "--endpoint", hub.url, "--private")

    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1] == (
        f"published {run_dir / 'publish'} -> {hub.url}/{REPO} (tag {TAG})"
    )
    assert TOKEN not in res.output and TOKEN not in caplog.text
    repo = hub.repos[REPO]
    assert repo.visibility == "private" and repo.files == local_files(run_dir / "publish")
    assert TOKEN.encode() not in b"".join(repo.files.values())


def test_the_login_cache_token_is_used_when_no_variable_is_set(hub, run_dir, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    cache = Path(hub_constants.HF_TOKEN_PATH)
    cache.parent.mkdir(parents=True)
    cache.write_text(TOKEN)

    res = cli(str(run_dir), "--repo", REPO, "--endpoint", hub.url)

    assert res.exit_code == 0, res.output and TOKEN not in res.output
    assert hub.repos[REPO].tags == {TAG: hub.repos[REPO].commits[0].oid}


def test_a_run_that_failed_its_thresholds_needs_force(hub, run_dir):
    set_status(run_dir, "failed thresholds", ["final.held_out >= 0.9: got 0.5"])

    res = cli(str(run_dir), "--repo", REPO, "--endpoint", hub.url)
    assert res.exit_code == 1
    assert res.output.strip() == (
        f"Error: {run_dir} failed its evaluation thresholds (final.held_out >= 0.9: got 0.5): "
        "not published (--force publishes it anyway)"
    )
    assert hub.requests == []

    forced = cli(str(run_dir), "--repo", REPO, "--endpoint", hub.url, "--force")
    assert forced.exit_code == 0, forced.output and len(hub.repos[REPO].commits) == 1


def no_weights(run: Path) -> str:
    (run / "publish" / "model.safetensors").unlink()
    return "no merged model (config.json and *.safetensors weights) to publish"


def no_card(run: Path) -> str:
    (run / "publish" / "README.md").unlink()
    return "README.md: a publish folder needs its model card"


def unfinished(run: Path) -> str:
    set_status(run, "interrupted")
    return "did not finish (status 'interrupted'): nothing to publish"


def no_gguf(run: Path) -> str:
    return "no GGUF files; make them first with `cosmosage model quantize"


@pytest.mark.parametrize(
    ("make_bad", "args"),
    [
        (no_weights, []),
        (no_card, []),
        (unfinished, []),
        (no_gguf, ["--with-gguf"]),
        (lambda run: "is not a valid Hub repo id", ["--repo", "not a repo"]),
        (lambda run: "expected NAMESPACE/NAME", ["--repo", "just-a-name"]),
        (lambda run: "a tag is letters, digits", ["--revision", "v 1"]),
    ],
)
def test_bad_input_fails_before_any_request(hub, run_dir, make_bad, args):
    expected = make_bad(run_dir)
    res = cli(
        str(run_dir),
        "--endpoint",
        hub.url,
        *(args if "--repo" in args else ["--repo", REPO, *args]),
    )

    assert res.exit_code == 1 and "Traceback" not in res.output
    assert expected in res.output
    assert hub.requests == [] and hub.repos == {}


def test_no_token_fails_before_any_request(hub, run_dir, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    res = cli(str(run_dir), "--repo", REPO, "--endpoint", hub.url)

    assert res.exit_code == 1
    # the folder is listed first, so a user sees what would have gone up
    listing, error = res.output.strip().rsplit("\n", 1)
    assert f"-> {REPO} (tag " in listing.splitlines()[0] and "README.md" in listing
    assert error == (
        "Error: no Hugging Face token: set HF_TOKEN or run `hf auth login`, then publish again"
    )
    assert hub.requests == []


def test_a_token_written_into_the_card_is_refused(hub, run_dir):
    card = run_dir / "publish" / "README.md"
    card.write_text(CARD + f"\nexport HF_TOKEN={TOKEN}\n", encoding="utf-8")

    with pytest.raises(PublishError) as err:
        publish(run_dir, REPO, endpoint=hub.url)
    assert str(err.value) == f"{card} contains the Hugging Face token: remove it before publishing"
    assert TOKEN not in str(err.value) and hub.requests == []


def test_gguf_files_join_the_folder_with_with_gguf(hub, run_dir):
    gguf = run_dir / "gguf"
    gguf.mkdir()
    (gguf / "model-q8_0.gguf").write_bytes(b"GGUF" + bytes(100))
    (gguf / "Modelfile").write_text("FROM ./model-q8_0.gguf\n")

    res = publish(run_dir, REPO, endpoint=hub.url, with_gguf=True)

    files = hub.repos[REPO].files
    assert res["folder"] == str(run_dir / "upload")
    assert files["gguf/model-q8_0.gguf"] == b"GGUF" + bytes(100)
    assert files["gguf/Modelfile"] == b"FROM ./model-q8_0.gguf\n"
    assert files["README.md"] == CARD.encode()


def test_a_publish_folder_or_a_run_id_names_the_run(hub, run_dir):
    runs = run_dir.parents[2]
    by_id = cli(f"fam/pipe/{RUN_ID}", "--repo", REPO, "--runs-dir", str(runs), "--dry-run")
    assert by_id.exit_code == 0, by_id.output
    by_folder = publish(run_dir / "publish", REPO, dry_run=True)
    assert by_folder["tag"] == TAG and by_folder["dry_run"]


def test_rejected_token_is_one_clear_line_without_the_token(online, run_dir):
    with FakeHub("hf_the_right_one") as hub:
        res = cli(str(run_dir), "--repo-id", REPO, "--endpoint", hub.url)

    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.splitlines()[-1] == (
        f"Error: publishing {run_dir / 'publish'} to {REPO} failed: 401 from "
        f"{hub.url}/api/repos/create: Invalid credentials in Authorization header"
    )
    assert TOKEN not in res.output
    assert [r.headers["authorization"] for r in hub.requests] == [f"Bearer {TOKEN}"]
    assert hub.repos == {}


def test_card_with_broken_yaml_is_refused_and_nothing_is_committed(hub, run_dir):
    (run_dir / "publish" / "README.md").write_text("---\nlicense: [apache-2.0\n---\n# card\n")

    with pytest.raises(PublishError, match="Invalid metadata in README.md"):
        publish(run_dir, REPO, endpoint=hub.url)

    assert hub.repos[REPO].commits == [] and hub.repos[REPO].tags == {}
    assert not any("/commit/" in c for c in hub.calls())


def test_offline_mode_is_refused_with_a_hint(hub, run_dir, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)

    with pytest.raises(PublishError, match="HF_HUB_OFFLINE is set: unset it to publish"):
        publish(run_dir, REPO, endpoint=hub.url)
    assert hub.requests == []


def test_a_missing_run_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such run or folder"):
        publish(tmp_path / "nope", REPO, dry_run=True)


def test_only_model_files_are_sent_and_secrets_and_training_state_are_left_out(hub, run_dir):
    out = run_dir / "publish"
    junk = {
        ".env": f"HF_TOKEN={TOKEN}\n",
        ".git/config": "[remote]\n",
        "optimizer.pt": "state",
        "scheduler.pt": "state",
        "training_args.bin": "args",
        "checkpoint-5/model.safetensors": "old weights",
        "train.log": "loss 1.0\n",
    }
    for rel, text in junk.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    lines = []
    res = publish(out, REPO, endpoint=hub.url, echo=lines.append)
    sent = hub.repos[REPO].files
    assert res["files"] == 7 and set(sent) == {*MODEL_FILES, "README.md", "eval/suite.md"}
    shown = "\n".join(lines)
    assert "left out (7):" in shown
    assert ".env  (hidden file or folder" in shown and ".git/config  (hidden" in shown
    assert (
        "optimizer.pt  (training state" in shown
        and "checkpoint-5/model.safetensors  (training" in shown
    )
    assert "train.log  (not a model, tokenizer, card, plot or GGUF file)" in shown
    # the token in the left-out .env does not stop the publish, and is never printed
    assert TOKEN not in shown
