"""Questions written by a model for the facts of a paper's sentences (`data questions`).

Asked to write question/answer pairs about a whole passage, a small model mostly writes
wrong ones (docs/synthetic-qa.md). Asked something narrower it does far better: given a
sentence and a span of it (a name, a number, a year: the blanks `data cloze` finds),
write one question whose answer is that span. The fact is chosen for it; it only has to
turn a statement around ("The array stands on the Sennick Salt Flats" -> "On which salt
flat does the array stand?"). The answer trained is the paper's own sentence (or the
span), so every answer is what the paper says; only the question comes from the model.

Two journaled steps, each resumable on its own (`jobs.JournaledJob`):

1. **write**: for every distinct (document, sentence, span) of the input, K requests
   (`--questions`), each showing its own worked examples (`shown_examples`: the k-th
   example alone, then pairs of them), so a server that decodes greedily, or ignores
   the sampling settings, still writes different questions. A question is refused when it is not a question, gives
   the answer away (the span, or a name or number of the span that the rest of the
   sentence does not contain), is mostly about something else than the sentence, is too
   long, repeats an earlier candidate of the same span, or copies the wording of a prompt
   of an evaluation suite (`--against`; `QuestionHoldout`). Kept
   candidates go to `OUT.candidates.jsonl`.
2. **check** (round trip, on by default): each candidate is asked back with its sentence
   in front of it; a question whose answer does not name the span is refused: it leads
   somewhere else. Kept records go to OUT.

Every refusal is a reject with its reason and the model's text; both steps write a
manifest.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cosmosage.dataprep.io import read_jsonl
from cosmosage.dataprep.records import DataError, Reject
from cosmosage.dataprep.synth.generate import content_words
from cosmosage.dataprep.synth.jobs import Answer, Outcome, RecordsJob
from cosmosage.dataprep.synth.llm import Endpoint, RetryPolicy
from cosmosage.dataprep.synth.replay import suite_prompts

ANSWERS = ("sentence", "span")
MAX_QUESTION_WORDS = 30
MIN_ON_SENTENCE = 0.5  # share of a question's content words that must be in its sentence
_TOKEN = re.compile(r"[A-Za-z0-9][\w.'’-]*")
_LEAD = re.compile(
    r"^\s*(?:\d{1,2}[.)]\s*|[-*]\s*)?(?:\*\*)?(?:question|q)\s*(?:\*\*)?\s*:\s*", re.I
)


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9.]+", text.lower())).replace(" .", "")


def telling_tokens(span: str, sentence: str) -> set[str]:
    """The tokens of the span that would give it away: numbers, and capitalised words
    (kept in their case) that the sentence does not also hold outside the span, so
    "Halvard" of "Halvard Radio Array" may be asked about in a sentence that names the
    array elsewhere, and "salt" may be asked about where the span is "Sennick Salt Flats"."""
    start = sentence.find(span)
    rest = sentence if start < 0 else sentence[:start] + " " + sentence[start + len(span) :]
    rest_tokens = {t.rstrip(".") for t in _TOKEN.findall(rest)}
    out = set()
    for t in _TOKEN.findall(span):
        t = t.rstrip(".")
        if (t[:1].isupper() or any(c.isdigit() for c in t)) and t not in rest_tokens:
            out.add(t)
    return out


def _tokens(text: str) -> set[str]:
    return {t.rstrip(".") for t in _TOKEN.findall(text)}


def names_span(text: str, span: str, sentence: str) -> bool:
    """Whether `text` names the span: all of it, or every token that tells it."""
    if _norm(span) and _norm(span) in _norm(text):
        return True
    telling = telling_tokens(span, sentence)
    return bool(telling) and telling <= _tokens(text)


def gives_away(question: str, span: str, sentence: str) -> bool:
    """Whether a question holds its own answer: the span, or any token that tells it."""
    if _norm(span) and _norm(span) in _norm(question):
        return True
    return bool(telling_tokens(span, sentence) & _tokens(question))


def _bigrams(text: str) -> set[tuple[str, str]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return set(zip(words, words[1:], strict=False))


class QuestionHoldout:
    """Finds the evaluation prompt a written question copies: word pairs alike by at
    least `overlap` (Jaccard), or the same content words. Questions about one paper
    share its subject's words, so the rule `data replay` uses (content words alike)
    would refuse most of them; the same *wording* is what must stay out of training."""

    def __init__(self, suites: list[str | Path], overlap: float = 0.5):
        self.overlap = overlap
        self.items = [
            (Path(s).name, text, _bigrams(text), content_words(text))
            for s in suites
            for text in suite_prompts(s)
        ]

    def hit(self, question: str) -> str | None:
        pairs, words = _bigrams(question), content_words(question)
        for suite, text, other_pairs, other_words in self.items:
            union = pairs | other_pairs
            alike = len(pairs & other_pairs) / len(union) if union else 0.0
            if alike >= self.overlap or (words and words == other_words):
                return f"held out: copies {suite} prompt {text!r}"
        return None


def first_question(text: str) -> str:
    """The first line of a reply, without a `Question:` label, list marker or quotes."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = _LEAD.sub("", line).strip().strip('"“”').strip()
    return " ".join(line.split())


