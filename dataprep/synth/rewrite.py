"""Rewriting training answers in the model's own words (`data replay --rewrite`).

Self-distillation fine-tuning (SDFT, Yang et al. 2024): instead of answering prompts, the
model is shown each chat record's question with its answer as a reference and asked to
answer in its own words, keeping every name, number and fact. The rewrite replaces the
answer only when it ended by itself, does not loop and keeps every number and capitalised
name of the original; otherwise the original stays. Asked, journaled and written as
`data replay`'s answers are (dataprep/synth/replay.py).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from cosmosage.dataprep.io import check_outputs, read_jsonl
from cosmosage.dataprep.records import DataError, Reject
from cosmosage.dataprep.synth.replay import (
    AnswerFn,
    ReplayConfig,
    answer_problem,
    ask_journaled,
    write_outputs,
)

# the request of `--rewrite`: the model answers the question in its own words with the
# training answer as a guide (self-distillation); wording written for this project
REWRITE = (
    "{question}\n\nA reference answer:\n{reference}\n\nAnswer the request above in your own "
    "words. Keep every name, number and fact of the reference answer."
)
_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user",
          "assistant": "assistant"}  # fmt: skip
_TERM = re.compile(r"\d+(?:\.\d+)?|(?<![.!?]\s)(?<!^)\b[A-Z][\w-]+")


def key_terms(text: str) -> set[str]:
    """What a rewrite must keep: every number, and every capitalised word that does not
    begin a sentence (names: 'the Halvard Radio Array', 'Tollisch')."""
    return {t for t in _TERM.findall(text.strip()) if t != "I"}


def chat_turns(rec: dict) -> list[dict] | None:
    """A record's turns as [{role, content}] (messages, or ShareGPT conversations)."""
    turns = rec.get("messages") or rec.get("conversations")
    if not isinstance(turns, list):
        return None
    out = []
    for t in turns:
        if not isinstance(t, dict):
            return None
        role = _ROLES.get(t.get("role") or t.get("from"))
        content = t.get("content", t.get("value"))
        if role is None or not isinstance(content, str):
            return None
        out.append({"role": role, "content": content})
    return out


def run_rewrite(
    cfg: ReplayConfig, inputs: list[str], answer: AnswerFn, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every chat record of `inputs` with its last answer rewritten by the model in its
    own words; a rewrite that is cut off, loops, or loses a name or number of the
    original keeps the original answer (counted in the manifest by reason)."""
    check_outputs(inputs, {"--out": cfg.out})
    records, rejects = [], []
    for path in inputs:
        for line, rec in read_jsonl(path):
            if isinstance(rec, Reject):
                rejects.append(rec)
                continue
            turns = chat_turns(rec)
            j = max((i for i, t in enumerate(turns or []) if t["role"] == "assistant"), default=-1)
            if turns is None or j < 1 or turns[j - 1]["role"] != "user":
                rejects.append(
                    Reject(
                        str(path),
                        line,
                        "not a chat record ending in a user/assistant exchange",
                        rec,
                    )
                )
                continue
            question, reference = turns[j - 1]["content"], turns[j]["content"]
            key = hashlib.sha1(f"{question}\0{reference}".encode()).hexdigest()[:16]
            records.append((key, turns, j, REWRITE.format(question=question, reference=reference)))
    if not records:
        raise DataError(f"no chat records to rewrite in {', '.join(inputs)}")
    unique = list({k: text for k, _, _, text in records}.items())
    done = ask_journaled(cfg, unique, answer, echo, kind="rewrite", unit="answers")
    kept, originals = [], Counter()
    for key, turns, j, _ in records:
        e, reference = done[key], turns[j]["content"]
        text = e["answer"].strip()
        why = answer_problem(text, e["finished"], cfg.min_answer_chars)
        if why is None and any(t not in text for t in key_terms(reference)):
            why = "the rewrite lost a name or number of the original"
        out = [dict(t) for t in turns]
        if why is None:
            out[j]["content"] = text
        else:
            originals[why] += 1
        kept.append({"messages": out})
    manifest = write_outputs(
        cfg, kept, rejects, inputs,
        step="rewrite",
        rewritten=len(kept) - sum(originals.values()),
        kept_original=dict(originals),
    )  # fmt: skip
    return {"out": str(cfg.out), "kept": manifest.kept, "rewritten": manifest.extra["rewritten"],
            "kept_original": dict(originals), "rejected": len(rejects)}  # fmt: skip
