"""arXiv: fetch metadata and sources into a resumable cache, read the bulk metadata
snapshot, and turn a cache into Documents offline.

Cache layout (everything a rerun needs to skip what it already has):

    CACHE/metadata.jsonl      one API entry per line (id, title, abstract, categories, ...)
    CACHE/src/<id>.tar.gz     e-print source (LaTeX tarball, gzipped single file or PDF)
    CACHE/pdf/<id>.pdf        PDF, when fetched with --format pdf
    CACHE/mmd/<id>.mmd        Nougat/Marker markdown you put there yourself (optional)

Old-style ids ("astro-ph/0101001") are stored with "/" replaced by "_".
The HTTP opener is injectable: tests serve recorded responses, nothing else changes.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from cosmosage.dataprep.corpus.pdf import pdf_to_text
from cosmosage.dataprep.corpus.sources import Document, archive_text
from cosmosage.dataprep.io import JsonlAppender, read_bytes, read_jsonl, write_bytes
from cosmosage.dataprep.records import DataError, Reject, decode_text
from cosmosage.dataprep.shard import in_shard, reject_key

log = logging.getLogger(__name__)

API_URL = "https://export.arxiv.org/api/query"
EPRINT_URL = "https://arxiv.org/e-print/{id}"
PDF_URL = "https://arxiv.org/pdf/{id}"
USER_AGENT = "cosmosage-dataprep/0.1 (research corpus builder; one request every 3 s)"

_ATOM = "{http://www.w3.org/2005/Atom}"
_ARXIV = "{http://arxiv.org/schemas/atom}"
_OS = "{http://a9.com/-/spec/opensearch/1.1/}"


def safe_id(arxiv_id: str) -> str:
    return arxiv_id.replace("/", "_")


def split_version(abs_url: str) -> tuple[str, int | None]:
    """ "http://arxiv.org/abs/2001.01234v2" -> ("2001.01234", 2)."""
    ident = abs_url.rsplit("/abs/", 1)[-1].strip()
    if "v" in ident and ident.rsplit("v", 1)[1].isdigit():
        base, v = ident.rsplit("v", 1)
        return base, int(v)
    return ident, None


# ------------------------------------------------------------------ API


def build_query(
    categories: Iterable[str], since: date | None = None, until: date | None = None
) -> str:
    cats = [f"cat:{c}" for c in categories]
    if not cats:
        raise DataError("at least one --category is needed")
    q = cats[0] if len(cats) == 1 else "(" + " OR ".join(cats) + ")"
    if since or until:
        lo = (since or date(1991, 1, 1)).strftime("%Y%m%d") + "0000"
        hi = (until or date(2999, 12, 31)).strftime("%Y%m%d") + "2359"
        q += f" AND submittedDate:[{lo} TO {hi}]"
    return q


def parse_feed(xml: bytes, source: str = "<feed>") -> tuple[list[dict], int]:
    """Entries of one Atom page of the arXiv API and the total result count."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DataError(f"{source}: malformed Atom XML ({exc})") from exc
    total_el = root.find(f"{_OS}totalResults")
    total = (
        int(total_el.text)
        if total_el is not None and (total_el.text or "").strip().isdigit()
        else 0
    )
    entries = []
    for e in root.findall(f"{_ATOM}entry"):
        abs_url = (e.findtext(f"{_ATOM}id") or "").strip()
        if "/abs/" not in abs_url:  # the API reports errors as an entry without an abs id
            summary = " ".join((e.findtext(f"{_ATOM}summary") or "").split())
            raise DataError(f"{source}: arXiv API error: {summary or abs_url or 'unknown'}")
        arxiv_id, version = split_version(abs_url)
        prim = e.find(f"{_ARXIV}primary_category")
        links = {
            ln.get("title") or ln.get("rel"): ln.get("href") for ln in e.findall(f"{_ATOM}link")
        }
        entry = {
            "id": arxiv_id,
            "version": version,
            "title": " ".join((e.findtext(f"{_ATOM}title") or "").split()),
            "abstract": " ".join((e.findtext(f"{_ATOM}summary") or "").split()),
            "authors": [
                (a.findtext(f"{_ATOM}name") or "").strip() for a in e.findall(f"{_ATOM}author")
            ],
            "categories": [c.get("term") for c in e.findall(f"{_ATOM}category") if c.get("term")],
            "primary_category": prim.get("term") if prim is not None else None,
            "published": (e.findtext(f"{_ATOM}published") or "").strip(),
            "updated": (e.findtext(f"{_ATOM}updated") or "").strip(),
            "pdf_url": links.get("pdf"),
        }
        if (lic := e.findtext(f"{_ARXIV}license")) or (lic := links.get("license")):
            entry["license"] = lic.strip()
        entries.append(entry)
    return entries, total


Opener = Callable[[str], bytes]


def urllib_opener(url: str, timeout: float = 60) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (http/https only)
        return resp.read()