def question_problem(question: str, span: str, sentence: str) -> str | None:
    """Why a written question cannot be used, or None."""
    if not question.endswith("?"):
        return "not a question: it does not end with '?'"
    if len(question.split()) > MAX_QUESTION_WORDS:
        return f"too long: more than {MAX_QUESTION_WORDS} words"
    if gives_away(question, span, sentence):
        return "gives the answer away: the question names the span"
    words = content_words(question)
    if not words:
        return "not about the sentence: no content words"
    on = len(words & content_words(sentence)) / len(words)
    if on < MIN_ON_SENTENCE:
        return f"not about the sentence: {on:.0%} of its content words are in the sentence (< {MIN_ON_SENTENCE:.0%})"
    return None


@dataclass
class QuestionsConfig:
    input: str  # blanks: chat JSONL from `data cloze` (document, sentence, span per record)
    out: str
    endpoint: Endpoint
    prompt: str = "question_for_span"
    check_prompt: str = "answer_from_sentence"
    questions: int = 2  # candidate questions asked per span
    answer: str = "sentence"  # what the kept records answer with
    round_trip: bool = True
    against: list[str] = field(default_factory=list)  # evaluation suites to hold out
    sampling: dict = field(default_factory=dict)
    concurrency: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    prompt_change: str = "stop"
    retry_failed: bool = False


def shown_examples(k: int, n: int) -> tuple[int, ...]:
    """Which of a prompt's n worked examples candidate k shows: example k while there are
    examples left, then each pair of them in turn, so up to n + n(n-1)/2 candidates see
    different examples (past that the pairs repeat)."""
    if k < n:
        return (k,)
    pairs = list(itertools.combinations(range(n), 2)) or [(0,)]
    return pairs[(k - n) % len(pairs)]


def candidates_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".candidates.jsonl")


def read_blanks(path: str | Path) -> tuple[list[tuple[int, dict]], list[dict]]:
    """Distinct (document, sentence, span) blanks of a cloze file, and rejects for lines
    without them."""
    blanks, rejects, seen = [], [], set()
    for lineno, rec in read_jsonl(path):
        if isinstance(rec, Reject):
            rejects.append(rec.to_json())
            continue
        missing = [
            k for k in ("sentence", "span") if not isinstance(rec.get(k), str) or not rec[k].strip()
        ]
        if missing:
            rejects.append(
                Reject(
                    str(path),
                    lineno,
                    f"bad blank: no '{missing[0]}' (a `data cloze` record has it)",
                    rec,
                ).to_json()
            )
            continue
        key = (str(rec.get("document", "")), rec["sentence"], rec["span"])
        if key in seen:
            continue  # the same blank in another cloze wording
        seen.add(key)
        blanks.append((lineno, {"document": key[0], "sentence": key[1], "span": key[2]}))
    return blanks, rejects


