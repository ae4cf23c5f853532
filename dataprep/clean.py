"""Text cleaning rules for papers and books: each rule is a plain `str -> str` function.

`clean_text` runs them in order. Pages are separated by form feeds (`\\f`, as the PDF
reader emits them); rules that need pages (running headers and footers, boilerplate
pages) fall back to whole-document heuristics when a text has no page breaks. Math
(`$...$`, `$$...$$`, LaTeX environments) is left as it is.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

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
# Typical UTF-8-read-as-Latin-1/cp1252 sequences ("Ã©", "â€™", "Â ").
_MOJIBAKE_RE = re.compile(
    "[\u00c2\u00c3\u00e2][\u0080-\u00bf\u20ac\u2122\u0153\u017e\u2019\u201c\u201d]"
)


def fix_unicode(text: str) -> str:
    """Drop control and invisible characters, split ligatures, repair mojibake, NFC."""
    text = text.translate(_TRANSLATE)
    if _MOJIBAKE_RE.search(text):
        import ftfy

        text = ftfy.fix_text(text, normalization="NFC", uncurl_quotes=False)
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return text


# ------------------------------------------------------------------ pages, headers, footers

_DIGITS_RE = re.compile(r"\d+")
_PAGE_NUMBER_RE = re.compile(
    r"^[ \t]*(?:[-\u2013\u2014]\s*)?(?:page\s+)?(?:\d{1,4}|[ivxlcdm]{1,7})(?:\s+of\s+\d{1,4})?(?:\s*[-\u2013\u2014])?[ \t]*$\n?",
    re.IGNORECASE | re.MULTILINE,
)
_BLANK_PAGE_RE = re.compile(
    r"^\W*(this page (is )?intentionally left blank|blank page)\W*$", re.IGNORECASE
)


def _line_key(line: str) -> str:
    return _DIGITS_RE.sub("#", line.strip().lower())


def remove_page_numbers(text: str) -> str:
    """Drop lines that hold only a page number ("12", "- 12 -", "Page 3 of 40", "xiv")."""
    return _PAGE_NUMBER_RE.sub("", text)


def remove_running_headers(text: str, edge_lines: int = 2, min_share: float = 0.5) -> str:
    """Drop header/footer lines that recur on many pages.

    With page breaks: a line among the first or last `edge_lines` of a page whose shape
    (digits ignored) appears on at least `min_share` of the pages (and on 3 or more).
    Without page breaks: a short line with a number at one end ("12 THE EXPANDING
    UNIVERSE", "Smith et al. 2021 7") whose shape occurs 3 or more times.
    """
    if "\f" in text:
        pages = text.split("\f")
        if len(pages) < 3:
            return text
        counts: Counter = Counter()
        distinct = {" ".join(_line_key(p).split()): p for p in pages}  # repeated pages count once
        for page in distinct.values():
            lines = [ln for ln in page.split("\n") if ln.strip()]
            edges = set(lines[:edge_lines] + lines[-edge_lines:])
            counts.update({_line_key(ln) for ln in edges})
        need = max(3, int(min_share * len(distinct)))
        drop = {k for k, c in counts.items() if c >= need}
        if not drop:
            return text
        out = []
        for page in pages:
            lines = page.split("\n")
            nonblank = [i for i, ln in enumerate(lines) if ln.strip()]
            edge_idx = set(nonblank[:edge_lines] + nonblank[-edge_lines:])
            out.append(
                "\n".join(
                    ln
                    for i, ln in enumerate(lines)
                    if not (i in edge_idx and _line_key(ln) in drop)
                )
            )
        return "\f".join(out)
    candidates = _NUMBERED_LINE_RE.findall(text)
    if len(candidates) < 3:
        return text
    counts = Counter(_line_key(c) for c in candidates)
    drop = {k for k, c in counts.items() if c >= 3}
    if not drop:
        return text
    return _NUMBERED_LINE_RE.sub(
        lambda m: "" if _line_key(m.group(0)) in drop else m.group(0), text
    )


_NUMBERED_LINE_RE = re.compile(
    r"^(?:\d{1,4}[ \t]+[^\n$\\]{3,80}|[^\n$\\#]{3,80}[ \t]\d{1,4})[ \t]*$", re.MULTILINE
)


def remove_boilerplate_pages(text: str) -> str:
    """Drop blank-page notices and any page whose text repeats an earlier page."""
    if "\f" not in text:
        return text
    seen = set()
    out = []
    for page in text.split("\f"):
        key = " ".join(page.lower().split())
        if not key:
            continue
        if key in seen or _BLANK_PAGE_RE.match(key):
            continue
        seen.add(key)
        out.append(page)
    return "\f".join(out)


# ------------------------------------------------------------------ line breaks

_HYPHEN_BREAK_RE = re.compile(r"([a-z\u00e0-\u00ff])-\n[ \t]*([a-z\u00e0-\u00ff])")
_WRAP_RE = re.compile(r"(?<=[^\n])\n(?=[^\n\s#\-*|$\\>])")


def dehyphenate(text: str) -> str:
    """Join words split across lines ("expan-\\nsion" -> "expansion")."""
    return _HYPHEN_BREAK_RE.sub(r"\1\2", text)


def unwrap_lines(text: str) -> str:
    """Join hard-wrapped lines inside paragraphs (PDF text); keeps blank lines, lists, math."""
    return _WRAP_RE.sub(" ", text)


# ------------------------------------------------------------------ references, figures

_REF_HEADING_RE = re.compile(
    r"^(#{1,6}[ \t]*)?(?:\d+\.?[ \t]+)?(references|bibliography|works cited|literature cited)[ \t]*:?[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_HEADING_RE = re.compile(r"^(#{1,6})[ \t]+\S", re.MULTILINE)
_APPENDIX_RE = re.compile(
    r"^(?:#{1,6}[ \t]*)?(?:[A-Z]\.?[ \t]+)?appendix\b", re.IGNORECASE | re.MULTILINE
)
_REF_LINE_RE = re.compile(
    r"^[ \t]*(?:\[\d{1,4}\]|\d{1,4}\.)[ \t]+[A-Z][^\n]*\d{4}[^\n]*$\n?", re.MULTILINE
)


def remove_references(text: str) -> str:
    """Cut a reference list: from its heading to the next heading of the same or a higher
    level (or an appendix), else to the end. Runs of 3+ citation-like lines ("[12] A. Author,
    ApJ 801, 2 (2015)") without a heading are dropped too."""
    m = _REF_HEADING_RE.search(text)
    if m:
        level = len(m.group(1).strip()) if m.group(1) else 0
        end = len(text)
        for h in _HEADING_RE.finditer(text, m.end()):
            if level and len(h.group(1)) <= level:
                end = h.start()
                break
        if a := _APPENDIX_RE.search(text, m.end(), end):
            end = a.start()
        text = text[: m.start()] + text[end:]
    return _REF_RUN_RE.sub("", text)


_REF_RUN_RE = re.compile(r"(?:" + _REF_LINE_RE.pattern + r"){3,}", re.MULTILINE)

_IMAGE_RE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)|<img\b[^>\n]*>", re.IGNORECASE)
# A line of axis ticks / labels: numbers and at most two short words, no math.
_TICKS_RE = re.compile(
    r"^[ \t]*(?:(?:[-+\u2212]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?%?|[A-Za-z]{1,2}\b|[()/,;])[ \t]*){3,}$\n?",
    re.MULTILINE,
)
_TICK_TOKEN_RE = re.compile(r"[-+\u2212]?\d+(?:\.\d+)?")
_SHORT_LINE_RUN_RE = re.compile(r"(?:^[ \t]*[A-Za-z0-9()]{1,2}[ \t]*\n){3,}", re.MULTILINE)


def remove_figure_residue(text: str) -> str:
    """Drop image links, lines of bare axis ticks ("0.0 0.5 1.0 1.5") and runs of one- or
    two-character lines left by figure labels. Lines with math are kept."""
    text = _IMAGE_RE.sub("", text)
    text = _TICKS_RE.sub(
        lambda m: "" if len(_TICK_TOKEN_RE.findall(m.group(0))) >= 3 else m.group(0), text
    )
    return _SHORT_LINE_RUN_RE.sub("", text)


# ------------------------------------------------------------------ whitespace

_TRAILING_WS_RE = re.compile(r"[ \t]+$", re.MULTILINE)
_MANY_BLANKS_RE = re.compile(r"\n{3,}")
_MULTI_SPACE_RE = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")


def normalize_whitespace(text: str) -> str:
    text = text.replace("\f", "\n\n")
    text = _TRAILING_WS_RE.sub("", text)
    text = _MULTI_SPACE_RE.sub(" ", text)
    return _MANY_BLANKS_RE.sub("\n\n", text).strip()


# ------------------------------------------------------------------ all together


def clean_text(text: str, kind: str = "markdown") -> str:
    """Run every rule. `kind` is "markdown" (md, mmd, LaTeX-derived), "pdf" or "text";
    PDF text also has its hard-wrapped lines joined."""
    text = fix_unicode(text)
    text = remove_running_headers(text)
    text = remove_page_numbers(text)
    text = remove_boilerplate_pages(text)
    text = dehyphenate(text)
    text = remove_figure_residue(text)
    text = remove_references(text)
    if kind == "pdf":
        text = text.replace("\f", "\n\n")
        text = unwrap_lines(text)
    return normalize_whitespace(text)
