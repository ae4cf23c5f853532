"""EntiGraph-style rewrites of a small corpus (`data entigraph`), for continued pretraining.

Yang et al. (2024, "Synthetic continued pretraining") turn a small corpus into a much
larger and more varied one: a model lists the entities of each document, then writes a
passage on how each pair of them is related, drawing only on the document. The rewrites
restate the same facts from many sides, which is what a model needs to answer about
them; the paper recovers most of the gain of having the documents in context.

Two journaled steps, each resumable on its own (`jobs.JournaledJob`):

1. **entities**: one request per chunk of `data corpus` output; the reply is read as
   `Entity: ...` lines. An entity that does not occur in the chunk is dropped (counted
   in the manifest); at most `max_entities` are kept, in the order given. The chunks
   with their entities go to `OUT.entities.jsonl`.
2. **relations**: one request per pair of a chunk's entities (at most `max_pairs` per
   chunk, a seeded choice); the reply is a passage. It is refused when it does not name
   both entities, loops, or is not grounded in the chunk (less than `min_grounding` of
   its content words occur there: the small generator's commonest failure is a passage
   from its own head). Kept passages are completion records (`{"text": ...}`) in OUT.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cosmosage.dataprep.io import read_jsonl
from cosmosage.dataprep.records import DataError, Reject
from cosmosage.dataprep.synth.generate import content_words, grounding, read_chunks
from cosmosage.dataprep.synth.jobs import Answer, Outcome, RecordsJob
from cosmosage.dataprep.synth.llm import Endpoint, RetryPolicy
from cosmosage.dataprep.synth.parse import ParseError
from cosmosage.dataprep.synth.replay import looping


@dataclass
class EntiGraphConfig:
    input: str  # chunk JSONL from `data corpus`
    out: str
    endpoint: Endpoint
    prompt: str = "entigraph_entities"
    relation_prompt: str = "entigraph_relation"
    max_entities: int = 8
    max_pairs: int = 20  # per chunk
    min_grounding: float = 0.6
    seed: int = 0
    sampling: dict = field(default_factory=dict)  # for both steps, over each prompt's own
    concurrency: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    prompt_change: str = "stop"
    retry_failed: bool = False


def entities_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".entities.jsonl")


def _clean(entity: str) -> str:
    return " ".join(entity.strip().strip("\"'“”*.,;").split())


def in_text(entity: str, text: str) -> bool:
    return entity.lower() in " ".join(text.lower().split())


class EntitiesJob(RecordsJob[EntiGraphConfig]):
    """Step 1: the entities of each chunk."""

    kind = "entities"
    fields = {"chunk", "doc_id"}
    labels = {"entity": "entity"}
    default_sampling = {"temperature": 0.0, "max_tokens": 160}

    def __init__(self, cfg: EntiGraphConfig, out: Path) -> None:
        if cfg.max_entities < 2:
            raise DataError("--max-entities must be at least 2 (a relation needs a pair)")
        if cfg.max_pairs < 1:
            raise DataError("--max-pairs must be at least 1")
        if not 0 <= cfg.min_grounding <= 1:
            raise DataError(f"--min-grounding must be a share from 0 to 1, got {cfg.min_grounding}")
        super().__init__(replace(cfg, out=str(out)), [cfg.endpoint])
        seen: set[str] = set()
        for got in read_chunks(cfg.input):
            if isinstance(got, Reject):
                self.input_rejects.append(got.to_json())
                continue
            lineno, chunk = got
            if chunk["chunk_sha"] in seen:
                continue
            seen.add(chunk["chunk_sha"])
            self.items.append((chunk["chunk_sha"], (lineno, chunk)))
        if not self.items:
            raise DataError(f"{cfg.input}: no chunks with text")

    def header(self) -> dict:
        return {"generator": self.cfg.endpoint.public()}

    def request(self, payload: tuple[int, dict]) -> tuple[int, list[dict]]:
        _, chunk = payload
        return 0, self.prompt.messages(chunk=chunk["text"], doc_id=chunk["doc_id"])

    def reject(self, payload: tuple[int, dict], reason: str, **extra: Any) -> dict:
        lineno, chunk = payload
        record = {"doc_id": chunk["doc_id"], "chunk_sha": chunk["chunk_sha"], **extra}
        return Reject(self.cfg.input, lineno, reason, record).to_json()

    def answer(self, payload: tuple[int, dict], answer: Answer) -> dict:
        _, chunk = payload
        named, outside = [], []
        for item in answer.obj:
            entity = _clean(item.get("entity", ""))
            if not entity or entity.lower() in {e.lower() for e in named}:
                continue
            (named if in_text(entity, chunk["text"]) else outside).append(entity)
        kept = named[: self.cfg.max_entities]
        if len(kept) < 2:
            raise ParseError(f"too few entities: {len(kept)} of those listed occur in the chunk")
        record = {**chunk, "entities": kept}
        return {"records": [record], "rejects": [], "not_in_chunk": outside}

    def finish(self, latest: dict[str, dict]) -> Outcome:
        kept, rejects = self.collect(latest)
        outside = sum(len(latest[key].get("not_in_chunk", [])) for key, _ in self.items)
        manifest = {
            "generator": {**self.cfg.endpoint.public(), "sampling": self.sampling},
            "chunks": len(self.items),
            "entities": sum(len(r["entities"]) for r in kept),
            "entities_not_in_chunk": outside,
            "max_entities": self.cfg.max_entities,
        }
        return Outcome(kept, rejects, manifest)


def pairs_of(chunk: dict, max_pairs: int, seed: int) -> list[tuple[str, str]]:
    """At most `max_pairs` pairs of the chunk's entities: every pair when there are few
    enough, else a choice seeded by the chunk (the same on every run)."""
    pairs = list(itertools.combinations(chunk["entities"], 2))
    if len(pairs) <= max_pairs:
        return pairs
    rng = random.Random(f"{seed}:{chunk['chunk_sha']}")
    chosen = sorted(rng.sample(range(len(pairs)), max_pairs))
    return [pairs[i] for i in chosen]


class RelationsJob(RecordsJob[EntiGraphConfig]):
    """Step 2: a passage on each pair of a chunk's entities."""

    kind = "relations"
    fields = {"chunk", "a", "b", "doc_id"}
    default_sampling = {"temperature": 0.0, "max_tokens": 200}

    def __init__(self, cfg: EntiGraphConfig, entities: Path) -> None:
        super().__init__(
            replace(cfg, input=str(entities), prompt=cfg.relation_prompt), [cfg.endpoint]
        )
        self.generator = {
            "model": cfg.endpoint.model,
            "prompt": self.prompt.tag,
            "sampling": dict(self.sampling),
        }
        for lineno, chunk in read_jsonl(entities):
            if isinstance(chunk, Reject):
                self.input_rejects.append(chunk.to_json())
                continue
            for a, b in pairs_of(chunk, cfg.max_pairs, cfg.seed):
                key = hashlib.sha256(f"{chunk['chunk_sha']}\x00{a}\x00{b}".encode()).hexdigest()[
                    :16
                ]
                self.items.append((key, (lineno, chunk, a, b)))

    def request(self, payload: tuple[int, dict, str, str]) -> tuple[int, list[dict]]:
        _, chunk, a, b = payload
        return 0, self.prompt.messages(chunk=chunk["text"], a=a, b=b, doc_id=chunk["doc_id"])

    def reject(self, payload: tuple[int, dict, str, str], reason: str, **extra: Any) -> dict:
        lineno, chunk, a, b = payload
        record = {
            "doc_id": chunk["doc_id"],
            "chunk_sha": chunk["chunk_sha"],
            "entities": [a, b],
            **extra,
        }
        return Reject(self.cfg.input, lineno, reason, record).to_json()

    def answer(self, payload: tuple[int, dict, str, str], answer: Answer) -> dict:
        _, chunk, a, b = payload
        text = answer.obj.strip()
        missing = [e for e in (a, b) if not in_text(e, text)]
        if missing:
            problem = f"off the pair: the passage does not name {missing[0]!r}"
        elif looping(text):
            problem = "looping: a run of words repeats"
        else:
            share = grounding(text, content_words(chunk["text"]))
            problem = (
                None
                if share is not None and share >= self.cfg.min_grounding
                else f"ungrounded: {share or 0:.0%} of the passage's content words are in the chunk "
                f"(< {self.cfg.min_grounding:.0%})"
            )
        if problem:
            return {"records": [], "rejects": [self.reject(payload, problem, raw=answer.raw)]}
        record = {
            "text": text,
            "doc_id": chunk["doc_id"],
            "chunk_sha": chunk["chunk_sha"],
            "entities": [a, b],
            "generator": self.generator,
        }
        return {"records": [record], "rejects": []}

    def finish(self, latest: dict[str, dict]) -> Outcome:
        kept, rejects = self.collect(latest)
        manifest = {
            "pairs": len(self.items),
            "max_pairs_per_chunk": self.cfg.max_pairs,
            "min_grounding": self.cfg.min_grounding,
            "seed": self.cfg.seed,
        }
        return Outcome(kept, rejects, manifest)


def run_entigraph(cfg: EntiGraphConfig, echo: Callable[[str], None] = print) -> dict:
    """Entities, then relations; return a summary."""
    where = entities_path(cfg.out)
    listed = EntitiesJob(cfg, where).run(echo)
    related_job = RelationsJob(cfg, where)
    related = related_job.run(echo)
    kept = related.outcome.kept
    return {
        "output": str(cfg.out),
        "entities": str(where),
        "chunks": listed.outcome.manifest["chunks"],
        "chunks_with_entities": listed.kept,
        "entities_kept": listed.outcome.manifest["entities"],
        "pairs": len(related_job.items),
        "passages": len(kept),
        "words": sum(len(r["text"].split()) for r in kept),
        "refused": dict(Counter(r["reason"].split(":", 1)[0] for r in related.outcome.rejects)),
        "requests": listed.usage.requests + related.usage.requests,
        "resumed": listed.resumed + related.resumed,
    }
