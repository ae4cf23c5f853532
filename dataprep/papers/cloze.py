"""Cloze Q&A from a paper's own sentences: grounded by construction.

A sentence with a number, a year or a name in it becomes a question with that span
blanked out; the answer is the span itself (or, with `answer="sentence"`, the whole
sentence). No generator is involved, so every answer is exactly what the paper says.
Records are chat records (Axolotl `chat_template`, only the answer trains):

    {"messages": [{"role": "user", "content": 'Fill in the blank (from "TITLE"): ... ___ ...'},
                  {"role": "assistant", "content": "SPAN"}],
     "document": "paper.md", "sentence": "...", "span": "SPAN", "start": 42}

Sentences can be held out: a seeded share (`hold_out`) and any sentence listed in
`exclude` never become training items; the held-out share becomes an evaluation suite
instead (the same cloze question, asked closed-book), so what the model answers there it
can only have learnt from the papers' text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from cosmosage.dataprep.papers.documents import Paper

BLANK = "___"
QUESTION = 'Fill in the blank (from "{title}"): {masked}'
# further wordings of the same item, used in turn when `variants` > 1
VARIANTS = (
    QUESTION,
    'Complete this sentence from "{title}" by giving the missing words: {masked}',
    'What goes in the gap? The sentence is from "{title}": {masked}',
    '"{title}" says: {masked} What is missing where the ___ is?',
)
ANSWERS = ("span", "sentence")
CONTEXTS = ("sentence", "prefix")
MIN_PREFIX_WORDS = 3

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[A-Za-z][\w'’-]*")
_CONNECTORS = {"of", "de", "van", "von", "du", "la", "del", "der"}
_LEADING = {
    "the", "a", "an", "in", "on", "at", "of", "our", "we", "this", "these", "those", "its",
    "their", "after", "before", "during", "with", "from", "for", "by", "to", "as", "each",
    "every", "all", "both", "most", "some", "first", "when", "while", "here", "there", "it",
    "they", "since", "between", "across", "over", "under", "unlike", "like", "because",
}  # fmt: skip


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str
    kind: str  # number | name


def find_spans(sentence: str) -> list[Span]:
    """Numbers (years, counts, measurements) and capitalised names in a sentence, in order.

    A name is a run of capitalised words, connectors (`of`, `van`, ...) allowed inside; a
    run at the start of the sentence loses a leading function word ("The", "In", ...) and
    is dropped when that leaves nothing, since a sentence's first word is capitalised
    anyway."""
    tokens = list(_TOKEN.finditer(sentence))
    spans: list[Span] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        word = tok.group()
        if word[0].isdigit():
            spans.append(Span(tok.start(), tok.end(), word, "number"))
            i += 1
            continue
        if not word[0].isupper():
            i += 1
            continue
        j = i + 1
        while j < len(tokens):
            w = tokens[j].group()
            gap = sentence[tokens[j - 1].end() : tokens[j].start()]
            if gap.strip():  # punctuation between words ends the name
                break
            if w[0].isupper() and not w[0].isdigit():
                j += 1
            elif (
                w.lower() in _CONNECTORS
                and j + 1 < len(tokens)
                and tokens[j + 1].group()[0].isupper()
                and not sentence[tokens[j].end() : tokens[j + 1].start()].strip()
            ):
                j += 2
            else:
                break
        run = tokens[i:j]
        if i == 0 and run and run[0].group().lower() in _LEADING:
            run = run[1:]
        elif i == 0 and len(run) == 1:
            run = []
        if run:
            start, end = run[0].start(), run[-1].end()
            spans.append(Span(start, end, sentence[start:end], "name"))
        i = j
    return spans


def mask(sentence: str, span: Span) -> str:
    return sentence[: span.start] + BLANK + sentence[span.end :]


def prefix_mask(sentence: str, span: Span) -> str | None:
    """The words before the span, then the blank: "The array stands on the ___." (None
    when fewer than MIN_PREFIX_WORDS words come before it). The question then holds
    little besides the subject and the relation, as a question a person asks would."""
    head = sentence[: span.start].rstrip()
    if len(head.split()) < MIN_PREFIX_WORDS:
        return None
    return f"{head} {BLANK}."


def held_out(sentence: str, share: float, seed: int) -> bool:
    """Whether a sentence is in the seeded held-out share (by its text, so the choice does
    not move when other sentences change)."""
    if share <= 0:
        return False
    digest = hashlib.sha1(f"{seed}\x00{sentence}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def cloze_items(
    papers: list[Paper],
    answer: str = "span",
    max_per_sentence: int = 4,
    hold_out: float = 0.0,
    exclude: set[str] | None = None,
    seed: int = 0,
    variants: int = 1,
    context: str = "sentence",
) -> Iterator[tuple[str, dict]]:
    """("train" | "held_out" | "excluded", item) for every blank of every sentence, in
    `variants` question wordings each (a held-out item is asked in the first only).

    `context`: the question shows the whole sentence around the blank, or (`prefix`) only
    the words before it; with `prefix` a span with too few words before it has no item."""
    if context not in CONTEXTS:
        raise ValueError(f"context: {context!r} is not one of {', '.join(CONTEXTS)}")
    if answer not in ANSWERS:
        raise ValueError(f"answer: {answer!r} is not one of {', '.join(ANSWERS)}")
    if not 1 <= variants <= len(VARIANTS):
        raise ValueError(f"variants: {variants} is not between 1 and {len(VARIANTS)}")
    excluded = {normalise(s) for s in exclude or ()}
    for paper in papers:
        for sentence, original in _sentences(paper):
            spans = find_spans(sentence)[:max_per_sentence]
            if not spans:
                continue
            if normalise(original) in excluded or normalise(sentence) in excluded:
                where = "excluded"
            elif held_out(original, hold_out, seed):
                where = "held_out"
            else:
                where = "train"
            for span in spans:
                reply = span.text if answer == "span" else sentence
                masked = (
                    mask(sentence, span) if context == "sentence" else prefix_mask(sentence, span)
                )
                if masked is None:
                    continue
                for v in range(variants if where == "train" else 1):
                    question = VARIANTS[v].format(title=paper.title, masked=masked)
                    item = {
                        "messages": [
                            {"role": "user", "content": question},
                            {"role": "assistant", "content": reply},
                        ],
                        "document": paper.name,
                        "sentence": sentence,
                        "span": span.text,
                        "start": span.start,
                        "kind": span.kind,
                        "variant": v,
                    }
                    if original != sentence:
                        item["paper_sentence"] = original
                    yield where, item


def _sentences(paper: Paper) -> Iterator[tuple[str, str]]:
    """(sentence as used, sentence as the paper wrote it) of every sentence."""
    for p in paper.paragraphs:
        originals = p.originals or p.sentences
        yield from zip(p.sentences, originals, strict=True)


def eval_prompt(item: dict, index: int) -> dict:
    """A held-out cloze item as a prompt of a suite (`cosmosage eval`)."""
    return {
        "id": f"cloze-{index:04d}",
        "prompt": item["messages"][0]["content"],
        "expect": [item["span"]],
        "kind": "domain",
        "group": "held_out_sentence",
        "document": item["document"],
        "sentence": item.get("paper_sentence", item["sentence"]),
    }
