"""Hub ids: the NAMESPACE/NAME form the Hugging Face Hub accepts for a model repository
(`model publish --repo`, `model import --hub-id`)."""

from __future__ import annotations

import re

REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def hub_id_problem(option: str, repo_id: str, example: str) -> str | None:
    """Why `repo_id`, given as `option`, is not a Hub model id NAMESPACE/NAME, as one line
    (None when it is one); `example` is a valid id to show."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        return f"{option} {repo_id!r} is not a valid Hub repo id: {' '.join(str(exc).split())}"
    if not REPO_ID_RE.fullmatch(repo_id):
        return f"{option} {repo_id!r}: expected NAMESPACE/NAME, e.g. {example}"
    return None
