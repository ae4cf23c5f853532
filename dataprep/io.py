"""The only module that opens files for dataprep: JSONL in and out, atomic writes,
manifests and rejects.

Readers yield records and never stop at a bad line: a line that is not valid JSON
becomes a `Reject` naming the file and line (dataprep/records.py parses it), so the
caller can write it to the rejects file and go on.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from cosmosage.dataprep.records import (
    DataError,
    Reject,
    load_yaml_text,
    parse_json_line,
    reason_group,
)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict | Reject]]:
    """Yield (line number, record) for each non-blank line; bad lines yield a Reject. A
    UTF-8 byte-order mark at the start of the file (Windows editors write one) is not
    part of the first record."""
    path = Path(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if raw.strip():
                yield lineno, parse_json_line(raw, str(path), lineno)


def read_text(path: str | Path) -> str:
    """Read a text file as UTF-8, replacing undecodable bytes and dropping NULs."""
    data = Path(path).read_bytes()
    return data.decode("utf-8", errors="replace").replace("\x00", "")


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def command_line() -> list[str]:
    """The command that is running, as a user would type it (`cosmosage data ...`)."""
    argv = list(sys.argv)
    if argv and (argv[0].endswith(("cli/main.py", "/cosmosage")) or argv[0] == "cosmosage"):
        argv[0] = "cosmosage"
    return argv


STALE_TEMP_S = 3600  # a temporary file of the same output untouched this long is a dead run's


def temp_beside(path: str | Path) -> Path:
    """A new empty temporary file in `path`'s folder (same filesystem, so a rename is
    atomic). Temporary files of the same output left by a killed run (untouched for an
    hour) are removed first."""
    import time

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > STALE_TEMP_S:
                old.unlink()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it over `path` only on success. A
    full disk or read-only folder removes the temporary file and raises one DataError
    naming `path`."""
    try:
        tmp = temp_beside(path)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise write_failed(path, exc) from exc
        raise
    try:
        yield tmp
        os.replace(tmp, path)
        _written(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.errno in WRITE_ERRNOS and exc.filename in (None, str(tmp), str(path)):
            raise write_failed(path, exc) from exc
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w"):
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else "utf-8") as fh:
        yield fh


class _NothingWritten(Exception):
    pass


def write_jsonl(path: str | Path, records: Iterable[dict], *, empty_ok: bool = True) -> int:
    """Write records atomically; return how many were written. With `empty_ok=False` a
    run of no records leaves `path` as it was (an earlier good output stays)."""
    n = 0
    try:
        with atomic_writer(path) as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n")
                n += 1
            if not n and not empty_ok:
                raise _NothingWritten
    except _NothingWritten:
        return 0
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


def check_outputs(inputs: Iterable[str | Path], outputs: dict[str, str | Path | None]) -> None:
    """Refuse, before anything is read, an output that resolves (symlinks included) to an
    input or to another output (or to another output's rejects or manifest file);
    `outputs` maps an option name (`--out`) to its path."""
    given = {name: Path(p).resolve() for name, p in outputs.items() if p}
    seen: dict[Path, str] = {}
    for name, path in given.items():
        for other in (path, rejects_path(path), manifest_path(path)):
            if other in seen:
                raise DataError(
                    f"{name} {outputs[name]}: the same file as {seen[other]}'s; "
                    "give each output its own path"
                )
            seen[other] = name
    sources = {Path(i).resolve(): str(i) for i in inputs}
    for name, path in given.items():
        for other in (path, rejects_path(path), manifest_path(path)):
            if other in sources:
                raise DataError(
                    f"{name} {outputs[name]}: would overwrite the input {sources[other]}"
                )
    for name, path in given.items():
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise DataError(f"{name}: cannot create the output's folder inside {folder}: a file")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise DataError(
                f"{name} {outputs[name]}: cannot write into {folder} (a read-only "
                "file system or no permission); give an output path that can be written"
            )


# the errors that mean "the output could not be written", whatever the command
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES}


class WriteError(DataError):
    """An output could not be written (full disk, read-only folder, quota)."""


def write_failed(path: str | Path, exc: OSError) -> WriteError:
    """The one-line error for an output that could not be written (no temp file named)."""
    return WriteError(f"{path}: could not be written: {exc.strerror or exc}; nothing was kept")


_WRITTEN: list[list[Path]] = []


def _written(path: str | Path) -> None:
    if _WRITTEN:
        _WRITTEN[-1].append(Path(path))


@contextlib.contextmanager
def all_or_nothing():
    """Outputs finished inside the block are removed again if a later one cannot be
    written, so a full disk leaves no half set of outputs (each output is atomic on its
    own; this makes a command's outputs atomic together)."""
    written: list[Path] = []
    _WRITTEN.append(written)
    try:
        yield
    except (WriteError, OSError) as exc:
        if isinstance(exc, WriteError) or exc.errno in WRITE_ERRNOS:
            for p in written:
                with contextlib.suppress(OSError):
                    p.unlink()
        raise
    finally:
        _WRITTEN.remove(written)


