"""Chunks -> question/answer chat records, written by a model on an OpenAI-compatible server.

For each chunk (`{"text", "doc_id", "chunk", "chunk_sha"}`), one request asks for K
pairs grounded in the chunk. The output is untrusted: `parse_pairs` keeps the pairs it
can use and rejects the rest with the raw text and the reason. Each kept pair becomes a
chat record (`{"messages": [user, assistant], ...}`) with its provenance: source
document and chunk hash, prompt name, version and hash, generator model and sampling.

Each kept pair records how grounded it is: the share of the answer's content words
(and of the question's) that occur in the chunk. With a minimum (`--min-grounding`, or
the prompt's `min_grounding`), pairs under it are refused as `ungrounded`: a small
generator's commonest failure is an answer from its own head rather than the chunk.

The run is journaled (see `cosmosage.dataprep.synth.jobs`): stop it at any point and run the same
command again to continue.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmosage.dataprep.io import read_jsonl
from cosmosage.dataprep.records import DataError, Reject
from cosmosage.dataprep.shard import Shard, in_shard, reject_key
from cosmosage.dataprep.synth.jobs import Answer, JournaledJob, Outcome
from cosmosage.dataprep.synth.llm import Endpoint, RetryPolicy
from cosmosage.dataprep.synth.parse import ParseError

SYNTH_FIELDS = {"chunk", "pairs", "doc_id"}
_PAIR_LISTS = ("pairs", "qa", "qa_pairs", "questions", "items", "data")

# function words and question words, which say nothing about where an answer came from
_STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be been before being
    between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just
    me more most my no nor not now of off on once only or other our ours out over own
    same she should so some such than that the their theirs them then there these they
    this those through to too under until up very was we were what when where which while
    who whom why will with would you your yours one two use used using given called known
    describe described explain following question answer text passage paper authors yes""".split()
)
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z$\\(])")


_SUFFIXES = ("ing", "ed", "es", "s", "e")


def _stem(word: str) -> str:
    """A crude stem, enough to match 'measured' with 'measures' and 'measure'."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) >= 5 else word


def content_words(text: str) -> set[str]:
    """Stems of the lower-case words that carry content: not function words, three
    letters or more or holding a digit."""
    out = set()
    for w in _WORD.findall(text.lower()):
        if w in _STOPWORDS or (len(w) < 3 and not any(c.isdigit() for c in w)):
            continue
        out.add(w if w.isdigit() else _stem(w))
    return out


def grounding(text: str, chunk_words: set[str]) -> float | None:
    """The share of `text`'s content words found among the chunk's; None if it has none."""
    words = content_words(text)
    if not words:
        return None
    return round(len(words & chunk_words) / len(words), 3)


def ground_pair(pair: dict, chunk_words: set[str], minimum: float) -> tuple[dict, str | None]:
    """The pair's grounding scores, and why it is refused under `minimum` (None if kept)."""
    scores = {
        "answer": grounding(pair["answer"], chunk_words),
        "question": grounding(pair["question"], chunk_words),
    }
    if minimum <= 0:
        return scores, None
    if scores["answer"] is None:
        return scores, "ungrounded: the answer has no content words"
    if not scores["question"]:
        return scores, "ungrounded: the question shares no content word with the chunk"
    if scores["answer"] < minimum:
        return scores, (
            f"ungrounded: {scores['answer']:.0%} of the answer's content words are in the "
            f"chunk (< {minimum:.0%})"
        )
    return scores, None


def read_chunks(path: str | Path, shard: Shard | None = None):
    """Yield (line, chunk) or Reject for each line of a chunk file, skipping other shards."""
    for lineno, rec in read_jsonl(path):
        if isinstance(rec, Reject):
            if in_shard(reject_key(rec), shard):
                yield rec
            continue
        text = rec.get("text")
        if not isinstance(text, str) or not text.strip():
            bad = Reject(str(path), lineno, "bad chunk: no 'text'", rec)
            if in_shard(reject_key(bad), shard):
                yield bad
            continue
        sha = rec.get("chunk_sha") or hashlib.sha256(text.encode()).hexdigest()[:16]
        chunk = {
            "text": text,
            "doc_id": str(rec.get("doc_id", Path(path).stem)),
            "chunk": rec.get("chunk"),
            "chunk_sha": sha,
        }
        if in_shard(sha, shard):
            yield lineno, chunk


def _field(d: dict, *names: str) -> Any:
    lower = {str(k).lower(): v for k, v in d.items()}
    for n in names:
        if n in lower:
            return lower[n]
    return None


def parse_pairs(obj: Any, k: int) -> tuple[list[dict], list[str]]:
    """Question/answer pairs from parsed model output, and a reason for each one refused.

    Accepts {"pairs": [...]} (or qa, questions, items), a bare list, or one pair object.
    At most `k` pairs are kept; extra ones are refused as such.
    """
    if isinstance(obj, dict):
        items = next(
            (
                obj[key]
                for key in obj
                if str(key).lower() in _PAIR_LISTS and isinstance(obj[key], list)
            ),
            None,
        )
        if items is None:
            items = [obj] if _field(obj, "question", "q") is not None else None
        if items is None:
            keys = ", ".join(map(str, list(obj)[:8]))
            raise ParseError(f"wrong shape: JSON object without a list of pairs (keys: {keys})")
    elif isinstance(obj, list):
        items = obj
    else:
        raise ParseError("wrong shape: expected an object or a list")
    pairs, problems = [], []
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            problems.append(f"bad pair: item {i} is not an object")
            continue
        q, a = _field(item, "question", "q"), _field(item, "answer", "a")
        if not isinstance(q, str) or not q.strip():
            problems.append(f"bad pair: item {i} has no question")
            continue
        if not isinstance(a, str) or not a.strip():
            problems.append(f"bad pair: item {i} has no answer")
            continue
        if q.strip() == a.strip():
            problems.append(f"bad pair: item {i} answers with its own question")
            continue
        if len(pairs) >= k:
            problems.append(f"extra pair: item {i} beyond the {k} asked for")
            continue
        pairs.append({"question": q.strip(), "answer": a.strip()})
    if not pairs:
        raise ParseError(
            f"no usable pairs: {len(items)} item(s), none with a question and an answer"
        )
    return pairs, problems


@dataclass
class SynthConfig:
    input: str
    out: str
    endpoint: Endpoint
    prompt: str = "synth_qa"
    pairs: int = 3
    sampling: dict = field(default_factory=dict)  # over the prompt's and the defaults
    min_grounding: float | None = None  # None: the prompt's `min_grounding`, else 0 (off)
    tries: int = 1  # ask again for a chunk that yielded no kept pair, this many times in all
    concurrency: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    prompt_change: str = "stop"
    retry_failed: bool = False
    shard: str | None = None


