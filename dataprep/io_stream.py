"""File access for the corpus pipeline, beside `dataprep.io`: raw bytes, source
archives, a resumable JSONL cache and a streaming atomic JSONL writer."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from dataprep.io import DataError, atomic_writer, temp_beside


def read_bytes(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` atomically (a crash leaves the old file or none, never half of it)."""
    with atomic_writer(path, "wb") as fh:
        fh.write(data)


def read_archive(path: str | Path, max_member_bytes: int = 50 << 20) -> dict[str, bytes]:
    """Members of a (gzipped) tar archive by name; a gzipped single file comes back as
    {"main.tex": ...}. Raises DataError for a truncated or unreadable archive."""
    import gzip
    import tarfile
    import zlib

    path = Path(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            out = {}
            for member in tar:
                if member.isfile() and member.size <= max_member_bytes:
                    fh = tar.extractfile(member)
                    if fh is not None:
                        out[member.name.lstrip("./")] = fh.read()
            return out
    except tarfile.ReadError as exc:
        tar_error = exc
    except (EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{path}: truncated or corrupt archive ({exc})") from exc
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read(max_member_bytes + 1)
    except (EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{path}: truncated or corrupt archive ({tar_error}; {exc})") from exc
    name = "main.pdf" if data.startswith(b"%PDF") else "main.tex"
    return {name: data}


class JsonlAppender:
    """Append records to a JSONL file one flushed line at a time (a resumable cache).

    On open, a partial last line left by a crash is cut off, so a rerun appends cleanly.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb+") as fh:
                data = fh.read()
                if not data.endswith(b"\n"):
                    fh.truncate(data.rfind(b"\n") + 1)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JsonlWriter:
    """Streaming atomic JSONL writer: lines go to a temp file renamed over `path` on
    `commit()`; `abort()` (or leaving a `with` block by an exception) removes it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._tmp = temp_beside(self.path)
        self._fh = open(self._tmp, "w", encoding="utf-8")
        self.count = 0

    def write(self, record: dict) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1

    def commit(self) -> None:
        self._fh.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
