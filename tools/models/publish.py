"""Publish a run's model to the Hugging Face Hub with the official client.

`prepare` does every local check and builds the exact folder that will be uploaded
(`<run>/upload/`, hard links: the run's publish folder - merged model, card, plots - and
with `with_gguf` the GGUF files and Ollama Modelfile of `<run>/gguf/`); `publish` shows
it (files and sizes), stops there on a dry run, and otherwise uploads it as one commit
and tags that commit, one tag per version. Only what a model repository holds is sent
(weights, config, tokenizer, generation config, card and other markdown, plots, GGUF,
Modelfile, license): dotfiles, optimizer and trainer state, checkpoints, logs and
anything else are left out and listed. Refused before anything is sent: a run that
did not finish, a run that failed its evaluation thresholds (unless forced), a folder
without merged weights or card, an invalid repo id or tag, no token, a token written
into a file. The token (HF_TOKEN or the login cache) is handed to huggingface_hub and
never printed or written.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cosmosage.dataprep.records import DataError
from cosmosage.tools.errors import PublishError
from cosmosage.tools.models.hub import hub_id_problem
from cosmosage.tools.paths import RunFolder

GGUF_DIR = "gguf"  # the GGUF files' folder in the published repository
TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
WEIGHTS = ("*.safetensors", "*.bin")
# what a model repository holds (matched on the file name); anything else in the folder
# is left out of the upload and listed as such
ALLOWED = (
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "adapter_model.bin",
    "config.json",
    "adapter_config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "*.md",
    "*.png",
    "*.gguf",
    "Modelfile",
    "LICENSE",
    "LICENSE.*",
)
# training state: never part of a published model, whatever its name matches
TRAINING_STATE = (
    "optimizer*",
    "scheduler*",
    "rng_state*",
    "training_args.bin",
    "trainer_state.json",
)

Echo = Callable[[str], None]


@dataclass
class Plan:
    source: Path  # what was given: a run folder or a publish folder
    folder: Path  # the exact folder to upload
    repo_id: str
    tag: str
    message: str
    description: str
    run: dict | None = None
    files: list[tuple[str, int]] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def check_repo_id(repo_id: str) -> None:
    why = hub_id_problem("--repo", repo_id, "you/cosmosage-tiny")
    if why:
        raise PublishError(why)


def check_tag(tag: str) -> None:
    if not TAG_RE.fullmatch(tag) or ".." in tag or tag.endswith((".lock", ".")):
        raise PublishError(f"--revision {tag!r}: a tag is letters, digits, '.', '_' and '-'")


def locate(source: str | Path, runs_dir: Path | None = None) -> tuple[Path, Path | None]:
    """(publish folder, run folder or None) for a run folder, a run's publish folder, a
    run id under runs_dir (`recipe/<id>`), or any folder holding a model and README.md."""
    path = RunFolder.under(source, runs_dir)
    if not path.is_dir():
        raise DataError(f"{source}: no such run or folder")
    if RunFolder.is_run(path):
        return RunFolder(path).publish, path
    if RunFolder.is_run(path.parent) and path == RunFolder(path.parent).publish:
        return path, path.parent
    return path, None


def check_run(run_dir: Path, force: bool) -> dict:
    record = RunFolder(run_dir).record()
    status = record.get("status")
    if status == "failed thresholds":
        failures = "; ".join(record.get("threshold_failures") or []) or "see its summary.md"
        if not force:
            raise PublishError(
                f"{run_dir} failed its evaluation thresholds ({failures}): "
                "not published (--force publishes it anyway)"
            )
    elif status != "complete":
        raise PublishError(f"{run_dir} did not finish (status {status!r}): nothing to publish")
    return record


def check_model(folder: Path) -> None:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (the run has no publish folder)")
    if not (folder / "README.md").is_file():
        raise DataError(f"{folder}/README.md: a publish folder needs its model card")
    if not (folder / "config.json").is_file() or not any(
        f for pattern in WEIGHTS for f in folder.glob(pattern)
    ):
        raise DataError(
            f"{folder}: no merged model (config.json and *.safetensors weights) to publish"
        )


def gguf_files(run_dir: Path | None) -> list[Path]:
    if run_dir is None:
        raise DataError("--with-gguf needs a run folder (its GGUF files are in <run>/gguf)")
    folder = RunFolder(run_dir).gguf
    found = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
    if not found:
        raise DataError(
            f"{folder}: no GGUF files; make them first with `cosmosage model quantize {run_dir}`"
        )
    return found + [f for f in (folder / "Modelfile",) if f.is_file()]


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_tree(src: Path, dst: Path) -> None:
    for f in sorted(src.rglob("*")):
        if f.is_file():
            link(f, dst / f.relative_to(src))


def build_folder(publish_dir: Path, run_dir: Path | None, with_gguf: bool) -> Path:
    """The exact folder to upload: the publish folder itself, or <run>/upload/ when GGUF
    files join it."""
    if not with_gguf:
        return publish_dir
    extra = gguf_files(run_dir)
    assert run_dir is not None
    dst = RunFolder(run_dir).upload
    shutil.rmtree(dst, ignore_errors=True)
    link_tree(publish_dir, dst)
    for f in extra:
        link(f, dst / GGUF_DIR / f.name)
    return dst


def left_out_reason(rel: str) -> str | None:
    """Why a file of the folder (its path inside it) is not uploaded; None if it is."""
    from fnmatch import fnmatch

    parts = rel.split("/")
    if any(p.startswith(".") for p in parts):
        return "hidden file or folder (never uploaded: it may hold secrets)"
    if any(fnmatch(p, "checkpoint-*") for p in parts[:-1]) or any(
        fnmatch(parts[-1], pat) for pat in TRAINING_STATE
    ):
        return "training state (optimizer, scheduler, trainer state or a checkpoint)"
    if not any(fnmatch(parts[-1], pat) for pat in ALLOWED):
        return "not a model, tokenizer, card, plot or GGUF file"
    return None


def listing(folder: Path) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """(files to upload with their sizes, files left out with the reason)."""
    files, left_out = [], []
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            rel = f.relative_to(folder).as_posix()
            why = left_out_reason(rel)
            if why:
                left_out.append((rel, why))
            else:
                files.append((rel, f.stat().st_size))
    return files, left_out


def prepare(
    source: str | Path,
    repo_id: str,
    with_gguf: bool = False,
    revision: str | None = None,
    force: bool = False,
    runs_dir: Path | None = None,
) -> Plan:
    """Every check that needs no network, then the folder to upload; nothing is sent."""
    check_repo_id(repo_id)
    publish_dir, run_dir = locate(source, runs_dir)
    record = check_run(run_dir, force) if run_dir is not None else None
    check_model(publish_dir)
    folder = build_folder(publish_dir, run_dir, with_gguf)
    if record is not None:
        default_tag = f"{record['recipe'].replace('/', '-')}-{record['run_id']}"
        message = f"{record['recipe']} run {record['run_id']}"
        bits = [f"status: {record.get('status')}", f"recipe hash: {record.get('recipe_hash')}"]
        description = "Published by `cosmosage model publish`; " + ", ".join(bits) + "."
    else:
        default_tag = f"v{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
        message = f"Upload {publish_dir.name}"
        description = "Published by `cosmosage model publish`."
    tag = revision or default_tag
    check_tag(tag)
    files, left_out = listing(folder)
    return Plan(
        source=Path(source),
        folder=folder,
        repo_id=repo_id,
        tag=tag,
        message=f"{message} ({tag})",
        description=description,
        run=record,
        files=files,
        left_out=left_out,
    )


def describe(plan: Plan) -> list[str]:
    """What will be uploaded: every file with its size, the total, the repo and tag."""
    width = max((len(p) for p, _ in plan.files), default=0)
    lines = [f"{plan.folder} -> {plan.repo_id} (tag {plan.tag}):"]
    lines += [f"  {path:<{width}}  {human_size(size):>9}" for path, size in plan.files]
    total = sum(size for _, size in plan.files)
    lines.append(f"  {len(plan.files)} files, {human_size(total)}")
    if plan.left_out:
        lines.append(f"left out ({len(plan.left_out)}):")
        lines += [f"  {path}  ({why})" for path, why in plan.left_out]
    return lines


def hub_token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login`, then publish again"
        )
    return token


def refuse_token_in_files(folder: Path, token: str, files: list[tuple[str, int]]) -> None:
    """A token pasted into a card or config must not reach the Hub."""
    needle = token.encode()
    for rel, size in files:
        f = folder / rel
        if size < 50_000_000 and needle in f.read_bytes():
            raise PublishError(f"{f} contains the Hugging Face token: remove it before publishing")


def check_online() -> str:
    """The token, once the client may go online; raises before any request otherwise."""
    from huggingface_hub import is_offline_mode

    if is_offline_mode():
        raise PublishError("HF_HUB_OFFLINE is set: unset it to publish")
    return hub_token()


def upload(plan: Plan, private: bool = False, endpoint: str | None = None) -> dict:
    """Create the repo if needed, upload the folder as one commit, tag it."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    token = check_online()
    refuse_token_in_files(plan.folder, token, plan.files)
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT"), token=token)
    repo_id = plan.repo_id
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        tags = {t.name for t in api.list_repo_refs(repo_id, repo_type="model").tags}
        if plan.tag in tags:
            raise PublishError(
                f"{repo_id} already has a version tagged {plan.tag}: "
                "give another --revision (each version gets its own tag)"
            )
        commit = api.upload_folder(
            folder_path=str(plan.folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message=plan.message,
            commit_description=plan.description,
            # exactly the listed files: nothing left out reaches the Hub
            allow_patterns=[glob.escape(path) for path, _ in plan.files],
        )
        api.create_tag(
            repo_id, tag=plan.tag, revision=commit.oid, tag_message=plan.message, repo_type="model"
        )
    except ValueError as exc:  # huggingface_hub's check of the card's metadata
        raise PublishError(f"{plan.folder}/README.md: {exc}") from exc
    except HfHubHTTPError as exc:
        answer = exc.server_message or str(exc).splitlines()[0]
        raise PublishError(
            f"publishing {plan.folder} to {repo_id} failed: {exc.response.status_code} from "
            f"{exc.response.request.url}: {answer.strip()}"
        ) from exc
    return {"url": str(url), "commit": commit.oid, "tag": plan.tag, "files": len(plan.files)}


def publish(
    source: str | Path,
    repo_id: str,
    private: bool = False,
    endpoint: str | None = None,
    revision: str | None = None,
    with_gguf: bool = False,
    force: bool = False,
    dry_run: bool = False,
    runs_dir: Path | None = None,
    echo: Echo | None = None,
) -> dict:
    """Check, build and show the folder; upload it unless `dry_run`. Returns the plan's
    summary plus, after an upload, the repo URL, commit id and tag."""
    plan = prepare(source, repo_id, with_gguf, revision, force, runs_dir)
    for line in describe(plan):  # what would go up, before anything that can refuse it
        (echo or (lambda s: None))(line)
    if not dry_run:
        refuse_token_in_files(plan.folder, check_online(), plan.files)
    result = {"folder": str(plan.folder), "tag": plan.tag, "files": len(plan.files)}
    if dry_run:
        return {**result, "dry_run": True}
    return {**result, **upload(plan, private, endpoint)}
