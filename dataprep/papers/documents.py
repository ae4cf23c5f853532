"""Papers as titled sections of paragraphs of sentences: what the paper-routes read.

A paper is a Markdown (or plain text) file: `# Title` on its first heading line,
`## Section` headings, paragraphs separated by blank lines. Sentences are split at
`.`, `!` or `?` followed by a space and a capital letter, a digit or an opening bracket,
except after a few common abbreviations; a decimal point is never a sentence end. The
splitter is deliberately simple and deterministic: every route (augmentation, cloze,
closed-book questions) cuts a paper the same way, so a sentence named in one is found
in the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cosmosage.dataprep.io import read_bytes
from cosmosage.dataprep.records import DataError, NotText, Reject, decode_text

SUFFIXES = (".md", ".markdown", ".txt")
_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "Dr.", "Fig.", "Eq.", "approx.", "cf.", "vs.")
_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")


def split_sentences(text: str) -> list[str]:
    """Sentences of one paragraph, whitespace inside each folded to single spaces."""
    text = " ".join(text.split())
    if not text:
        return []
    parts = _END.split(text)
    out: list[str] = []
    for part in parts:
        if out and out[-1].endswith(_ABBREVIATIONS):
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return out


@dataclass
class Paragraph:
    section: str
    sentences: list[str]
    line: int
    originals: list[str] | None = None
    """The sentences as the paper wrote them, where `name_subjects` rewrote them."""


@dataclass
class Paper:
    name: str
    """The file name (what questions and records refer to)."""
    path: str
    title: str
    paragraphs: list[Paragraph] = field(default_factory=list)

    @property
    def sentences(self) -> list[str]:
        return [s for p in self.paragraphs for s in p.sentences]

    def text(self, order=None) -> str:
        """The paper as one completion text: title, section headings, paragraphs; `order`
        (a function of a paragraph's sentences) may rearrange each paragraph."""
        lines = [f"# {self.title}"]
        section = None
        for p in self.paragraphs:
            if p.section != section and p.section:
                lines.append(f"## {p.section}")
            section = p.section
            lines.append(" ".join(order(list(p.sentences)) if order else p.sentences))
        return "\n\n".join(lines)


def parse_paper(text: str, name: str, path: str = "") -> Paper:
    """Markdown text -> Paper. The title is the first `#` heading (else the file name)."""
    title = None
    section = ""
    paragraphs: list[Paragraph] = []
    buf: list[str] = []
    start = 0

    def flush() -> None:
        if buf:
            sentences = split_sentences(" ".join(buf))
            if sentences:
                paragraphs.append(Paragraph(section, sentences, start))
            buf.clear()

    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        heading = re.match(r"^(#+)\s+(.*)$", line)
        if heading:
            flush()
            if len(heading.group(1)) == 1 and title is None:
                title = heading.group(2).strip()
            else:
                section = heading.group(2).strip()
        elif not line:
            flush()
        else:
            if not buf:
                start = n
            buf.append(line)
    flush()
    return Paper(name, path, title or Path(name).stem.replace("_", " "), paragraphs)


# ------------------------------------------------------------ naming the subject


def subjects(paper: Paper) -> list[str]:
    """The named things a paper is about: names of two or more words in its title that
    also occur in its body (`the Halvard Radio Array`), longest first."""
    from cosmosage.dataprep.papers.cloze import find_spans

    body = " ".join(paper.sentences)
    names = {s.text for s in find_spans(paper.title) if " " in s.text and s.text in body}
    return sorted(names, key=lambda n: (-len(n), n))


def name_subjects(sentence: str, names: list[str]) -> str:
    """A sentence with short references to the paper's subject written out: "the array"
    -> "the Halvard Radio Array" (the name's last word, after "the"), and a sentence that
    starts with "It"/"Its" -> the first name. A sentence that already names it is left
    alone. Allen-Zhu and Li found that knowledge is far easier to extract when every
    sentence about a person carries the full name rather than a pronoun."""
    if not names or any(n in sentence for n in names):
        return sentence
    for name in names:
        head = name.split()[-1]
        pattern = re.compile(rf"\b([Tt])he {re.escape(head.lower())}\b")
        if pattern.search(sentence):
            return pattern.sub(lambda m, n=name: f"{m.group(1)}he {n}", sentence, count=1)
    first = names[0]
    if re.match(r"^Its\b", sentence):
        return f"The {first}'s" + sentence[3:]
    if re.match(r"^It\b", sentence):
        return f"The {first}" + sentence[2:]
    return sentence


def with_named_subjects(paper: Paper) -> Paper:
    """The paper with `name_subjects` applied to every sentence (originals kept)."""
    names = subjects(paper)
    paragraphs = [
        Paragraph(
            p.section, [name_subjects(s, names) for s in p.sentences], p.line, list(p.sentences)
        )
        for p in paper.paragraphs
    ]
    return Paper(paper.name, paper.path, paper.title, paragraphs)


def paper_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Files given, and the papers in folders given (sorted), in order, each once."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def read_papers(inputs: Iterable[str | Path]) -> Iterator[Paper | Reject]:
    """Papers of the inputs; an empty, sentence-less, binary or mostly-not-UTF-8 file is a
    Reject with the reason (the corpus's rule: `decode_text`)."""
    for path in paper_files(inputs):
        try:
            text = decode_text(read_bytes(path), str(path))
        except OSError as exc:
            yield Reject(str(path), None, f"unreadable file: {exc.strerror or exc}")
            continue
        except NotText as exc:
            yield Reject(str(path), exc.line, exc.reason)
            continue
        paper = parse_paper(text, path.name, str(path))
        if not paper.paragraphs:
            yield Reject(str(path), None, "empty paper: no sentences")
            continue
        yield paper


def load_papers(inputs: Iterable[str | Path]) -> tuple[list[Paper], list[Reject]]:
    papers, rejects = [], []
    for item in read_papers(inputs):
        (rejects if isinstance(item, Reject) else papers).append(item)
    names = [p.name for p in papers]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(
            f"two papers share the file name {dupes[0]}; records name papers by file name, "
            "so give each a distinct name"
        )
    return papers, rejects