def blank_id(blank: dict) -> str:
    raw = "\x00".join((blank["document"], blank["sentence"], blank["span"]))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


class WriteJob(RecordsJob[QuestionsConfig]):
    """Step 1: K candidate questions per blank."""

    kind = "questions"
    fields = {"sentence", "answer", "title"}
    default_sampling = {"temperature": 0.0, "max_tokens": 48}

    def __init__(self, cfg: QuestionsConfig, out: Path) -> None:
        if cfg.questions < 1:
            raise DataError("--questions must be at least 1")
        if cfg.answer not in ANSWERS:
            raise DataError(f"--answer {cfg.answer}: not one of {', '.join(ANSWERS)}")
        super().__init__(replace(cfg, out=str(out)), [cfg.endpoint])
        if not self.prompt.examples:
            raise DataError(f"{self.prompt.path}: needs at least one worked example")
        self.holdout = QuestionHoldout(cfg.against)
        blanks, self.input_rejects = read_blanks(cfg.input)
        if not blanks:
            raise DataError(f"{cfg.input}: no blanks (records with 'sentence' and 'span')")
        for lineno, blank in blanks:
            for k in range(cfg.questions):
                self.items.append((f"{blank_id(blank)}:{k}", (lineno, blank, k)))
        self.generator = {
            "model": cfg.endpoint.model,
            "prompt": self.prompt.tag,
            "sampling": dict(self.sampling),
        }

    def header(self) -> dict:
        return {"generator": self.cfg.endpoint.public()}

    def request(self, payload: tuple[int, dict, int]) -> tuple[int, list[dict]]:
        _, blank, k = payload
        examples = tuple(
            self.prompt.examples[i] for i in shown_examples(k, len(self.prompt.examples))
        )
        shown = replace(self.prompt, examples=examples)
        return 0, shown.messages(
            sentence=blank["sentence"], answer=blank["span"], title=blank["document"]
        )

    def reject(self, payload: tuple[int, dict, int], reason: str, **extra: Any) -> dict:
        lineno, blank, k = payload
        return Reject(self.cfg.input, lineno, reason, {**blank, "candidate": k, **extra}).to_json()

    def answer(self, payload: tuple[int, dict, int], answer: Answer) -> dict:
        _, blank, k = payload
        question = first_question(answer.obj)
        problem = question_problem(question, blank["span"], blank["sentence"])
        if problem is None:
            problem = self.holdout.hit(question)
        if problem:
            return {
                "records": [],
                "rejects": [self.reject(payload, problem, question=question, raw=answer.raw)],
            }
        reply = blank["sentence"] if self.cfg.answer == "sentence" else blank["span"]
        record = {
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": reply},
            ],
            "id": f"{blank_id(blank)}:{k}",
            **blank,
            "candidate": k,
            "generator": self.generator,
        }
        return {"records": [record], "rejects": []}

    def finish(self, latest: dict[str, dict]) -> Outcome:
        kept, rejects, seen = [], [], {}
        for key, payload in self.items:
            entry = latest[key]
            rejects.extend(entry.get("rejects", []))
            for rec in entry.get("records", []):
                dup = (rec["id"].rsplit(":", 1)[0], _norm(rec["messages"][0]["content"]))
                if dup in seen:
                    reason = f"duplicate: the same question as candidate {seen[dup]} of this span"
                    rejects.append(
                        self.reject(payload, reason, question=rec["messages"][0]["content"])
                    )
                    continue
                seen[dup] = rec["candidate"]
                kept.append(rec)
        spans = {key.rsplit(":", 1)[0] for key, _ in self.items}
        with_q = {r["id"].rsplit(":", 1)[0] for r in kept}
        manifest = {
            "generator": {**self.cfg.endpoint.public(), "sampling": self.sampling},
            "spans": len(spans),
            "spans_with_questions": len(with_q),
            "questions_asked_per_span": self.cfg.questions,
            "against": [str(a) for a in self.cfg.against],
        }
        return Outcome(kept, rejects, manifest)


