"""A cache of generated answers, so that a model evaluated again on the same prompts with
the same settings (the base model of every run in a sweep, a rerun of `eval`) is not
asked again.

    build/cache/answers/<model fingerprint>/<request key>.json

The model fingerprint hashes the folder's resolved path and each file's name, size and
modification time: retraining or re-importing into the same folder changes it. The
request key hashes the prompts as asked (text, system message, earlier turns), the
generation settings, the number of samples and the seed; the batch layout is fixed by
these, so a sampled answer read back is the one that would be generated. Entries are
written atomically; a damaged one counts as missing.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from cosmosage.dataprep.io import write_json
from cosmosage.dataprep.records import DataError

PROMPT_KEYS = ("prompt", "system", "history")
CACHE_VERSION = 1


def fingerprint(model: str | Path) -> str:
    folder = Path(model).resolve()
    h = hashlib.sha256(f"v{CACHE_VERSION}:{folder}".encode())
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def request_key(prompts: list[dict], settings: dict, n: int, seed: int) -> str:
    asked = [{k: p[k] for k in PROMPT_KEYS if p.get(k)} for p in prompts]
    blob = json.dumps([asked, settings, n, seed], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class AnswerCache:
    """get/put the answers of one model to one request; `None` folder: no caching."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder else None
        self.hits = 0

    def _path(self, model: str | Path, key: str) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / fingerprint(model) / f"{key}.json"

    def get(self, model, prompts, settings, n, seed) -> list[list[str]] | None:
        path = self._path(model, request_key(prompts, settings, n, seed))
        if path is None or not path.is_file():
            return None
        try:
            got = json.loads(path.read_text(encoding="utf-8"))["answers"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(got, list) or len(got) != len(prompts):
            return None
        self.hits += 1
        return got

    def put(self, model, prompts, settings, n, seed, answers: list[list[str]]) -> None:
        """Keep the answers; a cache that cannot be written (a read-only project, a full
        disk) is turned off with one warning, never a lost evaluation."""
        path = self._path(model, request_key(prompts, settings, n, seed))
        if path is None:
            return
        try:
            write_json(path, {"model": str(model), "answers": answers})
        except (OSError, DataError) as exc:
            print(
                f"warning: the answer cache {self.folder} cannot be written ({exc}); "
                "going on without it",
                file=sys.stderr,
            )
            self.folder = None
