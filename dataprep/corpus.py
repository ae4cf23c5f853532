"""Documents: the record the corpus steps pass along, the plain-text reader, and the
document-level train/validation split.

The cleaning, filtering, dedup and chunking steps live in dataprep.clean,
dataprep.filters, dataprep.dedup and dataprep.chunk; dataprep.pipeline runs them.
`is_validation` assigns whole documents to one side so that no document has chunks on
both.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dataprep.io import Reject, read_text

TEXT_SUFFIXES = {".md", ".mmd", ".txt", ".tex"}


@dataclass
class Document:
    id: str
    text: str
    source: str
    meta: dict = field(default_factory=dict)


def iter_files(inputs: Iterable[str | Path], suffixes: set[str] = TEXT_SUFFIXES) -> Iterator[Path]:
    """Expand files and folders (recursively, sorted) into text files."""
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in suffixes)
        elif p.is_file():
            yield p
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")


_LICENSE_RE = re.compile(r"^License:\s*(\S+)", re.MULTILINE)
_ARXIV_RE = re.compile(r"^arXiv:\s*(\S+)", re.MULTILINE)


def read_documents(inputs: Iterable[str | Path]) -> Iterator[Document | Reject]:
    for path in iter_files(inputs):
        text = read_text(path)
        if not text.strip():
            yield Reject(str(path), None, "empty file")
            continue
        meta = {}
        if m := _LICENSE_RE.search(text[:2000]):
            meta["license"] = m.group(1)
        if m := _ARXIV_RE.search(text[:2000]):
            meta["arxiv_id"] = m.group(1)
        yield Document(id=meta.get("arxiv_id", path.stem), text=text, source=str(path), meta=meta)


def is_validation(doc_id: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic document-level split: the same document always lands on one side."""
    if fraction <= 0:
        return False
    h = int(hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction
