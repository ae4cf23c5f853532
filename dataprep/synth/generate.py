"""Chunks -> question/answer chat records, written by a model on an OpenAI-compatible server.

For each chunk (`{"text", "doc_id", "chunk", "chunk_sha"}`), one request asks for K
pairs grounded in the chunk. The output is untrusted: `parse_pairs` keeps the pairs it
can use and rejects the rest with the raw text and the reason. Each kept pair becomes a
chat record (`{"messages": [user, assistant], ...}`) with its provenance: source
document and chunk hash, prompt name, version and hash, generator model and sampling.

The run is journaled (see `cosmosage.dataprep.synth.journal`): stop it at any point and run the same
command again to continue.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmosage.dataprep.io import (
    DataError,
    Manifest,
    Reject,
    read_jsonl,
    reason_group,
    write_jsonl,
    write_rejects,
)
from cosmosage.dataprep.shard import Shard, in_shard
from cosmosage.dataprep.synth.journal import run_journaled
from cosmosage.dataprep.synth.llm import (
    Endpoint,
    RequestFailed,
    RetryPolicy,
    Usage,
    complete,
    make_client,
    safe_command,
    scrub,
)
from cosmosage.dataprep.synth.parse import ParseError, extract_json
from cosmosage.dataprep.synth.prompts import load_prompt

SYNTH_FIELDS = {"chunk", "pairs", "doc_id"}
RAW_LIMIT = 20_000  # characters of raw model output kept with a reject
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
            raise ParseError(
                f"wrong shape: JSON object without a list of pairs (keys: {', '.join(map(str, list(obj)[:8]))})"
            )
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


def _reject(
    source: str,
    line: int,
    reason: str,
    chunk: dict,
    generator: dict,
    raw: str | None = None,
    extra: dict | None = None,
) -> dict:
    record = {
        "doc_id": chunk["doc_id"],
        "chunk": chunk["chunk"],
        "chunk_sha": chunk["chunk_sha"],
        "generator": generator,
    }
    if raw is not None:
        record["raw"] = raw[:RAW_LIMIT]
    record.update(extra or {})
    return Reject(source, line, reason, record).to_json()


def run_synth(cfg: SynthConfig, echo=print) -> dict:
    """Generate, journal and write `cfg.out` (+ rejects and manifest); return a summary."""
    if cfg.pairs < 1:
        raise DataError("--pairs must be at least 1")
    prompt = load_prompt(cfg.prompt)
    prompt.check(SYNTH_FIELDS)
    shard = Shard.parse(cfg.shard)
    generator = {
        "model": cfg.endpoint.model,
        "prompt": prompt.name,
        "prompt_version": prompt.version,
        "prompt_sha": prompt.sha,
        "pairs_asked": cfg.pairs,
        "sampling": dict(cfg.sampling),
    }

    input_rejects: list[dict] = []
    items: list[tuple[str, tuple[int, dict]]] = []
    seen: set[str] = set()
    for got in read_chunks(cfg.input, shard):
        if isinstance(got, Reject):
            input_rejects.append(got.to_json())
            continue
        lineno, chunk = got
        key = f"{chunk['chunk_sha']}:{prompt.name}"
        if key in seen:
            input_rejects.append(
                Reject(
                    cfg.input,
                    lineno,
                    "duplicate chunk: same text as an earlier chunk",
                    {"chunk_sha": chunk["chunk_sha"]},
                ).to_json()
            )
            continue
        seen.add(key)
        items.append((key, (lineno, chunk)))

    usage = Usage()
    client = make_client(cfg.endpoint)
    rng = random.Random()

    async def work(key: str, payload: tuple[int, dict]) -> dict:
        lineno, chunk = payload
        gen = {**generator}
        messages = prompt.messages(chunk=chunk["text"], pairs=cfg.pairs, doc_id=chunk["doc_id"])
        try:
            c = await complete(client, cfg.endpoint, messages, cfg.sampling, cfg.retry, usage, rng)
        except RequestFailed as exc:
            return {
                "failed": "request",
                "records": [],
                "rejects": [
                    _reject(cfg.input, lineno, f"request failed: {exc.reason}", chunk, gen)
                ],
            }
        text = scrub(c.text, cfg.endpoint)
        used = {
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "attempts": c.attempts,
        }
        try:
            obj, notes = extract_json(text, c.finish_reason)
            pairs, problems = parse_pairs(obj, cfg.pairs)
        except ParseError as exc:
            return {
                "failed": "parse",
                "records": [],
                "usage": used,
                "rejects": [
                    _reject(
                        cfg.input,
                        lineno,
                        exc.reason,
                        chunk,
                        gen,
                        text,
                        {"finish_reason": c.finish_reason},
                    )
                ],
            }
        source = {
            "doc_id": chunk["doc_id"],
            "chunk": chunk["chunk"],
            "chunk_sha": chunk["chunk_sha"],
        }
        records = [
            {
                "messages": [
                    {"role": "user", "content": p["question"]},
                    {"role": "assistant", "content": p["answer"]},
                ],
                "id": f"{chunk['chunk_sha']}:{prompt.tag}:{k}",
                "source": source,
                "generator": gen,
            }
            for k, p in enumerate(pairs)
        ]
        rejects = [_reject(cfg.input, lineno, reason, chunk, gen, text) for reason in problems]
        return {"records": records, "rejects": rejects, "usage": used, "notes": notes}

    header = {
        "kind": "synth",
        "input": str(cfg.input),
        "prompt": prompt.provenance(),
        "generator": cfg.endpoint.public(),
    }
    result = run_journaled(
        cfg.out,
        header,
        items,
        work,
        prompt_version=prompt.version,
        policy=cfg.prompt_change,
        retry_failed=cfg.retry_failed,
        concurrency=cfg.concurrency,
        desc="synth",
        usage=usage,
        clients=[client],
        echo=echo,
    )

    records: list[dict] = []
    rejects = list(input_rejects)
    total_tokens = Counter()
    for key, _ in items:
        entry = result.latest[key]
        records.extend(entry.get("records", []))
        rejects.extend(entry.get("rejects", []))
        for name in ("prompt_tokens", "completion_tokens"):
            total_tokens[name] += entry.get("usage", {}).get(name, 0)

    manifest = Manifest(
        str(cfg.out),
        command=safe_command(),
        extra={
            "step": "synth",
            "prompt": {**prompt.provenance(), "path": prompt.path},
            "generator": {
                **cfg.endpoint.public(),
                "sampling": cfg.sampling,
                "pairs_asked": cfg.pairs,
                "concurrency": cfg.concurrency,
            },
            "chunks": len(items),
            "shard": cfg.shard,
            "usage_this_run": usage.to_json(),
            "tokens_all_runs": dict(total_tokens),
            "resume": result.to_json(),
        },
    )
    manifest.add_input(cfg.input)
    manifest.kept = write_jsonl(cfg.out, records)
    manifest.dropped.update(reason_group(r["reason"]) for r in rejects)
    write_rejects(
        cfg.out, (Reject(r["source"], r["line"], r["reason"], r.get("record")) for r in rejects)
    )
    manifest.write()
    return {
        "output": str(cfg.out),
        "records": manifest.kept,
        "chunks": len(items),
        "rejects": len(rejects),
        "resumed": result.resumed,
        "requests": usage.requests,
        "tokens": dict(total_tokens),
    }
