"""Fact sets: one table of facts, several renderings of the same facts, and a recall suite.

A table lists (subject, relation, object) triples. Each relation has a sentence
pattern (`statement`) and a question pattern; a fact may carry its own. From the table:

- `statements.jsonl`  `{"text"}`: each fact as a plain sentence;
- `qa.jsonl`          `{"text"}`: "Question: ...\\nAnswer: ..." pairs;
- `dialogue.jsonl`    `{"text"}`: conversations between two people, one per subject, in
                      which every fact is mentioned exactly once;
- `chat.jsonl`        `{"messages"}`: question -> statement, for an instruct mix;
- `recall.yaml`       a prompt suite (`prompts: [{id, prompt, expect, kind}]`) for
                      `cosmosage model eval`.

YAML table:

    relations:
      temperature:
        statement: "The {subject} has a present-day temperature of {object}."
        question: "What is the present-day temperature of the {subject}?"
    facts:
      - {subject: cosmic microwave background, relation: temperature, object: 2.725 K}

CSV table: columns subject, relation, object, pattern (statement), and optionally
question and expect (substrings separated by `|`).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cosmosage.dataprep.io import (
    DataError,
    Manifest,
    Reject,
    read_csv,
    read_yaml,
    reason_group,
    write_jsonl,
    write_rejects,
    write_yaml,
)


@dataclass
class Fact:
    id: str
    subject: str
    relation: str
    object: str
    statement: str
    question: str
    expect: list[str]
    line: int | None = None


_FIELDS = {"subject", "relation", "object"}


def _fill(pattern: str, row: dict, what: str) -> str:
    names = {name for _, name, _, _ in string.Formatter().parse(pattern) if name}
    unknown = names - _FIELDS
    if unknown:
        raise ValueError(
            f"{what} pattern {pattern!r}: unknown placeholder(s) {sorted(unknown)}; use {{subject}}, {{relation}}, {{object}}"
        )
    text = pattern.format(**{k: row[k] for k in _FIELDS})
    return text[:1].upper() + text[1:]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48]


def make_fact(row: dict, relations: dict, line: int | None, index: int) -> Fact:
    """One table row -> Fact; ValueError names what is missing or wrong."""
    for key in ("subject", "relation", "object"):
        if not str(row.get(key) or "").strip():
            raise ValueError(f"field {key!r}: missing or empty")
    row = {k: str(row[k]).strip() for k in _FIELDS} | {
        k: v for k, v in row.items() if k not in _FIELDS
    }
    rel = relations.get(row["relation"], {})
    statement_pat = row.get("pattern") or row.get("statement") or rel.get("statement")
    if not statement_pat:
        raise ValueError(
            f"relation {row['relation']!r}: no sentence pattern (give `statement` under relations, or `pattern` on the fact)"
        )
    if "{object}" not in statement_pat:
        raise ValueError(
            f"sentence pattern {statement_pat!r} does not mention {{object}}, so the fact would not be stated"
        )
    question_pat = (
        row.get("question") or rel.get("question") or "What is the {relation} of {subject}?"
    )
    if "{object}" in question_pat:
        raise ValueError(f"question pattern {question_pat!r} gives the answer away ({{object}})")
    statement = _fill(
        statement_pat, {**row, "relation": row["relation"].replace("_", " ")}, "sentence"
    )
    question = _fill(
        question_pat, {**row, "relation": row["relation"].replace("_", " ")}, "question"
    )
    expect = row.get("expect") or rel.get("expect") or [row["object"]]
    if isinstance(expect, str):
        expect = [e.strip() for e in expect.split("|") if e.strip()]
    fid = str(
        row.get("id") or f"fact-{index + 1:03d}-{_slug(row['subject'])}-{_slug(row['relation'])}"
    )
    return Fact(
        fid,
        row["subject"],
        row["relation"],
        row["object"],
        statement,
        question,
        [str(e) for e in expect],
        line,
    )


def read_facts(path: str | Path) -> Iterator[Fact | Reject]:
    """Facts from a YAML or CSV table; bad rows become Rejects naming file and line."""
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        relations: dict = {}
        rows = read_csv(path)
    else:
        data = read_yaml(path, lines=True)
        if not isinstance(data, dict) or not isinstance(data.get("facts"), list):
            raise DataError(
                f"{path}: expected a mapping with a `facts:` list (and optional `relations:`)"
            )
        relations = data.get("relations") or {}
        if not isinstance(relations, dict):
            raise DataError(f"{path}: `relations:` must map a relation name to its patterns")
        rows = (
            (r.pop("__line__", None) if isinstance(r, dict) else None, r) for r in data["facts"]
        )
    seen = set()
    for i, (line, row) in enumerate(rows):
        if isinstance(row, Reject):
            yield row
            continue
        if not isinstance(row, dict):
            yield Reject(
                str(path),
                line,
                f"facts[{i}]: expected a mapping with subject, relation, object",
                row,
            )
            continue
        row.pop("__line__", None)
        try:
            fact = make_fact(row, relations, line, i)
        except (ValueError, KeyError, IndexError) as exc:
            yield Reject(str(path), line, str(exc), row)
            continue
        key = (fact.subject.lower(), fact.relation.lower(), fact.object.lower())
        if key in seen:
            yield Reject(str(path), line, "duplicate fact", row)
            continue
        seen.add(key)
        yield fact


# --------------------------------------------------------------------------- renderings


def render_statement(fact: Fact) -> dict:
    return {"text": fact.statement, "fact": fact.id}


def render_qa(fact: Fact) -> dict:
    return {"text": f"Question: {fact.question}\nAnswer: {fact.statement}", "fact": fact.id}


def render_chat(fact: Fact) -> dict:
    return {
        "messages": [
            {"role": "user", "content": fact.question},
            {"role": "assistant", "content": fact.statement},
        ],
        "fact": fact.id,
    }


OPENERS = [
    "I have been reading about {subject}. Can I check a few things with you?",
    "Do you have a minute? I have some questions about {subject}.",
    "Let's go over what we know about {subject}.",
]
ASKS = ["{question}", "Another one: {question}", "And {question_lc}", "Next, {question_lc}"]
REPLIES = ["Sure, go ahead.", "Happy to.", "Of course."]
CLOSERS = ["Thanks, that clears it up.", "Great, that is what I needed.", "Thanks, that helps."]


def render_dialogue(
    subject: str, facts: list[Fact], speakers: tuple[str, str], rng: random.Random
) -> dict:
    """A conversation about one subject in which each of its facts is stated once.

    The first speaker asks, the second answers with the fact's sentence.
    """
    a, b = speakers
    lines = [f"{a}: {rng.choice(OPENERS).format(subject=subject)}", f"{b}: {rng.choice(REPLIES)}"]
    for i, fact in enumerate(facts):
        asker, answerer = a, b
        q = fact.question
        ask = ASKS[0] if i == 0 else rng.choice(ASKS)
        lines.append(f"{asker}: {ask.format(question=q, question_lc=q[:1].lower() + q[1:])}")
        lines.append(f"{answerer}: {fact.statement}")
    lines.append(f"{a}: {rng.choice(CLOSERS)}")
    return {"text": "\n".join(lines), "facts": [f.id for f in facts], "subject": subject}


def recall_suite(facts: list[Fact], kind: str = "domain") -> dict:
    return {
        "prompts": [
            {"id": f.id, "prompt": f.question, "expect": f.expect, "kind": kind} for f in facts
        ],
    }


def build_facts(
    table: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    speakers: tuple[str, str] = ("Alex", "Sam"),
    kind: str = "domain",
) -> dict:
    """Write the renderings, a chat set and a recall suite of a fact table into out_dir."""
    out_dir = Path(out_dir)
    facts, rejects = [], []
    for item in read_facts(table):
        (rejects if isinstance(item, Reject) else facts).append(item)
    if not facts:
        raise DataError(
            f"{table}: no usable facts ({len(rejects)} rejected; see {out_dir / 'facts.rejects.jsonl'})"
        )
    rng = random.Random(seed)
    by_subject: dict[str, list[Fact]] = {}
    for f in facts:
        by_subject.setdefault(f.subject, []).append(f)
    dialogues = [render_dialogue(s, fs, speakers, rng) for s, fs in by_subject.items()]
    outputs = {
        "statements": [render_statement(f) for f in facts],
        "qa": [render_qa(f) for f in facts],
        "dialogue": dialogues,
        "chat": [render_chat(f) for f in facts],
    }
    dropped = {}
    for r in rejects:
        dropped[reason_group(r.reason)] = dropped.get(reason_group(r.reason), 0) + 1
    result = {"facts": len(facts), "rejected": len(rejects), "outputs": {}}
    for name, records in outputs.items():
        path = out_dir / f"{name}.jsonl"
        m = Manifest(str(path), extra={"rendering": name, "facts": len(facts)})
        m.add_input(table)
        m.dropped.update(dropped)
        m.kept = write_jsonl(path, records)
        m.write()
        result["outputs"][name] = str(path)
    write_rejects(out_dir / "facts.jsonl", rejects)
    suite = out_dir / "recall.yaml"
    write_yaml(suite, recall_suite(facts, kind))
    result["outputs"]["recall"] = str(suite)
    return result
