"""Paper metadata -> question/answer chat records that teach identifiers, titles and authors.

No model is involved: templates from a YAML file (bundled: prompts/metaqa.yaml) are
filled from each paper's arXiv id, title, authors and, where the abstract says "we
introduce / present / propose / describe X", that X. One phrasing per kind is picked
per paper from a hash of its id and the seed, so reruns give the same records.

Inputs: metadata JSONL (the arXiv bulk snapshot, whose `authors` is a string, or API
entries, whose `authors` is a list) and paper files in markdown with `# Title`,
`arXiv:` and `Authors:` header lines (as in samples/papers).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from cosmosage.dataprep.corpus.sources import read_file_documents
from cosmosage.dataprep.io import Manifest, check_outputs, read_jsonl, write_jsonl, write_rejects
from cosmosage.dataprep.records import DataError, Reject
from cosmosage.dataprep.steps import refuse_nothing_kept
from cosmosage.dataprep.synth.prompts import fill, load_yaml, placeholders

_ID_RE = re.compile(r"^(?:\d{4}\.\d{4,5}|[a-z\-]+(?:\.[A-Z]{2})?/\d{7})$")
_TOPIC_RE = re.compile(
    r"\b[Ww]e (?:introduce|present|propose|describe|develop)\s+"
    r"((?:a|an|the)\s+(?:new\s+|novel\s+)?[^.;:,]+?)"
    r"(?=[.;:,]|\s+(?:and|that|which|to|for|using|with|in order)\s)"
)
_DOC_TITLE_RE = re.compile(r"^#\s+(.+)$", re.MULTILINE)
_DOC_ABSTRACT_RE = re.compile(
    r"^#+\s*Abstract\s*$\n+(.+?)(?:\n#|\Z)", re.MULTILINE | re.DOTALL | re.IGNORECASE
)


def clean_id(value: str) -> str:
    """'arXiv:2401.00001v2' or 'https://arxiv.org/abs/2401.00001' -> '2401.00001'."""
    v = str(value).strip()
    v = re.sub(r"^(?:https?://arxiv\.org/(?:abs|pdf)/|arxiv:)", "", v, flags=re.IGNORECASE)
    return re.sub(r"v\d+$", "", v.removesuffix(".pdf"))


def format_authors(authors) -> str:
    """A list or a comma/'and' separated string -> 'A', 'A and B', or 'A, B, C et al.'."""
    if isinstance(authors, str):
        names = [a.strip() for a in re.split(r",|\band\b", " ".join(authors.split())) if a.strip()]
    elif isinstance(authors, list):
        names = [" ".join(str(a).split()) for a in authors if str(a).strip()]
    else:
        names = []
    if not names:
        return ""
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    if len(names) == 3:
        return f"{names[0]}, {names[1]} and {names[2]}"
    return f"{names[0]}, {names[1]}, {names[2]} et al."


def find_topic(abstract: str) -> str | None:
    """What the abstract says the paper introduces, if it says so plainly (3-14 words)."""
    m = _TOPIC_RE.search(" ".join(abstract.split()))
    if not m:
        return None
    topic = m.group(1).strip()
    return topic if 3 <= len(topic.split()) <= 14 else None


def paper_fields(rec: dict) -> dict:
    """Template values from one metadata record; missing ones are left out."""
    out = {}
    if rec.get("id"):
        out["id"] = clean_id(rec["id"])
    title = " ".join(str(rec.get("title") or "").split())
    if title:
        out["title"] = title.rstrip(".")
    authors = format_authors(rec.get("authors"))
    if authors:
        out["authors"] = authors
    topic = find_topic(str(rec.get("abstract") or ""))
    if topic:
        out["topic"] = topic
        out["Topic"] = topic[0].upper() + topic[1:]
    return out


def read_papers(inputs: Iterable[str | Path]) -> Iterator[tuple[str, int | None, dict] | Reject]:
    """(source, line, metadata) for each paper in metadata files (JSON lines: `.jsonl`,
    or `.json` as the arXiv snapshot is named) and markdown papers."""
    docs = []
    for item in inputs:
        p = Path(item)
        if p.is_file() and p.suffix.lower() in (".jsonl", ".json"):
            for lineno, rec in read_jsonl(p):
                yield rec if isinstance(rec, Reject) else (str(p), lineno, rec)
        else:
            docs.append(p)
    if docs:
        for doc in read_file_documents(docs):
            if isinstance(doc, Reject):
                yield doc
                continue
            t = _DOC_TITLE_RE.search(doc.text)
            a = doc.meta.get("authors")
            ab = _DOC_ABSTRACT_RE.search(doc.text)
            rec = {
                "id": doc.meta.get("arxiv_id"),
                "title": t.group(1) if t else None,
                "authors": a,
                "abstract": ab.group(1) if ab else "",
            }
            yield doc.source, None, rec


def load_templates(path: str | Path = "metaqa") -> tuple[Path, str, str, dict[str, list[dict]]]:
    path, data = load_yaml(path)
    templates = data.get("templates")
    if not isinstance(templates, dict) or not templates:
        raise DataError(f"{path}: needs 'templates': kind -> list of {{question, answer}}")
    for kind, variants in templates.items():
        if not isinstance(variants, list) or not variants:
            raise DataError(f"{path}: templates.{kind} must be a non-empty list")
        for i, v in enumerate(variants):
            if (
                not isinstance(v, dict)
                or not isinstance(v.get("question"), str)
                or not isinstance(v.get("answer"), str)
            ):
                raise DataError(
                    f"{path}: templates.{kind}[{i}] needs 'question' and 'answer' strings"
                )
    return path, str(data["name"]), str(data["version"]), templates


def pick(variants: list[dict], key: str, seed: int) -> tuple[int, dict]:
    i = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16) % len(variants)
    return i, variants[i]


def metaqa_records(
    fields: dict, templates: dict[str, list[dict]], name: str, version: str, seed: int = 0
) -> list[dict]:
    """One chat record per template kind that this paper's fields can fill."""
    out = []
    for kind, variants in templates.items():
        i, t = pick(variants, f"{fields['id']}:{kind}", seed)
        if not placeholders(t["question"]) | placeholders(t["answer"]) <= set(fields):
            continue
        out.append(
            {
                "messages": [
                    {"role": "user", "content": fill(t["question"], fields)},
                    {
                        "role": "assistant",
                        "content": fill(t["answer"], fields).replace("et al..", "et al."),
                    },
                ],
                "id": f"arxiv:{fields['id']}:{kind}",
                "source": {"arxiv_id": fields["id"]},
                "generator": {
                    "kind": "metaqa",
                    "templates": name,
                    "version": version,
                    "template": f"{kind}[{i}]",
                },
            }
        )
    return out


