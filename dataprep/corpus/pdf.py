"""PDF bytes -> text with pypdf; pages are joined by form feeds for the cleaning rules."""

from __future__ import annotations

import io
import logging

from cosmosage.dataprep.records import DataError


def pdf_to_text(data: bytes, source: str = "<pdf>") -> str:
    """Text of every page, joined by "\\f". Raises DataError for a PDF that cannot be read
    (truncated, encrypted, not a PDF) or that has no extractable text."""
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise DataError(f"{source}: not a PDF (no %PDF header)")
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise DataError(f"{source}: encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
    except DataError:
        raise
    except (
        PyPdfError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        OSError,
    ) as exc:
        raise DataError(f"{source}: unreadable PDF ({type(exc).__name__}: {exc})") from exc
    text = "\f".join(pages)
    if not text.strip():
        raise DataError(
            f"{source}: PDF has no extractable text ({len(pages)} pages; scanned images need OCR)"
        )
    return text
