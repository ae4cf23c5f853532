"""LaTeX source -> readable text with math and section structure kept.

Dropped: the preamble, comments, figure/table environments, the bibliography, labels
and citations. Sections become markdown headings so the cleaning rules and the
paragraph-aligned chunker see the same structure as in .md sources. Files pulled in with
`\\input`/`\\include` are inlined from the same source archive.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_COMMENT_RE = re.compile(r"(?<!\\)%.*")
_DROP_ENVS = (
    "figure",
    "figure*",
    "table",
    "table*",
    "thebibliography",
    "comment",
    "acknowledgments",
    "acknowledgements",
    "tikzpicture",
    "wrapfigure",
    "deluxetable",
    "deluxetable*",
)
_SECTION_RE = re.compile(
    r"\\(part|chapter|section|subsection|subsubsection|paragraph)\*?\s*(?:\[[^\]]*\])?\s*\{"
)
_LEVEL = {
    "part": "#",
    "chapter": "#",
    "section": "##",
    "subsection": "###",
    "subsubsection": "####",
    "paragraph": "#####",
}
_INPUT_RE = re.compile(r"\\(?:input|include)\s*\{([^}]+)\}")
_DROP_CMDS_RE = re.compile(
    r"\\(?:label|cite[tp]?|citealp|citeauthor|citeyear|nocite|bibliography|bibliographystyle|"
    r"maketitle|tableofcontents|newpage|clearpage|pagebreak|vspace\*?|hspace\*?|keywords|"
    r"affiliation|affil|email|thanks|altaffiliation|author|correspondingauthor|date)\s*(?:\[[^\]]*\])?\s*\{(?:[^{}]|\{[^{}]*\})*\}"
)
_BARE_CMDS_RE = re.compile(
    r"\\(?:maketitle|tableofcontents|newpage|clearpage|noindent|medskip|bigskip|smallskip|centering)\b\s*"
)
_STYLE_RE = re.compile(
    r"\\(?:emph|textbf|textit|textrm|textsf|texttt|underline|textsc|mbox|text)\s*\{((?:[^{}]|\{[^{}]*\})*)\}"
)
_REF_RE = re.compile(r"\\(?:eq)?ref\s*\{[^}]*\}")
_URL_RE = re.compile(r"\\(?:url|href)\s*\{([^}]*)\}(?:\{([^}]*)\})?")
_FOOTNOTE_RE = re.compile(r"\\footnote\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_ITEM_RE = re.compile(r"^\s*\\item\s*", re.MULTILINE)
_LIST_ENV_RE = re.compile(
    r"\\(?:begin|end)\{(?:itemize|enumerate|description|center|flushleft|flushright|quote)\}\s*"
)


def strip_comments(src: str) -> str:
    return _COMMENT_RE.sub("", src.replace("\\%", "\x00pct")).replace("\x00pct", "\\%")


def _drop_environment(src: str, env: str) -> str:
    begin, end = f"\\begin{{{env}}}", f"\\end{{{env}}}"
    out, pos = [], 0
    while (i := src.find(begin, pos)) >= 0:
        out.append(src[pos:i])
        j = src.find(end, i)
        if j < 0:  # unclosed: drop to the end
            pos = len(src)
            break
        pos = j + len(end)
    out.append(src[pos:])
    return "".join(out)


def _braced(src: str, start: int) -> tuple[str, int]:
    """The balanced {...} group opening at src[start-1]; returns (content, index after it)."""
    depth, i = 1, start
    while i < len(src) and depth:
        c = src[i]
        if c == "\\":
            i += 2
            continue
        depth += (c == "{") - (c == "}")
        i += 1
    return src[start : i - 1], i


def inline_inputs(src: str, files: Mapping[str, str], depth: int = 0) -> str:
    """Replace \\input{x}/\\include{x} by the text of x(.tex) from `files`."""
    if depth > 5:
        return src

    def sub(m: re.Match) -> str:
        name = m.group(1).strip()
        for cand in (name, name + ".tex", name.lstrip("./"), name.lstrip("./") + ".tex"):
            if cand in files:
                return inline_inputs(strip_comments(files[cand]), files, depth + 1)
        return ""

    return _INPUT_RE.sub(sub, src)


def main_file(files: Mapping[str, str]) -> str | None:
    """The name of the .tex file with \\documentclass (the largest one if several)."""
    mains = [n for n, t in files.items() if n.endswith(".tex") and "\\documentclass" in t]
    if not mains:
        mains = [n for n in files if n.endswith(".tex")]
    return max(mains, key=lambda n: len(files[n])) if mains else None


def latex_to_text(src: str, files: Mapping[str, str] | None = None) -> str:
    """Readable text from LaTeX source; `files` are the other files of its archive."""
    src = strip_comments(src)
    title = ""
    if m := re.search(r"\\title\s*(?:\[[^\]]*\])?\s*\{", src):
        title, _ = _braced(src, m.end())
    if (b := src.find("\\begin{document}")) >= 0:
        src = src[b + len("\\begin{document}") :]
    if (e := src.find("\\end{document}")) >= 0:
        src = src[:e]
    if files:
        src = inline_inputs(src, files)
    for env in _DROP_ENVS:
        src = _drop_environment(src, env)
    src = re.sub(r"\\title\s*(?:\[[^\]]*\])?\s*\{(?:[^{}]|\{[^{}]*\})*\}", "", src)
    src = src.replace("\\begin{abstract}", "\n\n## Abstract\n\n").replace("\\end{abstract}", "\n\n")
    src = _DROP_CMDS_RE.sub("", src)
    src = _BARE_CMDS_RE.sub("", src)
    src = _section_headings(src)
    src = _FOOTNOTE_RE.sub(r" (\1)", src)
    src = _URL_RE.sub(lambda m: m.group(2) or m.group(1), src)
    for _ in range(3):  # nested \emph{\textbf{...}}
        src = _STYLE_RE.sub(r"\1", src)
    src = _REF_RE.sub("", src)
    src = _ITEM_RE.sub("\n- ", src)
    src = _LIST_ENV_RE.sub("\n", src)
    src = src.replace("~", " ").replace("\\\\\n", "\n")
    src = re.sub(r"[ \t]+\n", "\n", src)
    src = re.sub(r"\n{3,}", "\n\n", src).strip()
    title = " ".join(_STYLE_RE.sub(r"\1", title).split())
    return (f"# {title}\n\n" if title else "") + src


def _section_headings(src: str) -> str:
    out, pos = [], 0
    for m in _SECTION_RE.finditer(src):
        if m.start() < pos:
            continue
        heading, after = _braced(src, m.end())
        out.append(src[pos : m.start()])
        out.append(f"\n\n{_LEVEL[m.group(1)]} {' '.join(heading.split())}\n\n")
        pos = after
    out.append(src[pos:])
    return "".join(out)