def build_metaqa(
    inputs: list[str], out: str | Path, templates: str = "metaqa", seed: int = 0
) -> dict:
    """Metadata and papers -> chat JSONL (+ rejects and manifest)."""
    check_outputs(inputs, {"--out": out})
    path, name, version, tmpl = load_templates(templates)
    manifest = Manifest(
        str(out),
        extra={
            "step": "metaqa",
            "templates": {"name": name, "version": version, "path": str(path)},
            "seed": seed,
        },
    )
    records, rejects = [], []
    seen: set[str] = set()
    kinds = Counter()
    for item in read_papers(inputs):
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        source, line, rec = item
        fields = paper_fields(rec)
        if "id" not in fields or not _ID_RE.match(fields["id"]):
            rejects.append(Reject(source, line, f"no arXiv id: {str(rec.get('id'))[:40]!r}", rec))
            continue
        if "title" not in fields:
            rejects.append(Reject(source, line, f"no title: arXiv:{fields['id']}", rec))
            continue
        if fields["id"] in seen:
            rejects.append(
                Reject(source, line, f"duplicate paper: arXiv:{fields['id']} seen before")
            )
            continue
        seen.add(fields["id"])
        for r in metaqa_records(fields, tmpl, name, version, seed):
            kinds[r["id"].rsplit(":", 1)[1]] += 1
            records.append(r)
    for p in inputs:
        if Path(p).is_file():
            manifest.add_input(p)
    manifest.kept = write_jsonl(out, records, empty_ok=False)
    refuse_nothing_kept(out, manifest.kept, rejects)
    manifest.dropped.update(r.reason.split(":", 1)[0] for r in rejects)
    manifest.extra.update({"papers": len(seen), "by_kind": dict(kinds)})
    write_rejects(out, rejects)
    manifest.write()
    return {
        "output": str(out),
        "records": manifest.kept,
        "papers": len(seen),
        "rejects": len(rejects),
        "by_kind": dict(kinds),
    }
