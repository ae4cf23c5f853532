"""Quality filters: each answers keep (None) or drop (a reason) for a cleaned text.

Reasons read "<rule>: <detail>"; the part before the colon is what manifests count.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# Frequent English function words; English prose has 30-50% of its words in this set,
# math-heavy physics text rarely under 15%, other languages a few percent.
ENGLISH_STOPWORDS = frozenset(
    """a about above after again all also an and any are as at be because been before being
    between both but by can could did do does each few for from further had has have having he
    her here his how i if in into is it its itself just may might more most much must no nor
    not now of off on once only or other our out over own same she should so some such than
    that the their them then there these they this those through thus to too under until up
    very was we were what when where which while who whom why will with would you your""".split()
)

_WORD_RE = re.compile(r"[^\W\d_]+")
_RUN_RE = re.compile(r"(\S)\1{7,}")


@dataclass
class QualityConfig:
    min_words: int = 50
    min_letter_ratio: float = 0.45  # letters / non-space characters
    max_symbol_ratio: float = 0.40  # non-alphanumeric / non-space characters
    max_dup_ngram_ratio: float = 0.30  # share of word 5-grams that repeat an earlier one
    ngram: int = 5
    max_run_ratio: float = 0.05  # share of characters in runs of 8+ identical characters
    min_english_ratio: float = 0.10  # share of words that are English stopwords
    english: bool = True


def too_short(text: str, words: list[str], cfg: QualityConfig) -> str | None:
    if len(words) < cfg.min_words:
        return f"too short: {len(words)} words < {cfg.min_words}"
    return None


def symbol_ratio(text: str, words: list[str], cfg: QualityConfig) -> str | None:
    nonspace = len(text) - sum(text.count(c) for c in " \n\t")
    if not nonspace:
        return "too short: no visible characters"
    letters = sum(len(w) for w in _WORD_RE.findall(text))
    if letters / nonspace < cfg.min_letter_ratio:
        return f"symbol ratio: letters {letters / nonspace:.2f} < {cfg.min_letter_ratio}"
    alnum = letters + sum(map(text.count, "0123456789"))
    symbols = 1 - alnum / nonspace
    if symbols > cfg.max_symbol_ratio:
        return f"symbol ratio: symbols {symbols:.2f} > {cfg.max_symbol_ratio}"
    return None


def repeated_ngrams(text: str, words: list[str], cfg: QualityConfig) -> str | None:
    n = cfg.ngram
    total = len(words) - n + 1
    if total < 10:
        return None
    distinct = len(set(zip(*(words[i:] for i in range(n)), strict=False)))
    dup = 1 - distinct / total
    if dup > cfg.max_dup_ngram_ratio:
        return f"repeated n-grams: {dup:.2f} of {n}-grams repeat > {cfg.max_dup_ngram_ratio}"
    return None


def character_runs(text: str, words: list[str], cfg: QualityConfig) -> str | None:
    run_chars = sum(len(m.group(0)) for m in _RUN_RE.finditer(text))
    if run_chars / max(1, len(text)) > cfg.max_run_ratio:
        return f"character runs: {run_chars / len(text):.2f} of characters > {cfg.max_run_ratio}"
    return None


def not_english(text: str, words: list[str], cfg: QualityConfig) -> str | None:
    if not cfg.english:
        return None
    alpha = _WORD_RE.findall(text.lower())
    if len(alpha) < 20:
        return None
    share = sum(w in ENGLISH_STOPWORDS for w in alpha) / len(alpha)
    if share < cfg.min_english_ratio:
        return f"not English: stopword share {share:.2f} < {cfg.min_english_ratio}"
    return None


FILTERS: list[Callable[[str, list[str], QualityConfig], str | None]] = [
    too_short,
    character_runs,
    symbol_ratio,
    repeated_ngrams,
    not_english,
]


def quality_reason(text: str, cfg: QualityConfig | None = None) -> str | None:
    """The first filter that drops `text`, as a reason; None when it is kept."""
    cfg = cfg or QualityConfig()
    words = text.split()
    for f in FILTERS:
        if reason := f(text, words, cfg):
            return reason
    return None