@dataclass
class Fetcher:
    """Polite arXiv client: one request at a time, `delay` seconds apart, retries with
    back-off on errors, everything written to `cache` atomically."""

    cache: Path
    opener: Opener = urllib_opener
    delay: float = 3.0
    retries: int = 3
    page_size: int = 100
    api_url: str = API_URL
    eprint_url: str = EPRINT_URL
    pdf_url: str = PDF_URL
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    stats: dict = field(
        default_factory=lambda: {
            "requests": 0,
            "new_entries": 0,
            "downloaded": 0,
            "cached": 0,
            "failed": 0,
        }
    )
    _last: float | None = None

    def __post_init__(self) -> None:
        self.cache = Path(self.cache)

    def get(self, url: str) -> bytes:
        for attempt in range(self.retries + 1):
            if self._last is not None and (wait := self.delay - (self.clock() - self._last)) > 0:
                self.sleep(wait)
            self._last = self.clock()
            self.stats["requests"] += 1
            try:
                return self.opener(url)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.retries:
                    raise DataError(f"{url}: {exc}") from exc
                log.warning("%s: %s; retrying", url, exc)
                self.sleep(self.delay * 2**attempt)
        raise AssertionError("unreachable")

    # -------------------------------------------------------------- metadata

    def known_ids(self) -> set[str]:
        path = self.cache / "metadata.jsonl"
        if not path.exists():
            return set()
        return {rec["id"] for _, rec in read_jsonl(path) if isinstance(rec, dict) and "id" in rec}

    def fetch_metadata(self, query: str, max_results: int | None = None) -> list[dict]:
        """Page through the API; append entries not yet in the cache. Returns every entry seen."""
        known = self.known_ids()
        seen: list[dict] = []
        start, total = 0, None
        with JsonlAppender(self.cache / "metadata.jsonl") as meta:
            while total is None or start < total:
                n = (
                    self.page_size
                    if max_results is None
                    else min(self.page_size, max_results - start)
                )
                if n <= 0:
                    break
                params = {
                    "search_query": query,
                    "start": start,
                    "max_results": n,
                    "sortBy": "submittedDate",
                    "sortOrder": "ascending",
                }
                url = f"{self.api_url}?{urllib.parse.urlencode(params)}"
                entries, total = parse_feed(self.get(url), url)
                if not entries:
                    break
                for e in entries:
                    seen.append(e)
                    if e["id"] not in known:
                        meta.write(e)
                        known.add(e["id"])
                        self.stats["new_entries"] += 1
                start += len(entries)
        return seen

    # -------------------------------------------------------------- sources

    def source_path(self, arxiv_id: str, fmt: str = "source") -> Path:
        if fmt == "pdf":
            return self.cache / "pdf" / f"{safe_id(arxiv_id)}.pdf"
        return self.cache / "src" / f"{safe_id(arxiv_id)}.tar.gz"

    def fetch_sources(self, ids: Iterable[str], fmt: str = "source") -> None:
        """Download what is missing; a failure is logged and retried on the next run."""
        for arxiv_id in ids:
            path = self.source_path(arxiv_id, fmt)
            if path.exists() and path.stat().st_size:
                self.stats["cached"] += 1
                continue
            url = (self.pdf_url if fmt == "pdf" else self.eprint_url).format(id=arxiv_id)
            try:
                data = self.get(url)
            except DataError as exc:
                log.warning("%s", exc)
                self.stats["failed"] += 1
                continue
            if not data:
                self.stats["failed"] += 1
                continue
            write_bytes(path, data)
            self.stats["downloaded"] += 1


# ------------------------------------------------------------------ bulk metadata snapshot


def _parse_date(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text).date()
    except (TypeError, ValueError):
        pass
    try:
        return datetime.fromisoformat(text.strip()[:10]).date()
    except ValueError:
        return None


def record_date(rec: dict) -> date | None:
    """First-version date of a snapshot record (or API entry), else its update date."""
    versions = rec.get("versions") or []
    if (
        versions
        and isinstance(versions[0], dict)
        and (d := _parse_date(versions[0].get("created")))
    ):
        return d
    return _parse_date(rec.get("published")) or _parse_date(rec.get("update_date"))


def categories_of(rec: dict) -> list[str]:
    cats = rec.get("categories") or []
    return cats.split() if isinstance(cats, str) else list(cats)


def select(
    rec: dict, categories: Iterable[str] = (), since: date | None = None, until: date | None = None
) -> bool:
    cats = set(categories)
    if cats and not cats.intersection(categories_of(rec)):
        return False
    if since or until:
        d = record_date(rec)
        if d is None or (since and d < since) or (until and d > until):
            return False
    return True