def sibling(output: str | Path, suffix: str) -> Path:
    """A file beside a JSONL output: sibling("a/x.jsonl", ".rejects.jsonl") -> a/x.rejects.jsonl."""
    output = Path(output)
    return output.with_name(output.name.removesuffix(".jsonl") + suffix)


def rejects_path(output: str | Path) -> Path:
    return sibling(output, ".rejects.jsonl")


def manifest_path(output: str | Path) -> Path:
    return sibling(output, ".manifest.json")


def failed_rejects_path(output: str | Path) -> Path:
    """Where a run that kept nothing writes its rejects: its output, manifest and rejects
    file are those of the last run that kept something, left as they were. A run that
    keeps something removes it (`write_rejects`, `Manifest.write`): it is outdated."""
    return sibling(output, ".failed.rejects.jsonl")


@dataclass
class Manifest:
    """What an output was made from and what was kept and dropped, written beside it."""

    output: str
    command: list[str] = field(default_factory=command_line)
    inputs: list[dict] = field(default_factory=list)
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    tokens: int | None = None
    extra: dict = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        """Count `n` records dropped for `reason` (grouped by `reason_group`)."""
        self.dropped[reason_group(reason)] += n

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
        failed_rejects_path(self.output).unlink(missing_ok=True)
        return path


def write_rejects(output: str | Path, rejects: Iterable[Reject]) -> int:
    n = write_jsonl(rejects_path(output), (r.to_json() for r in rejects))
    failed_rejects_path(output).unlink(missing_ok=True)
    return n


def read_csv(path: str | Path, delimiter: str | None = None) -> Iterator[tuple[int, dict | Reject]]:
    """Yield (line number, row dict) per CSV/TSV row; rows with the wrong number of
    fields yield a Reject. The delimiter is a tab for `.tsv` files unless given."""
    import csv

    path = Path(path)
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    # utf-8-sig: spreadsheet programs start a UTF-8 CSV with a byte-order mark, which
    # would otherwise become part of the first column's name
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            return
        header = [h.strip() for h in header]
        start = reader.line_num + 1
        for row in reader:
            lineno, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                yield (
                    lineno,
                    Reject(
                        str(path),
                        lineno,
                        f"CSV row has {len(row)} fields, header has {len(header)}",
                        row,
                    ),
                )
                continue
            yield lineno, dict(zip(header, row, strict=True))


def read_records(path: str | Path) -> Iterator[tuple[int, dict | Reject]]:
    """JSONL or CSV/TSV rows by file extension, as (line number, record or Reject)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return read_csv(path)
    return read_jsonl(path)


def read_yaml(path: str | Path, lines: bool = False) -> Any:
    """Parse a YAML (or JSON) file with `load_yaml_text`."""
    path = Path(path)
    return load_yaml_text(read_text(path), path, lines)


def write_yaml(path: str | Path, obj: Any) -> None:
    import yaml

    # libyaml's emitter where PyYAML was built with it: the same YAML, several times faster
    # (a 20,000-fact recall suite spent most of its time here)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with atomic_writer(path) as fh:
        yaml.dump(obj, fh, Dumper=dumper, sort_keys=False, allow_unicode=True, width=100)


def write_text(path: str | Path, text: str) -> None:
    with atomic_writer(path) as fh:
        fh.write(text)


# --------------------------------------------------------------------------- streams
# raw bytes, source archives, a resumable JSONL cache and a streaming atomic JSONL writer


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

    binary = False  # True: a subclass that writes bytes (corpus.prepared.PickleWriter)

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._tmp = temp_beside(self.path)
        except OSError as exc:
            if exc.errno in WRITE_ERRNOS:
                raise write_failed(self.path, exc) from exc
            raise
        self._fh = open(self._tmp, "wb") if self.binary else open(self._tmp, "w", encoding="utf-8")
        self.count = 0

    def write(self, record: dict) -> None:
        self.write_line(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")

    def write_line(self, line: str) -> None:
        """One line as it is (a record read from a file this writer's kind wrote, passed
        on without parsing and dumping it again)."""
        self._put(line if line.endswith("\n") else line + "\n")

    def _put(self, data: str | bytes) -> None:
        try:
            self._fh.write(data)
        except OSError as exc:
            self.abort()
            if exc.errno in WRITE_ERRNOS:
                raise write_failed(self.path, exc) from exc
            raise
        self.count += 1

    def commit(self) -> None:
        try:
            self._fh.close()
            os.replace(self._tmp, self.path)
            _written(self.path)
        except OSError as exc:
            self.abort()
            if exc.errno in WRITE_ERRNOS:
                raise write_failed(self.path, exc) from exc
            raise

    def abort(self) -> None:
        # closing flushes what is buffered, which fails again on a full disk: the
        # temporary file is removed all the same
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
