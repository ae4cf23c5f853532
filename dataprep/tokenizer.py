"""The Hugging Face tokenizer a data command names with --tokenizer."""

from __future__ import annotations

from pathlib import Path

from cosmosage.dataprep.records import DataError


def check_folder(name_or_path: str | Path, option: str) -> None:
    """A name that starts like a path or has two slashes must be a folder here (else it
    would be taken for a Hub id and fail with a traceback, or be looked up online)."""
    name = str(name_or_path)
    if (name.startswith(("/", ".", "~")) or name.count("/") > 1) and not (
        Path(name).expanduser().is_dir()
    ):
        raise DataError(f"{option} {name}: no such folder")


def load_tokenizer(name_or_path: str):
    """A Hugging Face tokenizer from a model folder or Hub id (ORG/NAME or NAME); a name
    that starts like a path or has two slashes must be a folder."""
    from transformers import AutoTokenizer

    check_folder(name_or_path, "--tokenizer")
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(
            f"--tokenizer {name_or_path}: no tokenizer could be loaded "
            f"({' '.join(str(exc).split())[:400]}); give a model folder with its tokenizer "
            "files (tokenizer.json, tokenizer_config.json), or a Hub id ORG/NAME"
        ) from exc
