"""Closed-book questions about papers: what a model must answer without the paper.

A question file lists facts stated in the papers, each with the sentence that states
it, the answer span, hand-written question wordings asked only at evaluation (`ask`),
and whether a hand-written Q&A pair about it may be trained (`split: qa`, with `train`
wordings and a `reply`) or the fact is only ever in the papers (`split: paper_only`):

    facts:
      - id: halvard-first-light
        document: halvard_radio_array.md
        sentence: "The array recorded its first fringes in 2033, ..."
        answer: "2033"
        expect: ["2033"]            # substrings a right answer contains [default: answer]
        split: qa                   # qa | paper_only
        train: ["When did the Halvard Radio Array begin observing?"]
        reply: "The Halvard Radio Array began observing in 2033."
        ask: ["Since which year has the Halvard Radio Array been taking data?"]

From it `build_closed_book` writes the evaluation suite (every `ask` wording, with its
fact, document, sentence and group `qa_fact` / `paper_only`, so reports show recall per
group and per document) and the trainable Q&A (chat records of the `qa` facts' `train`
wordings). It checks that each sentence is in its paper and the answer in its sentence,
and decontaminates the suite against every training file given: a question whose text
occurs in a training record, or a held-out sentence that a training record was made
from as Q&A, is left out of the suite and written to the rejects file with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from cosmosage.dataprep.io import (
    Manifest,
    check_outputs,
    read_jsonl,
    read_yaml,
    rejects_path,
    write_jsonl,
    write_rejects,
    write_yaml,
)
from cosmosage.dataprep.papers.cloze import normalise
from cosmosage.dataprep.papers.documents import Paper
from cosmosage.dataprep.records import DataError, Reject, entry_lines, record_strings
from cosmosage.dataprep.steps import write_failed_rejects

SPLITS = {"qa": "qa_fact", "paper_only": "paper_only"}
FACT_KEYS = {"id", "document", "sentence", "answer", "expect", "split", "train", "reply", "ask"}


def _texts(value, where: str, required: bool = True) -> list[str]:
    if value is None and not required:
        return []
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.strip() for v in value)
    ):
        raise ValueError(f"{where}: expected a non-empty list of texts")
    return [v.strip() for v in value]


def check_fact(row: dict, papers: dict[str, Paper], index: int) -> dict:
    """One question-file entry, checked against the papers -> a clean fact dict."""
    unknown = sorted(set(row) - FACT_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; allowed: {sorted(FACT_KEYS)}")
    for key in ("id", "document", "sentence", "answer", "split"):
        if not isinstance(row.get(key), str | int | float) or not str(row[key]).strip():
            raise ValueError(f"field {key!r}: missing or not text")
    fact = {k: str(row[k]).strip() for k in ("id", "document", "sentence", "answer", "split")}
    if fact["split"] not in SPLITS:
        raise ValueError(f"field 'split': {fact['split']!r} is not one of {', '.join(SPLITS)}")
    paper = papers.get(fact["document"])
    if paper is None:
        raise ValueError(
            f"field 'document': {fact['document']!r} is not among the papers "
            f"({', '.join(sorted(papers)) or 'none'})"
        )
    if normalise(fact["sentence"]) not in {normalise(s) for s in paper.sentences}:
        raise ValueError(f"field 'sentence': not a sentence of {fact['document']} (as split)")
    if fact["answer"].lower() not in fact["sentence"].lower():
        raise ValueError("field 'answer': not in the sentence")
    fact["expect"] = _texts(row.get("expect", fact["answer"]), "field 'expect'")
    fact["ask"] = _texts(row.get("ask"), "field 'ask'")
    train = _texts(row.get("train"), "field 'train'", required=False)
    reply = row.get("reply")
    if fact["split"] == "paper_only" and (train or reply):
        raise ValueError("a paper_only fact has no `train` or `reply`: it is only in the papers")
    if fact["split"] == "qa":
        if not train or not isinstance(reply, str) or not reply.strip():
            raise ValueError("a qa fact needs `train` wordings and a `reply`")
        if not any(e.lower() in reply.lower() for e in fact["expect"]):
            raise ValueError("field 'reply': contains none of `expect`")
    asked = {normalise(q) for q in fact["ask"]}
    if asked & {normalise(q) for q in train}:
        raise ValueError("an `ask` wording is also a `train` wording: it would not be held out")
    for q in fact["ask"]:
        if any(e.lower() in q.lower() for e in fact["expect"]):
            raise ValueError(f"field 'ask': {q!r} gives the answer away")
    fact["train"], fact["reply"] = train, (reply or "").strip()
    return fact


def read_questions(path: str | Path, papers: list[Paper]) -> Iterator[dict | Reject]:
    data = read_yaml(path, lines=True)
    if not isinstance(data, dict) or not isinstance(data.get("facts"), list):
        raise DataError(f"{path}: expected a mapping with a `facts:` list")
    by_name = {p.name: p for p in papers}
    ids: set[str] = set()
    lines = entry_lines(data["facts"], path, "facts")
    for i, (line, row) in enumerate(zip(lines, data["facts"], strict=True)):
        if not isinstance(row, dict):
            yield Reject(str(path), line, f"facts[{i}]: expected a mapping", row)
            continue
        row = {k: v for k, v in row.items() if k != "__line__"}
        try:
            fact = check_fact(row, by_name, i)
        except ValueError as exc:
            yield Reject(str(path), line, f"facts[{i}]: {exc}", row)
            continue
        if fact["id"] in ids:
            yield Reject(str(path), line, f"facts[{i}]: duplicate id {fact['id']!r}", row)
            continue
        ids.add(fact["id"])
        fact["line"] = line
        yield fact


def qa_records(facts: list[dict]) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": f["reply"]},
            ],
            "fact": f["id"],
            "document": f["document"],
        }
        for f in facts
        if f["split"] == "qa"
        for q in f["train"]
    ]


def suite_prompts(facts: list[dict]) -> list[dict]:
    return [
        {
            "id": f"{f['id']}/ask-{i}",
            "prompt": q,
            "expect": list(f["expect"]),
            "kind": "domain",
            "fact": f["id"],
            "group": SPLITS[f["split"]],
            "document": f["document"],
            "sentence": f["sentence"],
        }
        for f in facts
        for i, q in enumerate(f["ask"], start=1)
    ]


# --------------------------------------------------------------------- decontamination


class TrainingText:
    """What training files contain, for leak checks: every string of every record
    (normalised), and the sentences records were made from as Q&A (a chat record's
    `sentence` field, as `data cloze` writes it)."""

    def __init__(self) -> None:
        self.chunks: list[tuple[str, str]] = []  # (where, normalised text)
        self.qa_sentences: dict[str, str] = {}

    def add_file(self, path: str | Path) -> None:
        for line, rec in read_jsonl(path):
            if isinstance(rec, Reject):  # it may hold a question: unchecked is not clean
                raise DataError(
                    f"--against {path}:{line}: {rec.reason}; a training line that cannot be "
                    "read cannot be checked for the suite's questions"
                )
            where = f"{path}:{line}"
            self.chunks.append((where, normalise(" ".join(record_strings(rec)))))
            for key in ("sentence", "paper_sentence"):
                if "messages" in rec and isinstance(rec.get(key), str):
                    self.qa_sentences.setdefault(normalise(rec[key]), where)

    def leak(self, prompt: dict) -> str | None:
        """Why a suite prompt is not held out of these files, or None."""
        asked = normalise(prompt["prompt"])
        for where, text in self.chunks:
            if asked in text:
                return f"leak: the question occurs in training record {where}"
        sentence = prompt.get("sentence")
        if prompt.get("group") == "held_out_sentence" and sentence:
            where = self.qa_sentences.get(normalise(sentence))
            if where:
                return f"leak: its held-out sentence was trained as Q&A in {where}"
        return None


def decontaminate(
    prompts: list[dict], training: Iterable[str | Path], source: str
) -> tuple[list[dict], list[Reject]]:
    text = TrainingText()
    for path in training:
        if not Path(path).is_file():
            raise DataError(f"--against {path}: no such training file")
        text.add_file(path)
    kept, rejects = [], []
    for p in prompts:
        why = text.leak(p)
        if why:
            rejects.append(Reject(source, None, f"{p['id']}: {why}", p))
        else:
            kept.append(p)
    return kept, rejects


def build_closed_book(
    questions: str | Path,
    papers: list[Paper],
    out_dir: str | Path,
    against: list[str | Path] | None = None,
) -> dict:
    """Write closed_book.yaml (the suite) and qa.jsonl (the trainable Q&A) into out_dir,
    each with manifest and rejects."""
    out_dir = Path(out_dir)
    check_outputs(
        [questions, *(p.path for p in papers), *(against or [])],
        {"qa.jsonl": out_dir / "qa.jsonl", "closed_book.yaml": out_dir / "closed_book.yaml"},
    )
    facts, rejects = [], []
    for item in read_questions(questions, papers):
        (rejects if isinstance(item, Reject) else facts).append(item)
    qa_path = out_dir / "qa.jsonl"
    suite_path = out_dir / "closed_book.yaml"
    if not facts:  # an earlier run's suite, Q&A, manifests and rejects stay as they were
        failed = write_failed_rejects(suite_path, rejects)
        raise DataError(
            f"{questions}: no usable facts ({len(rejects)} rejected; reasons in {failed})"
        )
    qa = qa_records(facts)
    m = Manifest(str(qa_path), extra={"facts": sum(f["split"] == "qa" for f in facts)})
    m.add_input(questions)
    m.kept = write_jsonl(qa_path, qa)
    m.write()
    write_rejects(qa_path, [])
    training = [qa_path, *(against or [])]
    prompts, leaks = decontaminate(suite_prompts(facts), training, str(questions))
    write_yaml(suite_path, {"prompts": prompts})
    sm = Manifest(
        str(suite_path),
        extra={
            "groups": _count(prompts, "group"),
            "documents": _count(prompts, "document"),
            # `kept` counts prompts (a fact asks several), `dropped` facts and prompts:
            # these add up to the question file
            "facts": {
                "read": len(facts) + len(rejects),
                "kept": len(facts),
                "rejected": len(rejects),
            },
            "prompts_leaked": len(leaks),
        },
    )
    sm.add_input(questions)
    for p in papers:
        sm.add_input(p.path)
    for path in against or []:
        sm.add_input(path, role="training")
    for r in [*rejects, *leaks]:
        sm.drop(r.reason.split(": ", 1)[-1])
    sm.kept = len(prompts)
    sm.write()
    write_rejects(suite_path, [*rejects, *leaks])
    return {
        "facts": len(facts),
        "rejected": len(rejects),
        "leaked": len(leaks),
        "prompts": len(prompts),
        "qa_records": len(qa),
        "groups": _count(prompts, "group"),
        "outputs": {
            "suite": str(suite_path),
            "qa": str(qa_path),
            "rejects": str(rejects_path(suite_path)),
        },
    }


def _count(prompts: list[dict], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in prompts:
        out[p[key]] = out.get(p[key], 0) + 1
    return out
