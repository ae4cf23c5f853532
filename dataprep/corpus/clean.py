"""Text cleaning rules for papers and books.

Pages are separated by form feeds (`\\f`, as the PDF reader emits them). Page-level
rules (running headers and footers, repeated boilerplate pages) work on pages; the
line rules (page numbers, figure residue, reference lists, whitespace) run together in
one pass over the lines, which is what keeps cleaning fast: most lines are long
paragraphs that every rule dismisses with a length or first-character check before
any regular expression runs. Math (`$...$`, `$$...$$`, LaTeX environments) is kept.

Each rule is also a plain `str -> str` function, and `clean_text` runs them all.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterator

# ------------------------------------------------------------------ Unicode repair

_TRANSLATE = str.maketrans(
    {
        "\u00ad": None,  # soft hyphen
        "\u200b": None,  # zero-width space
        "\u200c": None,
        "\u200d": None,
        "\ufeff": None,  # byte order mark
        "\u00a0": " ",  # no-break space
        "\u2009": " ",
        "\u202f": " ",
        "\r": None,
        "\ufb00": "ff",
        "\ufb01": "fi",
        "\ufb02": "fl",
        "\ufb03": "ffi",
        "\ufb04": "ffl",
        "\ufffd": None,  # replacement character left by undecodable bytes
        **{chr(c): None for c in range(0x20) if chr(c) not in "\n\t\f"},
        "\x7f": None,
    }
)
_NEEDS_TRANSLATE_RE = re.compile("[" + re.escape("".join(chr(k) for k in _TRANSLATE)) + "]")
# Typical UTF-8-read-as-Latin-1/cp1252 sequences ("Ã©", "â€™", "Â ").
_MOJIBAKE_RE = re.compile(
    "[\u00c2\u00c3\u00e2][\u0080-\u00bf\u20ac\u2122\u0153\u017e\u2019\u201c\u201d]"
)


# The ASCII part of _TRANSLATE: deletions only, done on bytes (several times faster).
_ASCII_DROP = bytes(c for c in range(0x20) if chr(c) not in "\n\t\f") + b"\x7f"


def fix_unicode(text: str) -> str:
    """Drop control and invisible characters, split ligatures, repair mojibake, NFC."""
    if text.isascii():
        raw = text.encode("ascii")
        kept = raw.translate(None, _ASCII_DROP)
        return kept.decode("ascii") if len(kept) != len(raw) else text
    if _NEEDS_TRANSLATE_RE.search(text):
        text = text.translate(_TRANSLATE)
    if text.isascii():
        return text
    if _MOJIBAKE_RE.search(text):
        import ftfy

        text = ftfy.fix_text(text, normalization="NFC", uncurl_quotes=False)
    return unicodedata.normalize("NFC", text)


# ------------------------------------------------------------------ page rules

_DIGITS_RE = re.compile(r"\d+")
_BLANK_PAGE_RE = re.compile(
    r"^\W*(this page (is )?intentionally left blank|blank page)\W*$", re.IGNORECASE
)
_NUMBERED_LINE_RE = re.compile(r"\d{1,4}[ \t]+[^\n$\\]{3,80}|[^\n$\\#]{3,80}[ \t]\d{1,4}")


def _line_key(line: str) -> str:
    return _DIGITS_RE.sub("#", line.strip().lower())


def _page_key(page: str) -> str:
    """Identity of a page's body, ignoring the ends where headers and page numbers sit."""
    page = page.strip()
    return page[200:-200] if len(page) > 800 else _line_key(page)


def _edges(page: str, n: int) -> list[str]:
    """The first and last `n` non-blank lines of a page (looking at a few lines only)."""
    head = [ln for ln in page.split("\n", n + 4)[: n + 4] if ln.strip()][:n]
    tail = [ln for ln in page.rsplit("\n", n + 4)[-(n + 4) :] if ln.strip()][-n:]
    return head + tail


def remove_running_headers(text: str, edge_lines: int = 2, min_share: float = 0.5) -> str:
    """Drop header/footer lines that recur on many pages.

    With page breaks: a line among the first or last `edge_lines` of a page whose shape
    (digits ignored) appears on at least `min_share` of the distinct pages (and on 3 or
    more). Without page breaks: a short line with a number at one end ("12 THE EXPANDING
    UNIVERSE", "Smith et al. 2021 7") whose shape occurs 3 or more times.
    """
    if "\f" in text:
        pages = text.split("\f")
        if len(pages) < 3:
            return text
        distinct = {_page_key(p): p for p in pages}  # repeated pages count once
        counts: Counter = Counter()
        for page in distinct.values():
            counts.update({_line_key(ln) for ln in _edges(page, edge_lines)})
        need = max(3, int(min_share * len(distinct)))
        drop = {k for k, c in counts.items() if c >= need}
        if not drop:
            return text
        out = []
        for page in pages:
            edges = {ln for ln in _edges(page, edge_lines) if _line_key(ln) in drop}
            if edges:
                lines = page.split("\n")
                nonblank = [i for i, ln in enumerate(lines) if ln.strip()]
                edge_idx = set(nonblank[:edge_lines] + nonblank[-edge_lines:])
                page = "\n".join(
                    ln for i, ln in enumerate(lines) if not (i in edge_idx and ln in edges)
                )
            out.append(page)
        return "\f".join(out)
    lines = text.split("\n")
    counts = Counter(_line_key(ln) for ln in lines if _numbered_line(ln))
    drop = {k for k, c in counts.items() if c >= 3}
    if not drop:
        return text
    return "\n".join(ln for ln in lines if not (_numbered_line(ln) and _line_key(ln) in drop))


