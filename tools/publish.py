"""Publish a folder to the Hugging Face Hub with the official client."""

from __future__ import annotations

import os
from pathlib import Path


def publish(folder: str | Path, repo_id: str, private: bool = False, endpoint: str | None = None) -> str:
    """Create the model repo if needed and upload the folder; returns the repo URL.

    The token is read by huggingface_hub from HF_TOKEN or its login cache.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise FileNotFoundError(f"{folder}/README.md: a publish folder needs its model card")
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT"))
    url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message="Upload from cosmosage")
    return str(url)
