"""Documents and their one reader: files (markdown, .mmd, text, LaTeX, PDF, LaTeX source
archives) -> Documents, and the document-level train/validation split.

A reader yields a `Document` or a `Reject` per input and never stops at a bad one.
Sharding happens here, before a file is read, so shard i of n reads only its own files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cosmosage.dataprep.corpus.latex import latex_to_text, main_file
from cosmosage.dataprep.corpus.pdf import pdf_to_text
from cosmosage.dataprep.io import read_archive, read_bytes
from cosmosage.dataprep.records import (
    DataError,
    NotText,
    Reject,
    decode_text,
    undecodable_bytes,
    where,
)
from cosmosage.dataprep.shard import Shard, in_shard, shard_of

TEXT_KINDS = {".md": "markdown", ".mmd": "markdown", ".markdown": "markdown", ".txt": "text"}
ALL_SUFFIXES = {*TEXT_KINDS, ".tex", ".pdf", ".gz", ".tgz", ".tar"}

_LICENSE_RE = re.compile(r"^License:\s*(\S+)", re.MULTILINE)
_ARXIV_RE = re.compile(r"^arXiv:\s*(\S+)", re.MULTILINE)
_AUTHORS_RE = re.compile(r"^Authors:\s*(.+)$", re.MULTILINE)
_HEADER_META_RE = re.compile(r"^(arXiv|Authors|License):.*$\n?", re.MULTILINE)


@dataclass
class Document:
    """What the corpus steps pass along: an id (the arXiv id, else the path relative to
    the folder given), the text, where it came from (a file, and the line of a document
    made from one line of a metadata file), and metadata (license, kind, sha256)."""

    id: str
    text: str
    source: str
    meta: dict = field(default_factory=dict)
    line: int | None = None

    @property
    def place(self) -> str:
        """`source`, or `source:line` for a document made from a line."""
        return where(self.source, self.line)


def is_validation(doc_id: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic document-level split: the same document always lands on one side,
    so no document has chunks in both train and validation."""
    if fraction <= 0:
        return False
    h = int(hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def _walk(folder: Path) -> Iterator[Path]:
    """Every file under `folder`, in the file system's order, following symlinked
    sub-folders (a corpus is often assembled from links) but never into a folder already
    walked, so a link cycle ends. Streams: a folder of a million files is never listed
    whole (os.walk would hold its names), only the folders still to walk are held."""
    seen: set[str] = set()
    todo = [str(folder)]
    while todo:
        top = todo.pop()
        real = os.path.realpath(top)
        if real in seen:
            continue
        seen.add(real)
        subfolders = []
        try:
            with os.scandir(top) as entries:
                for entry in entries:
                    if entry.is_dir():
                        subfolders.append(entry.path)
                    elif entry.is_file():
                        yield Path(entry.path)
        except OSError:  # unreadable or gone (os.walk skips it too)
            continue
        todo.extend(reversed(subfolders))


def walk_files(folder: Path) -> list[Path]:
    """Every file under `folder` (as `_walk` finds them), sorted."""
    return sorted(_walk(folder))


def input_files(
    inputs: Iterable[str | Path], walk=walk_files
) -> Iterator[tuple[int, Path, str, bool]]:
    """(input index, file, key, found in a folder) for the files and folders given; the
    key is the path relative to the folder given, so it is the same wherever the corpus is
    mounted; hidden files in a folder are ignored."""
    for n, item in enumerate(inputs):
        p = Path(item)
        if p.is_dir():
            for f in walk(p):
                if not f.name.startswith("."):
                    yield n, f, f"{p.name}/{f.relative_to(p)}", True
        elif p.is_file():
            yield n, p, p.name, False
        else:
            raise DataError(f"{p}: no such file or folder")


def iter_input_files(
    inputs: Iterable[str | Path],
    suffixes: set[str] = ALL_SUFFIXES,
    skipped: list[tuple[Path, str]] | None = None,
) -> Iterator[tuple[Path, str]]:
    """(file, key) for files and folders (recursively, sorted). Files in a folder whose
    kind is not in `suffixes` are appended to `skipped` as (file, key)."""
    for _, f, key, in_folder in input_files(inputs):
        if not in_folder or f.suffix.lower() in suffixes:
            yield f, key
        elif skipped is not None:
            skipped.append((f, key))


def plan_path(folder: str | Path, shard: Shard | tuple[int, int]) -> Path:
    return Path(folder) / f"{shard[0]:05d}-of-{shard[1]:05d}.jsonl"


HELD_PLAN_LINES = 16384


def plan_inputs(inputs: Iterable[str | Path], count: int, folder: str | Path) -> int:
    """Walk the inputs once and write, for each of `count` shards, the files it reads
    (`plan_path`): one JSON line [input index, path, key, read or skipped] each. A shard
    that reads its plan walks nothing itself, so the work and memory of a shard task
    follow its own size, not the corpus's. Streams: at most `HELD_PLAN_LINES` lines are
    held over all shards, whatever their number; returns the number of files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):  # rewritten from scratch: no line of an older plan stays
        plan_path(folder, (i, count)).write_text("")
    held: dict[int, list[str]] = {}
    total = 0

    def flush(i: int) -> None:
        with plan_path(folder, (i, count)).open("a", encoding="utf-8") as fh:
            fh.writelines(held.pop(i))

    for n, f, key, in_folder in input_files(inputs, walk=_walk):
        read = not in_folder or f.suffix.lower() in ALL_SUFFIXES
        i = shard_of(key, count)
        held.setdefault(i, []).append(json.dumps([n, str(f), key, read]) + "\n")
        total += 1
        if total % HELD_PLAN_LINES == 0:
            for shard in list(held):
                flush(shard)
    for shard in list(held):
        flush(shard)
    return total


def planned_files(plan: Path, skipped: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """A shard's files from its plan, in the order `iter_input_files` gives them (input
    by input, sorted within each); its skipped files appended to `skipped`."""
    if not plan.exists():
        raise DataError(f"{plan}: no input plan for this shard (the executor writes it first)")
    entries = []
    for lineno, line in enumerate(plan.read_text(encoding="utf-8").splitlines(), 1):
        try:
            n, path, key, read = json.loads(line)
        except ValueError as exc:  # not JSON, or not four fields
            raise DataError(
                f"{plan}:{lineno}: not a plan line [input, path, key, read] ({exc}); "
                "delete the plan folder and run the command again"
            ) from exc
        entries.append((n, Path(path), key, read))
    entries.sort(key=lambda e: (e[0], e[1]))
    skipped += [(f, key) for _, f, key, read in entries if not read]
    return [(f, key) for _, f, key, read in entries if read]


def header_meta(text: str) -> dict:
    """License, arXiv id and authors from a sample-style header ("License: CC-BY-4.0")."""
    meta = {}
    if m := _LICENSE_RE.search(text[:2000]):
        meta["license"] = m.group(1)
    if m := _ARXIV_RE.search(text[:2000]):
        meta["arxiv_id"] = m.group(1)
    if m := _AUTHORS_RE.search(text[:2000]):
        meta["authors"] = m.group(1).strip()
    return meta


def archive_text(path: Path) -> tuple[str, str]:
    """(text, kind) of an arXiv-style source archive: its main LaTeX file with inputs
    inlined, else a PDF inside it."""
    members = read_archive(path)
    texts = {
        n: decode_text(b, f"{path}!{n}") for n, b in members.items() if n.endswith((".tex", ".ltx"))
    }
    if name := main_file(texts):
        return latex_to_text(texts[name], texts), "markdown"
    pdfs = [n for n in members if n.lower().endswith(".pdf")]
    if pdfs:
        return pdf_to_text(members[pdfs[0]], f"{path}!{pdfs[0]}"), "pdf"
    raise DataError(f"{path}: archive has no .tex or .pdf file ({len(members)} members)")


def file_text(path: Path, data: bytes) -> tuple[str, str]:
    """(text, kind) of one input file by its suffix."""
    name = path.name.lower()
    if name.endswith(".pdf"):
        return pdf_to_text(data, str(path)), "pdf"
    if name.endswith((".tar.gz", ".tgz", ".tar", ".gz")):
        return archive_text(path)
    text = decode_text(data, str(path))
    if name.endswith(".tex"):
        return latex_to_text(text), "markdown"
    return text, TEXT_KINDS.get(path.suffix.lower(), "text")


def read_file_documents(
    inputs: Iterable[str | Path], shard: Shard | None = None, plan: str | Path | None = None
) -> Iterator[Document | Reject]:
    """One Document per file in this shard (or a Reject saying why it could not be read).
    Files of kinds it does not read, found in a folder, come last as Rejects whose reason
    starts with "skipped file" (so they are listed in the manifest and said on the terminal).
    With `plan` (a folder `plan_inputs` wrote), the shard's files are read from its plan
    instead of walking the inputs."""
    skipped: list[tuple[Path, str]] = []
    if plan is not None and shard is not None:
        files = planned_files(plan_path(plan, shard), skipped)
    else:
        files = (f for f in iter_input_files(inputs, skipped=skipped) if in_shard(f[1], shard))
    for path, key in files:
        try:
            data = read_bytes(path)
        except OSError as exc:
            yield Reject(str(path), None, f"unreadable file: {exc}")
            continue
        if not data.strip():
            yield Reject(str(path), None, "empty file")
            continue
        try:
            text, kind = file_text(path, data)
        except NotText as exc:  # the file itself: its line and why
            where = (str(path), exc.line) if exc.source == str(path) else (str(path), None)
            yield Reject(*where, f"unreadable input: {exc}")
            continue
        except DataError as exc:
            yield Reject(str(path), None, f"unreadable input: {exc}")
            continue
        meta = header_meta(text)
        if meta:
            text = _HEADER_META_RE.sub("", text, count=3)
        meta.update(kind=kind, sha256=hashlib.sha256(data).hexdigest())
        if "\ufffd" in text and (bad := undecodable_bytes(data)):  # a few, or it was a reject
            meta["undecodable_bytes"] = bad
        doc_id = meta.get("arxiv_id") or key
        yield Document(id=doc_id, text=text, source=str(path), meta=meta)
    kinds = ", ".join(sorted(ALL_SUFFIXES))
    for path, key in skipped:
        if plan is not None or in_shard(key, shard):
            kind = path.suffix.lower() or "no suffix"
            yield Reject(str(path), None, f"skipped file: {kind} is not a kind it reads ({kinds})")
