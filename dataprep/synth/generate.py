"""Chunks -> question/answer chat records, written by a model on an OpenAI-compatible server.

For each chunk (`{"text", "doc_id", "chunk", "chunk_sha"}`), one request asks for K
pairs grounded in the chunk. The output is untrusted: `parse_pairs` keeps the pairs it
can use and rejects the rest with the raw text and the reason. Each kept pair becomes a
chat record (`{"messages": [user, assistant], ...}`) with its provenance: source
document and chunk hash, prompt name, version and hash, generator model and sampling.

The run is journaled (see `cosmosage.dataprep.synth.jobs`): stop it at any point and run the same
command again to continue.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmosage.dataprep.io import DataError, Reject, read_jsonl
from cosmosage.dataprep.shard import Shard, in_shard
from cosmosage.dataprep.synth.jobs import Answer, JournaledJob, Outcome
from cosmosage.dataprep.synth.llm import Endpoint, RetryPolicy
from cosmosage.dataprep.synth.parse import ParseError

SYNTH_FIELDS = {"chunk", "pairs", "doc_id"}
_PAIR_LISTS = ("pairs", "qa", "qa_pairs", "questions", "items", "data")


def read_chunks(path: str | Path, shard: Shard | None = None):
    """Yield (line, chunk) or Reject for each line of a chunk file, skipping other shards."""
    for lineno, rec in read_jsonl(path):
        if isinstance(rec, Reject):
            yield rec
            continue
        text = rec.get("text")
        if not isinstance(text, str) or not text.strip():
            yield Reject(str(path), lineno, "bad chunk: no 'text'", rec)
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
    sampling: dict = field(default_factory=lambda: {"temperature": 0.7, "max_tokens": 1024})
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

    def __init__(self, cfg: SynthConfig) -> None:
        if cfg.pairs < 1:
            raise DataError("--pairs must be at least 1")
        super().__init__(cfg, [cfg.endpoint])
        self.generator = {
            "model": cfg.endpoint.model,
            "prompt": self.prompt.name,
            "prompt_version": self.prompt.version,
            "prompt_sha": self.prompt.sha,
            "pairs_asked": cfg.pairs,
            "sampling": dict(cfg.sampling),
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
        values = {"chunk": chunk["text"], "pairs": self.cfg.pairs, "doc_id": chunk["doc_id"]}
        return 0, self.prompt.messages(**values)

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
        records = [
            {
                "messages": [
                    {"role": "user", "content": p["question"]},
                    {"role": "assistant", "content": p["answer"]},
                ],
                "id": f"{chunk['chunk_sha']}:{self.prompt.tag}:{k}",
                "source": source,
                "generator": self.generator,
            }
            for k, p in enumerate(pairs)
        ]
        rejects = [self._reject(payload, reason, raw=answer.raw) for reason in problems]
        return {"records": records, "rejects": rejects, "notes": answer.notes}

    def failure(self, payload: tuple[int, dict], reason: str, answer: Answer | None) -> dict:
        extra = {} if answer is None else {"raw": answer.raw, "finish_reason": answer.finish_reason}
        return {"records": [], "rejects": [self._reject(payload, reason, **extra)]}

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
                "sampling": cfg.sampling,
                "pairs_asked": cfg.pairs,
                "concurrency": cfg.concurrency,
            },
            "chunks": len(self.items),
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
        "rejects": run.rejects,
        "resumed": run.resumed,
        "requests": run.usage.requests,
        "tokens": run.outcome.manifest["tokens_all_runs"],
    }
