"""Fact sets: one table of facts, several renderings of the same facts, and a recall suite.

A table lists (subject, relation, object) triples. Each fact has one sentence and
several question wordings. Some wordings are held out of training (chosen with the
seed) and asked only by the recall suite, so recall can be measured on wordings the
model never saw as well as on the ones it was trained on. From the table:

- `statements.jsonl`  `{"text"}`: each fact as a plain sentence;
- `qa.jsonl`          `{"text"}`: "Question: ...\\nAnswer: ..." pairs, one per trained wording;
- `dialogue.jsonl`    `{"text"}`: conversations between two people, one per subject, in
                      which every fact is mentioned exactly once;
- `chat.jsonl`        `{"messages"}`: question -> sentence, one per trained wording;
- `recall.yaml`       a prompt suite for `cosmosage eval`:
                      `prompts: [{id, prompt, expect, kind, fact, wording}]`, `wording`
                      being `trained` or `held_out`;
- `recall_conversation.yaml`  the held-out wordings asked inside a conversation: a
                      system message and an earlier exchange about the subject come
                      first (`wording: conversation`), as an assistant is asked in use.

YAML table:

    relations:
      temperature:
        statement: "The {subject} has a present-day temperature of {object}."
        questions:
          - "What is the present-day temperature of the {subject}?"
          - "How warm is the {subject} today?"
          - "To what temperature has the {subject} cooled by now?"
    facts:
      - {subject: cosmic microwave background, relation: temperature, object: 2.725 K}

CSV table: columns subject, relation, object, and optionally pattern (the sentence),
question (wordings separated by `|`), expect (substrings separated by `|`) and id.

Without a sentence pattern the relation is read as it stands (see `relation_patterns`):
a name such as `temperature` gives "The temperature of SUBJECT is OBJECT.", a verb
phrase such as `was awarded to` gives "SUBJECT was awarded to OBJECT.".
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterator
from pathlib import Path

from cosmosage.dataprep.chat.fact_forms import (
    HELD_OUT,
    TRAINED,
    Fact,
    conversation_suite,
    recall_suite,
    render_chat,
    render_dialogue,
    render_qa,
    render_statement,
)
from cosmosage.dataprep.chat.fact_relations import derived_questions, relation_patterns
from cosmosage.dataprep.io import (
    Manifest,
    check_outputs,
    read_csv,
    read_yaml,
    rejects_path,
    write_jsonl,
    write_rejects,
    write_yaml,
)
from cosmosage.dataprep.records import DataError, Reject, entry_lines, reason_group, record_strings
from cosmosage.dataprep.steps import write_failed_rejects

_REQUIRED = ("subject", "relation", "object")
_STATEMENT_FIELDS = {"subject", "relation", "object"}
_QUESTION_FIELDS = {"subject", "relation", "blank"}
_RELATION_KEYS = {"statement", "question", "questions", "expect"}
_FACT_KEYS = {*_REQUIRED, "pattern", "statement", "question", "questions", "expect", "id"}
BLANK = "___"

# ----------------------------------------------------------------------------- one fact


def _placeholders(pattern: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
    except ValueError as exc:
        raise ValueError(
            f"pattern {pattern!r}: {exc} (write a literal brace as {{{{ or }}}})"
        ) from exc


def _fill(pattern: str, values: dict, allowed: set[str], what: str) -> str:
    unknown = _placeholders(pattern) - allowed
    if unknown:
        shown = ", ".join("{" + n + "}" for n in sorted(unknown))
        raise ValueError(
            f"{what} pattern {pattern!r}: unknown placeholder(s) {shown}; use "
            + ", ".join("{" + n + "}" for n in sorted(allowed))
        )
    text = pattern.format(**{k: values[k] for k in allowed})
    return text[:1].upper() + text[1:]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48]


def _text_list(value, what: str) -> list[str]:
    """A string (`|`-separated alternatives), or a list of strings -> list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split("|") if v.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, list) and all(
        isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value
    ):
        return [str(v).strip() for v in value if str(v).strip()]
    raise ValueError(f"{what}: expected text or a list of texts")