def _numbered_line(line: str) -> bool:
    """A short line with a number at one end and some text: a header or footer shape."""
    s = line.strip()
    return (
        6 <= len(s) <= 90
        and (s[0].isdigit() or s[-1].isdigit())
        and "$" not in s
        and "\\" not in s
        and _NUMBERED_LINE_RE.fullmatch(s) is not None
    )


def remove_boilerplate_pages(text: str) -> str:
    """Drop blank-page notices and any page whose text repeats an earlier page."""
    if "\f" not in text:
        return text
    seen = set()
    out = []
    for page in text.split("\f"):
        key = page.strip()
        if len(key) < 300:
            key = " ".join(key.lower().split())
        if not key or key in seen or (len(key) < 100 and _BLANK_PAGE_RE.match(key)):
            continue
        seen.add(key)
        out.append(page)
    return "\f".join(out)


# ------------------------------------------------------------------ line-break hyphenation


def _is_lower(c: str) -> bool:
    return c.islower() and c.isalpha()


def dehyphenate(text: str) -> str:
    """Join words split across lines ("expan-\\nsion" -> "expansion")."""
    if "-\n" not in text:
        return text
    parts = text.split("-\n")
    out = [parts[0]]
    for part in parts[1:]:
        left = out[-1]
        right = part.lstrip(" \t")
        if left and right and _is_lower(left[-1]) and _is_lower(right[0]):
            out[-1] = left + right
        else:
            out.append(part)
    return "-\n".join(out)


# ------------------------------------------------------------------ line rules

_PAGE_NUMBER_RE = re.compile(
    r"(?:[-\u2013\u2014]\s*)?(?:page\s+)?(?:\d{1,4}|[ivxlcdm]{1,7})(?:\s+of\s+\d{1,4})?(?:\s*[-\u2013\u2014])?",
    re.IGNORECASE,
)
_TICK_RE = re.compile(
    r"(?:(?:[-+\u2212]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?%?|[A-Za-z]{1,2}\b|[()/,;])[ \t]*){3,}"
)
_TICK_NUMBER_RE = re.compile(r"[-+\u2212]?\d+(?:\.\d+)?")
_IMAGE_RE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)|<img\b[^>\n]*>", re.IGNORECASE)
_REF_TITLES = {"references", "bibliography", "works cited", "literature cited"}
_REF_TITLE_RE = re.compile(r"(#{1,6})?[ \t]*(?:\d+\.?[ \t]+)?([A-Za-z ]+?)[ \t]*:?")
_APPENDIX_RE = re.compile(r"(?:#{1,6}[ \t]*)?(?:[A-Z]\.?[ \t]+)?appendix\b", re.IGNORECASE)
_CITATION_RE = re.compile(r"[ \t]*(?:\[\d{1,4}\]|\d{1,4}\.)[ \t]+[A-Z].*\d{4}")
_MULTI_SPACE_RE = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")
_DIGIT_START = frozenset("0123456789-+\u2212(")
_SHORT_LINE_CHARS = re.compile(r"[A-Za-z0-9()]{1,2}")


def is_page_number(line: str) -> bool:
    s = line.strip()
    return 0 < len(s) <= 16 and _PAGE_NUMBER_RE.fullmatch(s) is not None


def is_tick_line(line: str) -> bool:
    s = line.strip()
    return (
        5 <= len(s) <= 120
        and s[0] in _DIGIT_START
        and "$" not in s
        and _TICK_RE.fullmatch(s) is not None
        and len(_TICK_NUMBER_RE.findall(s)) >= 3
    )


def reference_heading_level(line: str) -> int | None:
    """None unless `line` is a reference-list heading; else its markdown level (0 = plain)."""
    if len(line) > 40:
        return None
    m = _REF_TITLE_RE.fullmatch(line.strip())
    if not m or m.group(2).lower() not in _REF_TITLES:
        return None
    return len(m.group(1)) if m.group(1) else 0


def _heading_level(line: str) -> int:
    if not line.startswith("#"):
        return 0
    n = len(line) - len(line.lstrip("#"))
    return n if n <= 6 and line[n : n + 1] in (" ", "\t") else 0


