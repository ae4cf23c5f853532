"""Publish a folder to the Hugging Face Hub with the official client."""

from __future__ import annotations

import os
from pathlib import Path

from cosmosage.dataprep.io import DataError


class PublishError(Exception):
    """The Hub could not be used or refused a step; the message says which (never with the token)."""


def publish(
    folder: str | Path, repo_id: str, private: bool = False, endpoint: str | None = None
) -> str:
    """Create the model repo if needed and upload the folder; returns the repo URL.

    The token is read by huggingface_hub from HF_TOKEN or its login cache.
    Files that the Hub already holds unchanged are not sent again.
    """
    from huggingface_hub import HfApi, is_offline_mode
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise DataError(f"{folder}/README.md: a publish folder needs its model card")
    if is_offline_mode():
        raise PublishError("HF_HUB_OFFLINE is set: unset it to publish")
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT"))
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message="Upload from cosmosage",
        )
    except ValueError as exc:  # huggingface_hub's check of the card's metadata
        raise PublishError(f"{folder}/README.md: {exc}") from exc
    except HfHubHTTPError as exc:
        answer = exc.server_message or str(exc).splitlines()[0]
        raise PublishError(
            f"publishing {folder} to {repo_id} failed: {exc.response.status_code} from {exc.response.request.url}: {answer.strip()}"
        ) from exc
    return str(url)
