"""Hallucination flag by self-consistency: ask the same question several times with
sampling; knowledge gives the same answer each time, an invented answer changes.

Agreement of a set of samples is the mean pairwise Jaccard similarity of their content
words (lowercased, punctuation and a short list of function words dropped, first
sentence only), in [0, 1]. An answer is flagged when its samples agree less than
`threshold`. Whether agreement predicts correctness is measured, not assumed: `auroc`
of agreement against correct/incorrect (0.5 = no better than chance).
"""

from __future__ import annotations

import itertools
import re

FLAG_THRESHOLD = 0.5
_WORD_RE = re.compile(r"[a-z0-9]+(?:[.'-][a-z0-9]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
FUNCTION_WORDS = frozenset(
    "a an the of in on at to for by with from and or but is are was were be been it its "
    "this that these those as which who whom what when where why how do does did has have "
    "had i you he she we they my your his her our their".split()
)


def content_words(answer: str) -> frozenset[str]:
    """The content words of an answer's first sentence."""
    first = _SENTENCE_END.split(answer.strip(), maxsplit=1)[0].lower()
    return frozenset(w for w in _WORD_RE.findall(first) if w not in FUNCTION_WORDS)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def agreement(samples: list[str]) -> float:
    """Mean pairwise similarity of the samples (1.0 for a single sample)."""
    words = [content_words(s) for s in samples]
    pairs = list(itertools.combinations(words, 2))
    if not pairs:
        return 1.0
    return sum(jaccard(a, b) for a, b in pairs) / len(pairs)


def auroc(scores: list[float], labels: list[bool]) -> float | None:
    """Area under the ROC curve of `scores` for `labels` (ties count half); None when
    only one class is present."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def calibration(scores: list[float], labels: list[bool], bins: int = 5) -> list[dict]:
    """Accuracy per agreement bin: [{lo, hi, n, accuracy}] (empty bins left out)."""
    out = []
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        inside = [
            y
            for s, y in zip(scores, labels, strict=True)
            if lo <= s < hi or (k == bins - 1 and s == 1.0)
        ]
        if inside:
            out.append(
                {"lo": lo, "hi": hi, "n": len(inside), "accuracy": sum(inside) / len(inside)}
            )
    return out