def _is_citation(line: str) -> bool:
    s = line.lstrip()
    return bool(s) and (s[0] == "[" or s[0].isdigit()) and _CITATION_RE.match(line) is not None


def _line_pass(
    lines: Iterator[str] | list[str],
    page_numbers: bool = True,
    figures: bool = True,
    references: bool = True,
    whitespace: bool = True,
) -> Iterator[str]:
    """The line rules in one pass. Runs of candidate lines (short figure labels, citation
    lines) are buffered until the run ends, then dropped if long enough."""
    ref_level: int | None = None  # inside a reference list started by a heading of this level
    shorts: list[str] = []
    cites: list[str] = []

    def flush_shorts() -> Iterator[str]:
        if len(shorts) < 3:
            yield from shorts
        shorts.clear()

    def flush_cites() -> Iterator[str]:
        if len(cites) < 3:
            yield from cites
        cites.clear()

    for line in lines:
        if whitespace:
            line = line.rstrip()
            if "  " in line or "\t" in line:
                line = _MULTI_SPACE_RE.sub(" ", line)
        if references:
            if ref_level is not None:
                h = _heading_level(line)
                if (ref_level and h and h <= ref_level) or (
                    len(line) < 60 and _APPENDIX_RE.match(line)
                ):
                    ref_level = None
                else:
                    continue
            if (
                line[:1] in "#RrBbWwL0123456789"
                and (lvl := reference_heading_level(line)) is not None
            ):
                yield from flush_shorts()
                yield from flush_cites()
                ref_level = lvl
                continue
            if _is_citation(line):
                cites.append(line)
                continue
            if cites and line.strip():
                yield from flush_cites()
        if page_numbers and len(line) <= 20 and is_page_number(line):
            continue
        if figures:
            if len(line) <= 3 and line.strip() and _SHORT_LINE_CHARS.fullmatch(line.strip()):
                shorts.append(line)
                continue
            if shorts:
                yield from flush_shorts()
            if ("![" in line or "<img" in line or "<IMG" in line) and _IMAGE_RE.search(line):
                line = _IMAGE_RE.sub("", line)
                if not line.strip():
                    continue
            if len(line) <= 120 and line[:1] in _DIGIT_START and is_tick_line(line):
                continue
        yield line
    yield from flush_shorts()
    yield from flush_cites()


def _one_blank(lines: Iterator[str]) -> Iterator[str]:
    """Runs of blank lines as one (the line pass leaves blank lines blank, not spaces)."""
    blank = False
    for line in lines:
        if line:
            blank = False
        elif blank:
            continue
        else:
            blank = True
        yield line


def _apply(text: str, **rules: bool) -> str:
    return "\n".join(_line_pass(text.split("\n"), **rules))


_OFF = {"page_numbers": False, "figures": False, "references": False, "whitespace": False}


def remove_page_numbers(text: str) -> str:
    """Drop lines that hold only a page number ("12", "- 12 -", "Page 3 of 40", "xiv")."""
    return _apply(text, **{**_OFF, "page_numbers": True})


def remove_figure_residue(text: str) -> str:
    """Drop image links, lines of bare axis ticks ("0.0 0.5 1.0 1.5") and runs of one- or
    two-character lines left by figure labels. Lines with math are kept."""
    return _apply(text, **{**_OFF, "figures": True})


def remove_references(text: str) -> str:
    """Cut a reference list: from its heading to the next heading of the same or a higher
    level (or an appendix), else to the end. Runs of 3+ citation-like lines ("[12] A. Author,
    ApJ 801, 2 (2015)") without a heading are dropped too."""
    return _apply(text, **{**_OFF, "references": True})


# ------------------------------------------------------------------ PDF lines, whitespace

_WRAP_RE = re.compile(r"(?<=[^\n])\n(?=[^\n\s#\-*|$\\>])")


def unwrap_lines(text: str) -> str:
    """Join hard-wrapped lines inside paragraphs (PDF text); keeps blank lines, lists, math."""
    return _WRAP_RE.sub(" ", text)


# ------------------------------------------------------------------ all together


def clean_text(text: str, kind: str = "markdown") -> str:
    """Run every rule. `kind` is "markdown" (md, mmd, LaTeX-derived), "pdf" or "text";
    PDF text also has its hard-wrapped lines joined."""
    text = fix_unicode(text)
    if "\f" in text:
        text = remove_running_headers(text)
        text = remove_boilerplate_pages(text.replace("\f", "\n\f"))  # keep numbers off page text
        text = text.replace("\f", "\n\n")
    else:
        text = remove_running_headers(text)
    text = dehyphenate(text)
    text = "\n".join(_one_blank(_line_pass(text.split("\n"))))
    if kind == "pdf":
        text = unwrap_lines(text)  # joins lines, never adds blank ones
    return text.strip()