def read_snapshot(
    path: str | Path,
    categories: Iterable[str] = (),
    since: date | None = None,
    until: date | None = None,
    shard: tuple[int, int] | None = None,
) -> Iterator[dict | Reject]:
    """Records of the bulk metadata snapshot (one JSON object per line) that match;
    malformed lines and records without id/abstract come back as Rejects naming the line."""
    categories = list(categories)
    for lineno, rec in read_jsonl(path):
        if not isinstance(rec, Reject) and not (
            isinstance(rec.get("id"), str) and isinstance(rec.get("abstract", ""), str)
        ):
            rec = Reject(
                str(path), lineno, "malformed metadata: missing or non-string id/abstract", rec
            )
        if isinstance(rec, Reject):  # one shard reports it (each reads every line)
            if in_shard(reject_key(rec), shard):
                yield rec
            continue
        if not in_shard(rec["id"], shard) or not select(rec, categories, since, until):
            continue
        rec["_line"] = lineno
        yield rec


def abstract_documents(
    records: Iterable[dict | Reject], source: str
) -> Iterator[Document | Reject]:
    """Title + abstract of each metadata record as a Document carrying its license."""
    for rec in records:
        if isinstance(rec, Reject):
            yield rec
            continue
        title = " ".join(str(rec.get("title") or "").split())
        abstract = str(rec.get("abstract") or "").strip()
        if not abstract:
            yield Reject(source, rec.get("_line"), "empty abstract", {"id": rec["id"]})
            continue
        text = (f"# {title}\n\n" if title else "") + abstract
        meta = {
            "arxiv_id": rec["id"],
            "license": rec.get("license") or "unknown",
            "kind": "text",
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        }
        yield Document(rec["id"], text, source, meta, rec.get("_line"))


def license_index(snapshot: str | Path, ids: set[str]) -> dict[str, str]:
    """id -> license for the given ids from the bulk snapshot (only those are kept)."""
    out = {}
    for _, rec in read_jsonl(snapshot):
        if isinstance(rec, dict) and rec.get("id") in ids and rec.get("license"):
            out[rec["id"]] = rec["license"]
    return out


# ------------------------------------------------------------------ cache -> documents


def cache_entries(cache: str | Path) -> Iterator[dict]:
    """Distinct metadata entries of a cache (the first line of each id wins)."""
    path = Path(cache) / "metadata.jsonl"
    if not path.exists():
        raise DataError(
            f"{path}: no metadata in the cache (run `cosmosage data arxiv fetch` first)"
        )
    seen = set()
    for lineno, rec in read_jsonl(path):
        if isinstance(rec, Reject) or not isinstance(rec.get("id"), str) or rec["id"] in seen:
            continue
        seen.add(rec["id"])
        rec["_line"] = lineno
        yield rec


def paper_text(cache: Path, arxiv_id: str) -> tuple[str, str, Path]:
    """(text, kind, file) from the best cached form: LaTeX source, then Nougat/Marker
    markdown, then PDF. Raises DataError listing what was tried."""
    sid = safe_id(arxiv_id)
    tried = []
    for path in (
        cache / "src" / f"{sid}.tar.gz",
        cache / "mmd" / f"{sid}.mmd",
        cache / "mmd" / f"{sid}.md",
        cache / "pdf" / f"{sid}.pdf",
    ):
        if not path.exists():
            continue
        try:
            if path.parent.name == "src":
                data = read_bytes(path)
                if data.startswith(b"%PDF"):  # e-print served a bare PDF
                    return pdf_to_text(data, str(path)), "pdf", path
                text, kind = archive_text(path)
            elif path.suffix == ".pdf":
                text, kind = pdf_to_text(read_bytes(path), str(path)), "pdf"
            else:
                text, kind = decode_text(read_bytes(path), str(path)), "markdown"
            if text.strip():
                return text, kind, path
            tried.append(f"{path.name}: no text")
        except DataError as exc:
            tried.append(str(exc))
    if not tried:
        raise DataError(f"{arxiv_id}: nothing cached for this paper (no source, markdown or PDF)")
    raise DataError(f"{arxiv_id}: " + "; ".join(tried))


def cache_documents(
    cache: str | Path,
    shard: tuple[int, int] | None = None,
    licenses: dict[str, str] | None = None,
    abstract_fallback: bool = False,
) -> Iterator[Document | Reject]:
    """One Document per cached paper in this shard, offline."""
    cache = Path(cache)
    licenses = licenses or {}
    for rec in cache_entries(cache):
        arxiv_id = rec["id"]
        if not in_shard(arxiv_id, shard):
            continue
        lic = rec.get("license") or licenses.get(arxiv_id) or "unknown"
        try:
            text, kind, path = paper_text(cache, arxiv_id)
        except DataError as exc:
            if abstract_fallback and rec.get("abstract"):
                rec["license"] = lic
                yield from abstract_documents([rec], str(cache / "metadata.jsonl"))
                continue
            yield Reject(
                str(cache / "metadata.jsonl"),
                rec["_line"],
                f"unreadable input: {exc}",
                {"id": arxiv_id},
            )
            continue
        title = rec.get("title") or ""
        if title and not text.lstrip().startswith("#"):
            text = f"# {title}\n\n{text}"
        meta = {
            "arxiv_id": arxiv_id,
            "license": lic,
            "kind": kind,
            "sha256": hashlib.sha256(read_bytes(path)).hexdigest(),
            "title": title,
        }
        yield Document(arxiv_id, text, str(path), meta)