class CheckJob(RecordsJob[QuestionsConfig]):
    """Step 2: each candidate asked back with its sentence; kept if the answer names the span."""

    kind = "round-trip"
    fields = {"sentence", "question"}
    default_sampling = {"temperature": 0.0, "max_tokens": 32}

    def __init__(self, cfg: QuestionsConfig, candidates: Path) -> None:
        super().__init__(
            replace(cfg, input=str(candidates), prompt=cfg.check_prompt, sampling={}),
            [cfg.endpoint],
        )
        for lineno, rec in read_jsonl(candidates):
            if isinstance(rec, Reject):
                self.input_rejects.append(rec.to_json())
            else:
                self.items.append((rec["id"], (lineno, rec)))

    def request(self, payload: tuple[int, dict]) -> tuple[int, list[dict]]:
        _, rec = payload
        return 0, self.prompt.messages(
            sentence=rec["sentence"], question=rec["messages"][0]["content"]
        )

    def reject(self, payload: tuple[int, dict], reason: str, **extra: Any) -> dict:
        lineno, rec = payload
        record = {k: rec[k] for k in ("document", "sentence", "span", "candidate")}
        return Reject(
            self.cfg.input,
            lineno,
            reason,
            {**record, "question": rec["messages"][0]["content"], **extra},
        ).to_json()

    def answer(self, payload: tuple[int, dict], answer: Answer) -> dict:
        _, rec = payload
        said = " ".join(answer.obj.split())
        if not names_span(said, rec["span"], rec["sentence"]):
            reason = (
                "round trip: asked back with its sentence, the model did not answer with the span"
            )
            return {"records": [], "rejects": [self.reject(payload, reason, answered=said[:300])]}
        return {"records": [{**rec, "round_trip": said[:300]}], "rejects": []}

    def finish(self, latest: dict[str, dict]) -> Outcome:
        kept, rejects = self.collect(latest)
        spans = {r["id"].rsplit(":", 1)[0] for r in kept}
        return Outcome(
            kept, rejects, {"candidates": len(self.items), "spans_with_questions": len(spans)}
        )


def run_questions(cfg: QuestionsConfig, echo: Callable[[str], None] = print) -> dict:
    """Write, then (unless `round_trip` is off) check; return a summary."""
    write_to = candidates_path(cfg.out) if cfg.round_trip else Path(cfg.out)
    write = WriteJob(cfg, write_to)
    wrote = write.run(echo)
    summary: dict[str, Any] = {
        "output": str(cfg.out),
        "spans": wrote.outcome.manifest["spans"],
        "asked": len(write.items),
        "written": wrote.kept,
        "refused_when_written": _reasons(write.input_rejects + wrote.outcome.rejects),
        "resumed": wrote.resumed,
        "requests": wrote.usage.requests,
    }
    if cfg.round_trip:
        check = CheckJob(cfg, write_to)
        checked = check.run(echo)
        summary.update(
            candidates=str(write_to),
            refused_by_round_trip=checked.rejects,
            requests=summary["requests"] + checked.usage.requests,
            resumed=summary["resumed"] + checked.resumed,
        )
        kept = checked.outcome.kept
    else:
        kept = wrote.outcome.kept
    summary["records"] = len(kept)
    summary["spans_with_questions"] = len({r["id"].rsplit(":", 1)[0] for r in kept})
    return summary


def _reasons(rejects: list[dict]) -> dict[str, int]:
    return dict(Counter(r["reason"].split(":", 1)[0] for r in rejects).most_common())
