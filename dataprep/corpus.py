"""Documents -> cleaned text -> token chunks for continued pretraining.

Steps are generators: `read_documents` yields `Document`s, `clean` and `chunk` transform
them, `split_by_document` assigns whole documents to train or validation so that no
document has chunks on both sides.
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


_REFS_RE = re.compile(r"^#+\s*(references|bibliography)\s*$", re.IGNORECASE | re.MULTILINE)
_HEADER_META_RE = re.compile(r"^(arXiv|Authors|License):.*$\n?", re.MULTILINE)


def clean(doc: Document) -> Document:
    """Drop the reference list and header metadata lines; normalise blank lines."""
    text = doc.text
    if m := _REFS_RE.search(text):
        text = text[: m.start()]
    text = _HEADER_META_RE.sub("", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return Document(doc.id, text, doc.source, doc.meta)


def chunk(doc: Document, tokenizer, max_tokens: int) -> Iterator[dict]:
    """Cut a document into pieces of at most `max_tokens` tokens at token boundaries.

    Cuts prefer the last paragraph break inside the window so chunks read naturally.
    """
    enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    n = len(offsets)
    start_tok = 0
    index = 0
    while start_tok < n:
        end_tok = min(start_tok + max_tokens, n)
        start_char = offsets[start_tok][0]
        end_char = offsets[end_tok - 1][1] if end_tok == n else offsets[end_tok][0]
        if end_tok < n:
            para = doc.text.rfind("\n\n", start_char, end_char)
            if para > start_char + (end_char - start_char) // 2:
                end_char = para
                while end_tok > start_tok + 1 and offsets[end_tok - 1][0] >= end_char:
                    end_tok -= 1
        text = doc.text[start_char:end_char].strip()
        if text:
            yield {
                "text": text,
                "doc_id": doc.id,
                "chunk": index,
                "chunk_sha": hashlib.sha256(text.encode()).hexdigest()[:16],
            }
            index += 1
        start_tok = end_tok


def is_validation(doc_id: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic document-level split: the same document always lands on one side."""
    if fraction <= 0:
        return False
    h = int(hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction
