"""Self-replay: the base model's own answers to everyday instructions, as chat records.

Every way of teaching a model something new moves it away from what it could already
do. Training on the base model's own answers beside the new data pulls it back toward
what it used to say, in its own style, with no foreign data (`data replay`). Mixed in by
token share with `data mix` like any chat source.

The steps: read the prompts (the bundled `samples/replay/prompts.yaml`, or any YAML,
JSONL or text file), drop empty, duplicate and over-long prompts and every prompt that
overlaps an evaluation suite (`against`), ask the model in batches (the answering
function is given by the caller, so this module loads no model), journal every answer
as it comes so that a killed run resumes where it stopped, then drop answers that are
empty, cut off by the token limit, looping, or repeated word for word across prompts.
Every dropped prompt or answer goes to the rejects file with its reason.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmosage.dataprep.io import (
    Manifest,
    check_outputs,
    read_jsonl,
    read_text,
    read_yaml,
    write_jsonl,
    write_rejects,
)
from cosmosage.dataprep.records import DataError, Reject, yaml_item_lines
from cosmosage.dataprep.synth.generate import content_words
from cosmosage.dataprep.synth.journal import Journal, journal_path

# a prompt whose content words are this much alike with a suite prompt's is held out
OVERLAP = 0.6
MAX_PROMPT_CHARS = 2000


# the keys of a prompt that say how to check its answer, as in an evaluation suite
CHECK_KEYS = ("expect", "score", "tolerance")


@dataclass
class Prompt:
    text: str
    kind: str
    source: str
    line: int | None
    # {expect: [...], score: ...}: the answer must pass it to be replayed (None: no check)
    check: dict | None = None

    @property
    def key(self) -> str:
        return hashlib.sha1(normalise(self.text).encode()).hexdigest()[:16]


def normalise(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _first_user_turn(rec: dict) -> str | None:
    turns = rec.get("messages") or rec.get("conversations")
    if not isinstance(turns, list):
        return None
    for t in turns:
        if isinstance(t, dict) and (t.get("role") or t.get("from")) in ("user", "human"):
            content = t.get("content", t.get("value"))
            return content if isinstance(content, str) else None
    return None


def answer_check(item: dict) -> dict | None:
    """The `expect:` (with `score:`, `tolerance:`) of a prompt, None when it has none; the
    scorer `run_replay` is given checks them before anything is asked."""
    return {k: item[k] for k in CHECK_KEYS if k in item} if "expect" in item else None


def read_prompts(path: str | Path) -> Iterator[Prompt | Reject]:
    """The prompts of one file: YAML (`kinds: {KIND: [prompt, ...]}`, or `prompts:` as a
    list of strings or mappings with `prompt`), JSONL (a `prompt` field, or a chat record
    whose first user turn is the prompt) or plain text (one prompt per line). A mapping or
    JSONL record may carry `expect:` (accepted answers, as in an evaluation suite): the
    answer is then checked before it is replayed."""
    path = Path(path)
    src = str(path)
    if path.suffix in (".yaml", ".yml"):
        doc = read_yaml(path, lines=True)
        # (kind, its prompts, the path yaml_item_lines gives them)
        if isinstance(doc, dict) and isinstance(doc.get("kinds"), dict):
            kinds = [(k, v) for k, v in doc["kinds"].items() if k != "__line__"]
            groups = [(k, v, ("kinds", str(k))) for k, v in kinds]
        elif isinstance(doc, dict) and isinstance(doc.get("prompts"), list):
            groups = [(path.stem, doc["prompts"], ("prompts",))]
        elif isinstance(doc, list):
            groups = [(path.stem, doc, ())]
        else:
            raise DataError(f"{src}: expected `kinds:` (kind -> list of prompts) or `prompts:`")
        lines = yaml_item_lines(path)
        for kind, items, at in groups:
            if not isinstance(items, list):
                raise DataError(f"{src}: kinds.{kind} must be a list of prompts")
            for i, item in enumerate(items):
                line = lines.get((*at, i))
                check = None
                if isinstance(item, dict):
                    item = {k: v for k, v in item.items() if k != "__line__"}
                    text, kind_i = item.get("prompt"), str(item.get("kind", kind))
                    check = answer_check(item)
                else:
                    text, kind_i = item, str(kind)
                if not isinstance(text, str):
                    yield Reject(src, line, f"{kind}: the prompt must be text", item)
                    continue
                yield Prompt(text, kind_i, src, line, check)
    elif path.suffix == ".jsonl":
        for line, rec in read_jsonl(path):
            if isinstance(rec, Reject):
                yield rec
                continue
            text = (
                rec.get("prompt") if isinstance(rec.get("prompt"), str) else _first_user_turn(rec)
            )
            if text is None:
                yield Reject(src, line, "no `prompt` field and no user turn", rec)
                continue
            check = answer_check(rec)
            yield Prompt(text, str(rec.get("kind", path.stem)), src, line, check)
    else:
        for i, text in enumerate(read_text(path).splitlines(), start=1):
            if text.strip() and not text.lstrip().startswith("#"):
                yield Prompt(text.strip(), path.stem, src, i)


def suite_prompts(path: str | Path) -> list[str]:
    """Every prompt (and earlier turn) of an evaluation suite file, to hold out."""
    path = Path(path)
    if path.suffix == ".jsonl":
        out = []
        for _, rec in read_jsonl(path):
            if isinstance(rec, dict):
                for key in ("prompt", "question", "query"):
                    if isinstance(rec.get(key), str):
                        out.append(rec[key])
        return out
    doc = read_yaml(path)
    items = doc.get("prompts") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise DataError(f"{path}: not an evaluation suite (no `prompts:` list)")
    out = []
    for p in items:
        if isinstance(p, dict):
            out += [p["prompt"]] if isinstance(p.get("prompt"), str) else []
            out += [
                t["content"]
                for t in p.get("history") or []
                if isinstance(t, dict) and isinstance(t.get("content"), str)
            ]
    return out


class Holdout:
    """Finds the suite prompt a candidate is too close to: the same words, or content
    words alike by at least OVERLAP (Jaccard), so 'Who wrote the play Hamlet?' is held
    out by 'Who wrote Hamlet?' while 'What is the capital of Italy?' is not by '... of
    France?'."""

    def __init__(self, suites: list[str | Path]):
        self.items: list[tuple[str, str, set[str]]] = []
        for s in suites:
            for text in suite_prompts(s):
                self.items.append((Path(s).name, normalise(text), content_words(text)))

    def hit(self, text: str) -> str | None:
        norm, words = normalise(text), content_words(text)
        for suite, other, other_words in self.items:
            if norm == other:
                return f"held out: the same as a prompt of {suite}"
            union = words | other_words
            if union and len(words & other_words) / len(union) >= OVERLAP:
                return f"held out: too close to {suite} prompt {other!r}"
        return None


def looping(text: str, n: int = 3, limit: int = 4) -> bool:
    """Whether some run of n words repeats more than `limit` times (a small model's loop)."""
    words = text.lower().split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return bool(grams) and max(grams.values()) > limit


@dataclass
class ReplayConfig:
    out: str
    prompts: list[str]
    model: str  # recorded in the manifest and journal header
    settings: dict  # generation settings, recorded; a resumed run must use the same
    against: list[str] = field(default_factory=list)
    batch_size: int = 16
    max_prompt_chars: int = MAX_PROMPT_CHARS
    min_answer_chars: int = 1
    # answers drawn per prompt (more than one only with a sampled preset): several draws
    # of the model's own distribution instead of one answer repeated by the mix
    samples: int = 1


# (prompt texts) -> [(answer, finished)], finished False when the token limit cut it off
AnswerFn = Callable[[list[str]], list[tuple[str, bool]]]
# (answer, {expect, score, ...}) -> (passed, detail): the evaluation suites' scorer
CheckFn = Callable[[str, dict], tuple[bool, str]]


def select_prompts(cfg: ReplayConfig) -> tuple[list[Prompt], list[Reject], Counter]:
    holdout = Holdout(cfg.against)
    kept: list[Prompt] = []
    rejects: list[Reject] = []
    seen: dict[str, Prompt] = {}
    for path in cfg.prompts:
        for p in read_prompts(path):
            if isinstance(p, Reject):
                rejects.append(p)
                continue
            why = None
            if not p.text.strip():
                why = "empty prompt"
            elif len(p.text) > cfg.max_prompt_chars:
                why = f"prompt longer than {cfg.max_prompt_chars} characters"
            elif p.key in seen:
                first = seen[p.key]
                why = f"duplicate prompt (first at {first.source}:{first.line})"
            else:
                why = holdout.hit(p.text)
            if why:
                rejects.append(Reject(p.source, p.line, why, {"prompt": p.text}))
                continue
            seen[p.key] = p
            kept.append(p)
    return kept, rejects, Counter(p.kind for p in kept)


def ask_journaled(
    cfg: ReplayConfig,
    items: list[tuple[str, str]],
    answer: AnswerFn,
    echo: Callable[[str], None],
    kind: str,
    unit: str,
) -> dict[str, dict]:
    """Answers to (key, text) items: what the journal beside cfg.out already holds, and
    the rest asked in batches, each answer journaled as it comes."""
    from tqdm import tqdm

    header = {"kind": kind, "model": cfg.model, "settings": cfg.settings}
    with Journal(journal_path(cfg.out), header) as journal:
        for key in ("model", "settings"):
            if journal.header.get(key) != header[key]:
                raise DataError(
                    f"{journal.path}: made with {key} {journal.header.get(key)!r}, now "
                    f"{header[key]!r}; use the same settings to resume, or another --out"
                )
        done = {e["key"]: e for e in journal.entries}
        todo = [(k, t) for k, t in items if k not in done]
        if len(todo) < len(items):
            echo(
                f"{kind} {len(items) - len(todo)} of {len(items)} {unit} answered by an earlier run"
            )
        with tqdm(total=len(todo), desc=kind, unit=unit.rstrip("s"), disable=None) as bar:
            for i in range(0, len(todo), cfg.batch_size):
                batch = todo[i : i + cfg.batch_size]
                got = answer([t for _, t in batch])
                if len(got) != len(batch):
                    raise DataError(f"the model gave {len(got)} answers to {len(batch)} prompts")
                for (key, _), (text, finished) in zip(batch, got, strict=True):
                    entry = {"key": key, "answer": text, "finished": bool(finished)}
                    journal.append(entry)
                    done[key] = entry
                bar.update(len(batch))
    return done


def sample_key(p: Prompt, j: int) -> str:
    """A draw's journal key: the prompt's own for the first (a one-answer journal resumes
    as it always did), `#j` after it for the others."""
    return p.key if j == 0 else f"{p.key}#{j}"


def answer_problem(text: str, finished: bool, min_chars: int = 1) -> str | None:
    """Why an answer cannot be kept (None if it can)."""
    if len(text) < min_chars:
        return "empty answer" if not text else f"answer shorter than {min_chars} characters"
    if not finished:
        return "answer cut off by the token limit (raise --max-new-tokens to keep it)"
    if looping(text):
        return "answer loops (a run of words repeats more than 4 times)"
    return None


def write_outputs(
    cfg: ReplayConfig, kept: list[dict], rejects: list[Reject], inputs: list[str], **extra: Any
) -> Manifest:
    """The chat records, the rejects and the manifest (model, settings, `extra`) of OUT."""
    manifest = Manifest(
        str(cfg.out),
        extra={"step": extra.pop("step"), "model": cfg.model, "settings": cfg.settings, **extra},
    )
    for path in inputs:
        manifest.add_input(path)
    for r in rejects:
        manifest.drop(r.reason)
    manifest.kept = write_jsonl(cfg.out, kept)
    write_rejects(cfg.out, rejects)
    manifest.write()
    return manifest


def run_replay(
    cfg: ReplayConfig,
    answer: AnswerFn,
    echo: Callable[[str], None] = print,
    check: CheckFn | None = None,
) -> dict[str, Any]:
    """Ask what the journal lacks, then write the chat records, rejects and manifest.
    A prompt with `expect:` keeps its answer only if `check` passes it (the evaluation
    suites' scorer): a small model's wrong answers, replayed, teach it its own mistakes.
    Without `check` the expectations are ignored and every answer is kept as before."""

    check_outputs(cfg.prompts + cfg.against, {"--out": cfg.out})
    prompts, rejects, kinds = select_prompts(cfg)
    if not prompts:
        raise DataError(f"no prompts left to ask from {', '.join(cfg.prompts)}")
    checked = [p for p in prompts if p.check] if check is not None else []
    for p in checked:  # a bad `expect:` or `score:` fails here, before anything is asked
        try:
            check("", p.check)
        except DataError as exc:
            raise DataError(f"{p.source}:{p.line}: {exc}") from None
    if cfg.samples < 1:
        raise DataError(f"--samples {cfg.samples}: at least 1")
    if cfg.samples > 1 and not cfg.settings.get("do_sample"):
        raise DataError(
            f"--samples {cfg.samples} with a greedy preset would ask for one answer "
            f"{cfg.samples} times; choose a sampled preset (ancestral draws from the model)"
        )
    asked = [(p, j) for p in prompts for j in range(cfg.samples)]  # a prompt's draws together
    done = ask_journaled(
        cfg, [(sample_key(p, j), p.text) for p, j in asked], answer, echo,
        kind="replay", unit="answers" if cfg.samples > 1 else "prompts",
    )  # fmt: skip
    kept, seen_answers, answered = [], {}, set()  # answered: prompts with a kept answer
    for p, j in asked:
        e = done[sample_key(p, j)]
        text = e["answer"].strip()
        why = answer_problem(text, e["finished"], cfg.min_answer_chars)
        where = f"{p.source}:{p.line}"
        # the same answer to another prompt is generic; drawn twice for one prompt, it is
        # what the model most often says there, and both draws are kept
        if why is None and seen_answers.get(normalise(text), where) != where:
            why = f"the same answer as the prompt at {seen_answers[normalise(text)]}"
        if why is None and p.check and check is not None:  # (no scorer: --no-check)
            passed, _ = check(text, p.check)
            if not passed:
                accepted = ", ".join(map(str, p.check["expect"]))
                why = f"wrong answer: none of the expected ({accepted}); not replayed"
        if why:
            rejects.append(Reject(p.source, p.line, why, {"prompt": p.text, "answer": text}))
            continue
        answered.add(p.key)
        seen_answers[normalise(text)] = where
        kept.append(
            {
                "messages": [
                    {"role": "user", "content": p.text},
                    {"role": "assistant", "content": text},
                ]
            }
        )
    kinds.subtract(p.kind for p in prompts if p.key not in answered)
    manifest = write_outputs(
        cfg, kept, rejects, cfg.prompts + cfg.against,
        step="replay",
        kinds={k: v for k, v in sorted(kinds.items()) if v > 0},
        held_out_against=list(cfg.against),
        checked=len(checked),
        samples=cfg.samples,
    )  # fmt: skip
    return {
        "out": str(cfg.out),
        "kept": manifest.kept,
        "rejected": len(rejects),
        "asked": len(prompts),
        "samples": cfg.samples,
        "checked": len(checked),
        "kinds": manifest.extra["kinds"],
    }