def _pattern(value, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected text")
    return value


def choose_held_out(patterns: list[str], n: int, key: str, seed: int) -> set[int]:
    """Indexes of the `n` wordings to hold out (always leaving one to train on), chosen by
    a generator seeded with the seed, the relation and the wordings: the same table and
    seed give the same choice, and all facts sharing a relation's wordings share it."""
    n = max(0, min(n, len(patterns) - 1))
    rng = random.Random("\x00".join([str(seed), key, *patterns]))
    return set(rng.sample(range(len(patterns)), n))


def question_patterns(
    row: dict, rel: dict, name: str, index: int, statement_pat: str, direct: list[str]
) -> tuple[list[str], str]:
    """The fact's question patterns (its own, else its relation's, topped up to two from
    the sentence pattern) and the key that seeds which of them is held out."""
    given = _text_list(row.get("questions"), "field 'questions'") + _text_list(
        row.get("question"), "field 'question'"
    )
    key = f"fact {index}"
    if not given:
        given = _text_list(rel.get("questions"), f"relation {name!r}: questions") + _text_list(
            rel.get("question"), f"relation {name!r}: question"
        )
        key = f"relation {name}"
    for q in given:
        if "object" in _placeholders(q):
            raise ValueError(f"question pattern {q!r} gives the answer away ({{object}})")
    patterns: list[str] = []
    for p in given + (
        derived_questions(statement_pat, direct, len(given)) if len(given) < 2 else []
    ):
        if p not in patterns:
            patterns.append(p)
    return patterns, key


def make_fact(
    row: dict,
    relations: dict,
    line: int | None,
    index: int,
    seed: int = 0,
    held_out: int = 1,
    declared: bool = False,
) -> Fact:
    """One table row -> Fact; ValueError names what is missing or wrong.

    `declared`: the table lists its relations, so a relation missing from `relations`
    (without a pattern on the fact) is an error rather than a verb phrase."""
    for key in _REQUIRED:
        value = row.get(key)
        if isinstance(value, (dict, list, bool)):
            raise ValueError(f"field {key!r}: expected text")
        if value is None or not str(value).strip():
            raise ValueError(f"field {key!r}: missing or empty")
    values = {k: str(row[k]).strip() for k in _REQUIRED}
    name = values["relation"]
    values["relation"] = name.replace("_", " ")
    rel = relations.get(name)
    if rel is None:
        rel = {}
        if declared and not (row.get("pattern") or row.get("statement")):
            raise ValueError(
                f"relation {name!r}: not under `relations:` and the fact has no `pattern`, "
                "so there is no sentence pattern"
            )
    default_statement, direct = relation_patterns(name)
    statement_pat = (
        _pattern(row.get("pattern"), "field 'pattern'")
        or _pattern(row.get("statement"), "field 'statement'")
        or _pattern(rel.get("statement"), f"relation {name!r}: statement")
        or default_statement
    )
    if "{object}" not in statement_pat:
        raise ValueError(
            f"sentence pattern {statement_pat!r} does not mention {{object}}, so the fact would not be stated"
        )
    patterns, key = question_patterns(row, rel, name, index, statement_pat, direct)
    statement = _fill(statement_pat, values, _STATEMENT_FIELDS, "sentence")
    blank = _fill(statement_pat, {**values, "object": BLANK}, _STATEMENT_FIELDS, "sentence")
    hold = choose_held_out(patterns, held_out, key, seed)
    trained_q: list[str] = []
    held_q: list[str] = []
    seen: set[str] = set()
    for i, p in enumerate(patterns):
        text = _fill(p, {**values, "blank": blank}, _QUESTION_FIELDS, "question")
        if text.lower() in seen:
            continue
        seen.add(text.lower())
        (held_q if i in hold else trained_q).append(text)
    if not trained_q:  # two wordings read the same once filled in: train on one
        trained_q.append(held_q.pop(0))
    expect = _text_list(row.get("expect"), "field 'expect'") or _text_list(
        rel.get("expect"), f"relation {name!r}: expect"
    )
    fid = str(row.get("id") or f"fact-{index + 1:03d}-{_slug(values['subject'])}-{_slug(name)}")
    return Fact(
        fid,
        values["subject"],
        name,
        values["object"],
        statement,
        trained_q,
        held_q,
        expect or [values["object"]],
        line,
    )


# ----------------------------------------------------------------------------- tables


def _yaml_table(path: Path) -> tuple[dict, bool, Iterator]:
    """A YAML table's relations, whether it lists them, and its (line, row) facts."""
    data = read_yaml(path, lines=True)
    if data is None:
        raise DataError(f"{path}: empty file; a table has `facts:` and optional `relations:`")
    unknown = (
        sorted(set(data) - {"facts", "relations", "__line__"}) if isinstance(data, dict) else []
    )
    if unknown:  # a misspelt `relations:` would drop every pattern without a word
        raise DataError(
            f"{path}: unknown top-level key(s) {unknown}; a table has `facts:` and "
            "optional `relations:`"
        )
    if not isinstance(data, dict) or not isinstance(data.get("facts"), list):
        raise DataError(
            f"{path}: expected a mapping with a `facts:` list (and optional `relations:`)"
        )
    relations, declared = _read_relations(path, data)
    rows = zip(entry_lines(data["facts"], path, "facts"), data["facts"], strict=True)
    return relations, declared, rows


def _read_relations(path: Path, data: dict) -> tuple[dict, bool]:
    relations = data.get("relations")
    if relations is None:
        return {}, False
    if not isinstance(relations, dict):
        raise DataError(f"{path}: `relations:` must map a relation name to its patterns")
    relations = dict(relations)
    relations.pop("__line__", None)
    out = {}
    for name, entry in relations.items():
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise DataError(
                f"{path}: relations.{name}: expected a mapping (statement, questions, expect)"
            )
        entry = dict(entry)
        line = entry.pop("__line__", None)
        unknown = set(entry) - _RELATION_KEYS
        if unknown:
            at = f"{path}:{line}" if line else str(path)
            raise DataError(
                f"{at}: relations.{name}: unknown key(s) {sorted(unknown)}; "
                f"allowed: {sorted(_RELATION_KEYS)}"
            )
        out[str(name)] = entry
    return out, True


def read_facts(path: str | Path, seed: int = 0, held_out: int = 1) -> Iterator[Fact | Reject]:
    """Facts from a YAML or CSV table; bad rows become Rejects naming file and line.

    `held_out` wordings per fact (chosen with `seed`) are kept out of training."""
    path = Path(path)
    csv_table = path.suffix.lower() in (".csv", ".tsv")
    if csv_table:
        relations: dict = {}
        declared = False
        rows = read_csv(path)
    else:
        relations, declared, rows = _yaml_table(path)
    seen: set[tuple[str, str, str]] = set()
    stated: dict[tuple[str, str], tuple[int | None, str, str]] = {}
    ids: set[str] = set()
    header_checked = False
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
        row = {k: v for k, v in row.items() if k != "__line__"}
        if csv_table and not header_checked:
            header_checked = True
            missing = [c for c in _REQUIRED if c not in row]
            if missing:
                raise DataError(
                    f"{path}: the header has no column(s) {', '.join(missing)} "
                    f"(it has: {', '.join(row) or 'nothing'})"
                )
        if not csv_table:
            unknown = sorted(str(k) for k in set(row) - _FACT_KEYS)
            if unknown:
                yield Reject(
                    str(path), line, f"unknown key(s) {unknown}; allowed: {sorted(_FACT_KEYS)}", row
                )
                continue
        try:
            fact = make_fact(row, relations, line, i, seed, held_out, declared)
        except (ValueError, KeyError, IndexError) as exc:
            yield Reject(str(path), line, str(exc), row)
            continue
        key = (fact.subject.lower(), fact.relation.lower(), fact.object.lower())
        if key in seen:
            yield Reject(str(path), line, "duplicate fact", row)
            continue
        first = stated.get(key[:2])
        if first is not None:
            # one subject and relation with two objects: the model would be taught both
            # and the recall suite would ask one question with two expectations
            at = f"line {first[0]}" if first[0] else "an earlier row"
            yield Reject(
                str(path),
                line,
                f"contradiction: {first[2]} {fact.relation.replace('_', ' ')} is "
                f"{first[1]!r} at {at}",
                row,
            )
            continue
        stated[key[:2]] = (line, fact.object, fact.subject)
        if fact.id in ids:
            yield Reject(str(path), line, f"duplicate id: {fact.id}", row)
            continue
        seen.add(key)
        ids.add(fact.id)
        yield fact


# the renderings build_facts writes into its folder, each as NAME.jsonl
FACT_OUTPUTS = ("statements", "qa", "dialogue", "chat")


def _make_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        existing = out_dir
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        raise DataError(
            f"--out-dir: cannot create the output folder inside {existing} ({exc.strerror or exc})"
        ) from exc


def _read_table(
    table: str | Path, seed: int, held_out: int, limit: int | None
) -> tuple[list[Fact], list[Reject], int]:
    """The table's usable facts (the first `limit`), its rejected rows, and how many
    usable facts were over the limit."""
    facts: list[Fact] = []
    rejects: list[Reject] = []
    over_limit = 0
    for item in read_facts(table, seed, held_out):
        if isinstance(item, Reject):
            rejects.append(item)
        elif limit is not None and len(facts) >= limit:
            over_limit += 1
        else:
            facts.append(item)
    return facts, rejects, over_limit


def _drop_trained_wordings(facts: list[Fact], outputs: dict[str, list]) -> int:
    """Leave out of each fact's held-out wordings those that occur in a training rendering
    (case aside); how many were left out."""
    trained_text = "\n".join(s.lower() for recs in outputs.values() for s in record_strings(recs))
    overlap = 0
    for f in facts:
        kept = [q for q in f.held_out if q.lower() not in trained_text]
        overlap += len(f.held_out) - len(kept)
        f.held_out = kept
    return overlap


def _dropped(rejects: list[Reject], over_limit: int) -> dict[str, int]:
    """What every rendering's manifest counts as dropped: rejects by reason, the limit."""
    dropped: dict[str, int] = {}
    for r in rejects:
        dropped[reason_group(r.reason)] = dropped.get(reason_group(r.reason), 0) + 1
    if over_limit:
        dropped["over limit"] = over_limit
    return dropped


def build_facts(
    table: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    speakers: tuple[str, str] = ("Alex", "Sam"),
    kind: str = "domain",
    held_out: int = 1,
    limit: int | None = None,
) -> dict:
    """Write the renderings, a chat set and a recall suite of a fact table into out_dir.

    `limit` keeps the first N usable facts (the manifests count the rest as `over limit`).
    The rejects file is written first, so an error about rejected rows can point at it.
    A held-out wording that occurs in any training rendering (case aside) is left out of
    the recall suite and counted under `held_out_overlap`."""
    out_dir = Path(out_dir)
    check_outputs([table], {"--out-dir": out_dir / "facts.jsonl"})
    written = [f"{n}.jsonl" for n in FACT_OUTPUTS] + ["recall.yaml", "recall_conversation.yaml"]
    written += [f"{n}.manifest.json" for n in FACT_OUTPUTS]
    if Path(table).resolve() in {(out_dir / n).resolve() for n in written}:
        raise DataError(f"--out-dir {out_dir}: would overwrite the input {table}")
    facts, rejects, over_limit = _read_table(table, seed, held_out, limit)
    _make_out_dir(out_dir)
    if not facts:  # an earlier run's outputs, manifests and rejects stay as they were
        if rejects:
            failed = write_failed_rejects(out_dir / "facts.jsonl", rejects)
            raise DataError(f"{table}: no usable facts: all {len(rejects)} rejected; see {failed}")
        raise DataError(f"{table}: the table lists no facts")
    write_rejects(out_dir / "facts.jsonl", rejects)
    rng = random.Random(seed)
    by_subject: dict[str, list[Fact]] = {}
    for f in facts:
        by_subject.setdefault(f.subject, []).append(f)
    outputs = {
        "statements": [render_statement(f) for f in facts],
        "qa": [r for f in facts for r in render_qa(f)],
        "dialogue": [render_dialogue(s, fs, speakers, rng) for s, fs in by_subject.items()],
        "chat": [r for f in facts for r in render_chat(f)],
    }
    overlap = _drop_trained_wordings(facts, outputs)
    dropped = _dropped(rejects, over_limit)
    n_trained = sum(len(f.questions) for f in facts)
    n_held = sum(len(f.held_out) for f in facts)
    result = {
        "facts": len(facts),
        "rejected": len(rejects),
        "over_limit": over_limit,
        "wordings": {TRAINED: n_trained, HELD_OUT: n_held},
        "held_out_overlap": overlap,
        "outputs": {},
    }
    for name, records in outputs.items():
        path = out_dir / f"{name}.jsonl"
        m = Manifest(
            str(path),
            extra={
                "rendering": name,
                "facts": len(facts),
                "seed": seed,
                "held_out": held_out,
                "limit": limit,
            },
        )
        m.add_input(table)
        m.dropped.update(dropped)
        m.kept = write_jsonl(path, records)
        m.write()
        result["outputs"][name] = str(path)
    suite = out_dir / "recall.yaml"
    write_yaml(suite, recall_suite(facts, kind))
    result["outputs"]["recall"] = str(suite)
    if n_held:
        conv = out_dir / "recall_conversation.yaml"
        write_yaml(conv, conversation_suite(facts, kind))
        result["outputs"]["recall_conversation"] = str(conv)
    result["outputs"]["rejects"] = str(rejects_path(out_dir / "facts.jsonl"))
    return result