class SynthJob(JournaledJob[SynthConfig]):
    """One item per distinct chunk (under one prompt name); its entry holds the chat
    records made from the answer and the rejects, each carrying its provenance."""

    kind = "synth"
    fields = SYNTH_FIELDS
    labels = {"question": "question", "q": "question", "answer": "answer", "a": "answer"}
    default_sampling = {"temperature": 0.7, "max_tokens": 1024}

    def __init__(self, cfg: SynthConfig) -> None:
        if cfg.pairs < 1:
            raise DataError("--pairs must be at least 1")
        if cfg.tries < 1:
            raise DataError("--tries must be at least 1")
        if cfg.min_grounding is not None and not 0 <= cfg.min_grounding <= 1:
            raise DataError(f"--min-grounding must be a share from 0 to 1, got {cfg.min_grounding}")
        super().__init__(cfg, [cfg.endpoint])
        self.tries = cfg.tries
        self.min_grounding = (
            cfg.min_grounding
            if cfg.min_grounding is not None
            else (self.prompt.min_grounding or 0.0)
        )
        self.generator = {
            "model": cfg.endpoint.model,
            "prompt": self.prompt.name,
            "prompt_version": self.prompt.version,
            "prompt_sha": self.prompt.sha,
            "pairs_asked": cfg.pairs,
            "sampling": dict(self.sampling),
        }
        seen: set[str] = set()
        for got in read_chunks(cfg.input, Shard.parse(cfg.shard)):
            if isinstance(got, Reject):
                self.input_rejects.append(got.to_json())
                continue
            lineno, chunk = got
            key = f"{chunk['chunk_sha']}:{self.prompt.name}"
            if key in seen:
                reason = "duplicate chunk: same text as an earlier chunk"
                self.input_rejects.append(
                    Reject(cfg.input, lineno, reason, {"chunk_sha": chunk["chunk_sha"]}).to_json()
                )
                continue
            seen.add(key)
            self.items.append((key, (lineno, chunk)))

    def header(self) -> dict:
        return {"generator": self.cfg.endpoint.public()}

    def request(self, payload: tuple[int, dict]) -> tuple[int, list[dict]]:
        _, chunk = payload
        text = chunk.get("shown", chunk["text"])
        values = {"chunk": text, "pairs": self.cfg.pairs, "doc_id": chunk["doc_id"]}
        return 0, self.prompt.messages(**values)

    def retry_payload(self, payload: tuple[int, dict], n: int) -> tuple[int, dict]:
        """Try n shows the chunk from a later sentence on (n/tries of the way in), so a
        greedy server writes something else and a small model reads a shorter passage;
        grounding is still checked against the whole chunk."""
        lineno, chunk = payload
        sentences = _SENTENCE_END.split(chunk["text"])
        start = round(len(sentences) * n / self.tries)
        if len(sentences) < 2 or start < 1:
            return payload
        return lineno, {**chunk, "shown": " ".join(sentences[start:])}

    def _reject(self, payload: tuple[int, dict], reason: str, **extra: Any) -> dict:
        lineno, chunk = payload
        record = {
            "doc_id": chunk["doc_id"],
            "chunk": chunk["chunk"],
            "chunk_sha": chunk["chunk_sha"],
            "generator": self.generator,
            **extra,
        }
        return Reject(self.cfg.input, lineno, reason, record).to_json()

    def answer(self, payload: tuple[int, dict], answer: Answer) -> dict:
        _, chunk = payload
        pairs, problems = parse_pairs(answer.obj, self.cfg.pairs)
        source = {k: chunk[k] for k in ("doc_id", "chunk", "chunk_sha")}
        chunk_words = content_words(chunk["text"])
        records = []
        for k, p in enumerate(pairs):
            scores, refused = ground_pair(p, chunk_words, self.min_grounding)
            if refused:
                problems.append(f"{refused} (pair {k + 1})")
                continue
            records.append(
                {
                    "messages": [
                        {"role": "user", "content": p["question"]},
                        {"role": "assistant", "content": p["answer"]},
                    ],
                    "id": f"{chunk['chunk_sha']}:{self.prompt.tag}:{k}",
                    "source": source,
                    "grounding": scores,
                    "generator": self.generator,
                }
            )
        rejects = [self._reject(payload, reason, raw=answer.raw) for reason in problems]
        return {"records": records, "rejects": rejects, "notes": answer.notes}

    def failure(self, payload: tuple[int, dict], reason: str, answer: Answer | None) -> dict:
        extra = {} if answer is None else {"raw": answer.raw, "finish_reason": answer.finish_reason}
        return {"records": [], "rejects": [self._reject(payload, reason, **extra)]}

    def try_again(self, got: dict) -> bool:
        return not got.get("records")

    def combine_tries(self, tries: list[dict]) -> dict:
        """The last try's records; every try's rejects (earlier ones marked with their
        try), and the tokens of all of them."""
        if len(tries) == 1:
            return tries[0]
        last = dict(tries[-1])
        rejects = []
        for n, got in enumerate(tries, start=1):
            for r in got.get("rejects", []):
                r = {**r, "record": {**r.get("record", {}), "try": n}}
                rejects.append(r)
        usage: Counter = Counter()
        for got in tries:
            usage.update({k: v for k, v in got.get("usage", {}).items() if isinstance(v, int)})
        last.update(rejects=rejects, usage=dict(usage), tries=len(tries))
        return last

    def finish(self, latest: dict[str, dict]) -> Outcome:
        records: list[dict] = []
        rejects: list[dict] = []
        tokens: Counter = Counter()
        for key, _ in self.items:
            entry = latest[key]
            records.extend(entry.get("records", []))
            rejects.extend(entry.get("rejects", []))
            for name in ("prompt_tokens", "completion_tokens"):
                tokens[name] += entry.get("usage", {}).get(name, 0)
        cfg = self.cfg
        manifest = {
            "generator": {
                **cfg.endpoint.public(),
                "sampling": self.sampling,
                "pairs_asked": cfg.pairs,
                "concurrency": cfg.concurrency,
            },
            "chunks": len(self.items),
            "chunks_with_pairs": sum(bool(latest[key].get("records")) for key, _ in self.items),
            "min_grounding": self.min_grounding,
            "tries_allowed": cfg.tries,
            "requests_all_runs": sum(latest[key].get("tries", 1) for key, _ in self.items),
            "shard": cfg.shard,
            "tokens_all_runs": dict(tokens),
        }
        return Outcome(records, rejects, manifest)


def run_synth(cfg: SynthConfig, echo: Callable[[str], None] = print) -> dict:
    """Generate, journal and write `cfg.out` (+ rejects and manifest); return a summary."""
    job = SynthJob(cfg)
    run = job.run(echo)
    return {
        "output": str(cfg.out),
        "records": run.kept,
        "chunks": len(job.items),
        "chunks_with_pairs": run.outcome.manifest["chunks_with_pairs"],
        "rejects": run.rejects,
        "resumed": run.resumed,
        "requests": run.usage.requests,
        "tokens": run.outcome.manifest["tokens_all_runs"],
    }
