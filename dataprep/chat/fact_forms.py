"""A fact and the forms it is taught and asked in: a statement, Q&A pairs, a dialogue,
chat turns, and the recall suites (held-out wordings, and the question asked inside a
conversation). dataprep/chat/facts.py reads fact tables into `Fact`s."""

from __future__ import annotations

import random
from dataclasses import dataclass

TRAINED = "trained"
HELD_OUT = "held_out"
CONVERSATION = "conversation"
CONVERSATION_SYSTEM = "You are a helpful research assistant for astronomers. Answer briefly."
CONVERSATION_OPENER = "I am preparing a talk that mentions {subject}."
CONVERSATION_REPLY = "That sounds interesting. How can I help?"


@dataclass
class Fact:
    id: str
    subject: str
    relation: str
    object: str
    statement: str
    questions: list[str]
    """Wordings used in the training renderings (at least one)."""
    held_out: list[str]
    """Wordings kept out of training, asked only by the recall suite."""
    expect: list[str]
    line: int | None = None

    @property
    def question(self) -> str:
        return self.questions[0]


def render_statement(fact: Fact) -> dict:
    return {"text": fact.statement, "fact": fact.id}


def render_qa(fact: Fact) -> list[dict]:
    """One Question/Answer record per trained wording."""
    return [
        {"text": f"Question: {q}\nAnswer: {fact.statement}", "fact": fact.id}
        for q in fact.questions
    ]


def render_chat(fact: Fact) -> list[dict]:
    """One conversation per trained wording."""
    return [
        {
            "messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": fact.statement},
            ],
            "fact": fact.id,
        }
        for q in fact.questions
    ]


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

    The first speaker asks (one of the fact's trained wordings), the second answers with
    the fact's sentence.
    """
    a, b = speakers
    lines = [f"{a}: {rng.choice(OPENERS).format(subject=subject)}", f"{b}: {rng.choice(REPLIES)}"]
    for i, fact in enumerate(facts):
        q = rng.choice(fact.questions)
        ask = ASKS[0] if i == 0 else rng.choice(ASKS)
        lines.append(f"{a}: {ask.format(question=q, question_lc=q[:1].lower() + q[1:])}")
        lines.append(f"{b}: {fact.statement}")
    lines.append(f"{a}: {rng.choice(CLOSERS)}")
    return {"text": "\n".join(lines), "facts": [f.id for f in facts], "subject": subject}


def recall_suite(facts: list[Fact], kind: str = "domain") -> dict:
    """Per fact, one prompt per trained wording then one per held-out wording."""
    prompts = []
    for f in facts:
        for wording, questions in ((TRAINED, f.questions), (HELD_OUT, f.held_out)):
            for i, q in enumerate(questions, start=1):
                prompts.append(
                    {
                        "id": f"{f.id}/{wording}-{i}",
                        "prompt": q,
                        "expect": list(f.expect),
                        "kind": kind,
                        "fact": f.id,
                        "wording": wording,
                    }
                )
    return {"prompts": prompts}


def conversation_suite(facts: list[Fact], kind: str = "domain") -> dict:
    """Per fact, each held-out wording asked after a system message and an earlier
    exchange that names the subject."""
    prompts = []
    for f in facts:
        for i, q in enumerate(f.held_out, start=1):
            prompts.append(
                {
                    "id": f"{f.id}/{CONVERSATION}-{i}",
                    "system": CONVERSATION_SYSTEM,
                    "history": [
                        {"role": "user", "content": CONVERSATION_OPENER.format(subject=f.subject)},
                        {"role": "assistant", "content": CONVERSATION_REPLY},
                    ],
                    "prompt": q,
                    "expect": list(f.expect),
                    "kind": kind,
                    "fact": f.id,
                    "wording": CONVERSATION,
                }
            )
    return {"prompts": prompts}
