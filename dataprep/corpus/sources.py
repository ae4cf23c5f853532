"""Documents and their one reader: files (markdown, .mmd, text, LaTeX, PDF, LaTeX source
archives) -> Documents, and the document-level train/validation split.

A reader yields a `Document` or a `Reject` per input and never stops at a bad one.
Sharding happens here, before a file is read, so shard i of n reads only its own files.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cosmosage.dataprep.corpus.latex import latex_to_text, main_file
from cosmosage.dataprep.corpus.pdf import pdf_to_text
from cosmosage.dataprep.io import read_archive, read_bytes
from cosmosage.dataprep.records import DataError, Reject
from cosmosage.dataprep.shard import Shard, in_shard

TEXT_KINDS = {".md": "markdown", ".mmd": "markdown", ".markdown": "markdown", ".txt": "text"}
ALL_SUFFIXES = {*TEXT_KINDS, ".tex", ".pdf", ".gz", ".tgz", ".tar"}

_LICENSE_RE = re.compile(r"^License:\s*(\S+)", re.MULTILINE)
_ARXIV_RE = re.compile(r"^arXiv:\s*(\S+)", re.MULTILINE)
_AUTHORS_RE = re.compile(r"^Authors:\s*(.+)$", re.MULTILINE)
_HEADER_META_RE = re.compile(r"^(arXiv|Authors|License):.*$\n?", re.MULTILINE)


@dataclass
class Document:
    """What the corpus steps pass along: an id (the arXiv id, else the path relative to
    the folder given), the text, where it came from, and metadata (license, kind, sha256)."""

    id: str
    text: str
    source: str
    meta: dict = field(default_factory=dict)


def is_validation(doc_id: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic document-level split: the same document always lands on one side,
    so no document has chunks in both train and validation."""
    if fraction <= 0:
        return False
    h = int(hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def walk_files(folder: Path) -> list[Path]:
    """Every file under `folder`, sorted, following symlinked sub-folders (a corpus is often
    assembled from links) but never into a folder already walked, so a link cycle ends."""
    out: list[Path] = []
    seen: set[str] = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        out += [Path(top) / f for f in files if (Path(top) / f).is_file()]
    return sorted(out)


def iter_input_files(
    inputs: Iterable[str | Path],
    suffixes: set[str] = ALL_SUFFIXES,
    skipped: list[tuple[Path, str]] | None = None,
) -> Iterator[tuple[Path, str]]:
    """(file, key) for files and folders (recursively, sorted); the key is the path
    relative to the folder given, so it is the same wherever the corpus is mounted.
    Files in a folder whose kind is not in `suffixes` are appended to `skipped` as
    (file, key); hidden files are ignored."""
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in walk_files(p):
                if f.name.startswith("."):
                    continue
                key = f"{p.name}/{f.relative_to(p)}"
                if f.suffix.lower() in suffixes:
                    yield f, key
                elif skipped is not None:
                    skipped.append((f, key))
        elif p.is_file():
            yield p, p.name
        else:
            raise DataError(f"{p}: no such file or folder")


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text; a few bad bytes are replaced, a file that is mostly not UTF-8 (or
    binary, with NUL bytes) raises DataError naming the first bad line."""
    if b"\x00" in data:
        nul = data.count(b"\x00")
        if nul > max(8, len(data) // 100):
            line = data[: data.index(b"\x00")].count(b"\n") + 1
            raise DataError(f"{source}:{line}: binary or UTF-16 file ({nul} NUL bytes)")
        data = data.replace(b"\x00", b"")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8", errors="replace")
        bad = text.count("\ufffd")
        if bad > max(8, len(text) // 100):
            line = data[: exc.start].count(b"\n") + 1
            raise DataError(
                f"{source}:{line}: not UTF-8 ({bad} undecodable bytes, first at byte {exc.start})"
            ) from exc
        return text


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
    inputs: Iterable[str | Path], shard: Shard | None = None
) -> Iterator[Document | Reject]:
    """One Document per file in this shard (or a Reject saying why it could not be read).
    Files of kinds it does not read, found in a folder, come last as Rejects whose reason
    starts with "skipped file" (so they are listed in the manifest and said on the terminal)."""
    skipped: list[tuple[Path, str]] = []
    for path, key in iter_input_files(inputs, skipped=skipped):
        if not in_shard(key, shard):
            continue
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
        except DataError as exc:
            yield Reject(str(path), None, f"unreadable input: {exc}")
            continue
        meta = header_meta(text)
        if meta:
            text = _HEADER_META_RE.sub("", text, count=3)
        meta.update(kind=kind, sha256=hashlib.sha256(data).hexdigest())
        doc_id = meta.get("arxiv_id") or key
        yield Document(id=doc_id, text=text, source=str(path), meta=meta)
    kinds = ", ".join(sorted(ALL_SUFFIXES))
    for path, key in skipped:
        if in_shard(key, shard):
            kind = path.suffix.lower() or "no suffix"
            yield Reject(str(path), None, f"skipped file: {kind} is not a kind it reads ({kinds})")
