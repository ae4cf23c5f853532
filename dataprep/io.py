"""The only module that opens files for dataprep: JSONL in and out, atomic writes,
manifests and rejects.

Readers yield records and never stop at a bad line: a line that is not valid JSON
becomes a `Reject` naming the file and line, so the caller can write it to the
rejects file and go on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DataError(Exception):
    """Bad input that stops a step; the message names file, line and field."""


@dataclass
class Reject:
    """A record that was dropped, with where it came from and why."""

    source: str
    line: int | None
    reason: str
    record: Any = None

    def to_json(self) -> dict:
        out = {"source": self.source, "line": self.line, "reason": self.reason}
        if self.record is not None:
            out["record"] = self.record
        return out


def where(source: str | Path, line: int | None) -> str:
    return f"{source}:{line}" if line is not None else str(source)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict | Reject]]:
    """Yield (line number, record) for each non-blank line; bad lines yield a Reject."""
    path = Path(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, Reject(str(path), lineno, f"not UTF-8: {exc.reason} at byte {exc.start}")
                continue
            if "\x00" in text:
                yield lineno, Reject(str(path), lineno, "NUL byte in line")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield lineno, Reject(str(path), lineno, f"invalid JSON: {exc.msg} (column {exc.colno})", text[:500])
                continue
            if not isinstance(obj, dict):
                yield lineno, Reject(str(path), lineno, f"expected a JSON object, got {type(obj).__name__}", obj)
                continue
            yield lineno, obj


def read_text(path: str | Path) -> str:
    """Read a text file as UTF-8, replacing undecodable bytes and dropping NULs."""
    data = Path(path).read_bytes()
    return data.decode("utf-8", errors="replace").replace("\x00", "")


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w"):
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else "utf-8") as fh:
        yield fh


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records atomically; return how many were written."""
    n = 0
    with atomic_writer(path) as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_writer(path) as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False, default=str)
        fh.write("\n")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rejects_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name.removesuffix(".jsonl") + ".rejects.jsonl")


def manifest_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name.removesuffix(".jsonl") + ".manifest.json")


@dataclass
class Manifest:
    """What an output was made from and what was kept and dropped, written beside it."""

    output: str
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    inputs: list[dict] = field(default_factory=list)
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    tokens: int | None = None
    extra: dict = field(default_factory=dict)

    def add_input(self, path: str | Path, **info: Any) -> None:
        entry = {"path": str(path), "sha256": sha256_file(path)}
        entry.update(info)
        self.inputs.append(entry)

    def to_json(self) -> dict:
        out = {
            "output": self.output,
            "command": self.command,
            "inputs": self.inputs,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "dropped_total": sum(self.dropped.values()),
        }
        if self.tokens is not None:
            out["tokens"] = self.tokens
        out.update(self.extra)
        return out

    def write(self) -> Path:
        path = manifest_path(self.output)
        write_json(path, self.to_json())
        return path


def write_rejects(output: str | Path, rejects: Iterable[Reject]) -> int:
    return write_jsonl(rejects_path(output), (r.to_json() for r in rejects))
