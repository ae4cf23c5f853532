"""A relation with no sentence pattern, read as it stands: a name (`temperature`) becomes
"The temperature of SUBJECT is OBJECT.", a verb phrase (`was awarded to`) "SUBJECT was
awarded to OBJECT.", with the questions that ask for the object."""

from __future__ import annotations

_BE = {"is", "was", "are", "were"}
_HAVE = {"has": "is", "have": "is", "had": "was"}
_AUX = _BE | set(_HAVE) | {"do", "does", "did", "can", "could", "will", "would", "may", "must"}
_PREPOSITIONS = {"of", "in", "to", "by", "at", "on", "from", "with", "for", "after", "into", "as"}
_ARTICLES = {"a", "an", "the"}


def _verb_shaped(word: str) -> bool:
    """An auxiliary, a past form (-ed) or a third-person form (-s, not -ss/-us/-is/-ics)."""
    w = word.lower()
    if w in _AUX:
        return True
    if w.endswith("ed") and not w.endswith("eed"):
        return True
    return w.endswith("s") and not w.endswith(("ss", "us", "is", "ics"))


def _base_form(verb: str) -> str:
    """orbits -> orbit, carries -> carry, reaches -> reach, goes -> go."""
    if verb.endswith("ies") and len(verb) > 4:
        return verb[:-3] + "y"
    if verb.endswith(("sses", "ches", "shes", "xes", "zzes", "oes")):
        return verb[:-2]
    return verb[:-1]


def _literal(text: str) -> str:
    """Text to put into a pattern as it stands (braces doubled)."""
    return text.replace("{", "{{").replace("}", "}}")


def relation_is_name(relation: str) -> bool:
    """True for a relation written as a name: one word, or words joined by `_`, that does
    not start like a verb (is/has/..., -s, -ed) and does not end with a preposition."""
    if " " in relation.strip():
        return False
    words = [w for w in relation.split("_") if w]
    return bool(words) and not _verb_shaped(words[0]) and words[-1].lower() not in _PREPOSITIONS


def relation_patterns(relation: str) -> tuple[str, list[str]]:
    """The sentence pattern and the direct question patterns of a relation without a
    sentence pattern of its own.

    - a name (`temperature`, `comoving_size`): "The {relation} of {subject} is {object}.";
      "What is the {relation} of {subject}?", "What is {subject}'s {relation}?";
    - otherwise a verb phrase: "{subject} {relation} {object}."; a direct question when
      the phrase has a known shape:
      `is|was|are|were REST`          -> "What was {subject} REST?" ("Who" when REST ends in "by"),
      `has|have|had [a|an|the] X of`  -> "What is the X of {subject}?" ("was" for "had"),
      `VERBs REST` (orbits, belongs to) -> "What does {subject} VERB REST?";
      none for other shapes (past forms such as "discovered", irregular verbs).
    """
    phrase = relation.replace("_", " ").strip()
    words = phrase.split()
    if not words:
        return "{subject} {relation} {object}.", []
    if relation_is_name(relation):
        return "The {relation} of {subject} is {object}.", [
            "What is the {relation} of {subject}?",
            "What is {subject}'s {relation}?",
        ]
    first, rest = words[0].lower(), words[1:]
    direct: list[str] = []
    if first in _BE:
        wh = "Who" if rest and rest[-1].lower() == "by" else "What"
        tail = _literal(" ".join(rest))
        direct.append(f"{wh} {first} {{subject}}{' ' + tail if tail else ''}?")
    elif first in _HAVE and len(rest) >= 2 and rest[-1].lower() == "of":
        middle = rest[1:-1] if rest[0].lower() in _ARTICLES else rest[:-1]
        if middle:
            direct.append(f"What {_HAVE[first]} the {_literal(' '.join(middle))} of {{subject}}?")
    elif _verb_shaped(first) and first.endswith("s") and first not in _AUX:
        tail = _literal(" ".join([_base_form(words[0]), *rest]))
        direct.append(f"What does {{subject}} {tail}?")
    return "{subject} {relation} {object}.", direct


def derived_questions(statement_pat: str, direct: list[str], given: int) -> list[str]:
    """Wordings added when fewer than two are given: the direct questions (only when none
    is given), "SENTENCE-UP-TO-THE-OBJECT what?" when the object ends the sentence, and
    "Fill in the blank: {blank}"; "What goes in the blank? {blank}" when still short."""
    out = list(direct) if given == 0 else []
    head = statement_pat.rstrip(" .!?")
    if head.endswith("{object}"):
        prefix = head[: -len("{object}")].rstrip()
        if prefix and "{object}" not in prefix:
            out.append(prefix + " what?")
    out.append("Fill in the blank: {blank}")
    if given + len(out) < 2:
        out.append("What goes in the blank? {blank}")
    return out
