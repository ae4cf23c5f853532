"""The shell of a journaled, model-driven command (`data synth`, `data grade`).

A command subclasses `JournaledJob` and states only what is its own: the placeholders
its prompt may use, its items (journal key and payload), how an item becomes a request,
what a usable answer or a failure puts in the journal, and how the finished entries
become kept records, rejects and manifest fields. `run` does the rest: the journal and
its prompt-version rules (see `journal`), requests with retries through a bounded pool
behind a progress bar, and the output, rejects and manifest.
"""

from __future__ import annotations

import asyncio
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from cosmosage.dataprep.io import Manifest, check_outputs, write_jsonl, write_rejects
from cosmosage.dataprep.records import DataError, Reject
from cosmosage.dataprep.steps import write_failed_rejects
from cosmosage.dataprep.synth.journal import Journal, journal_path, plan_resume, unversioned_edit
from cosmosage.dataprep.synth.llm import (
    Endpoint,
    Progress,
    RequestFailed,
    RetryPolicy,
    Usage,
    complete,
    make_client,
    run_pool,
    safe_command,
    scrub,
)
from cosmosage.dataprep.synth.parse import ParseError, extract_output
from cosmosage.dataprep.synth.prompts import load_prompt

RAW_LIMIT = 20_000  # characters of raw model output kept with a reject


class JobConfig(Protocol):
    """The settings every journaled model job has."""

    input: str
    out: str
    prompt: str
    sampling: dict
    concurrency: int
    retry: RetryPolicy
    prompt_change: str
    retry_failed: bool


C = TypeVar("C", bound=JobConfig)


@dataclass
class Answer:
    """A model's reply to one item (an echoed API key scrubbed) and its first JSON value."""

    text: str
    finish_reason: str | None
    obj: Any = None
    notes: list[str] = field(default_factory=list)

    @property
    def raw(self) -> str:
        """The text as it is kept with a reject."""
        return self.text[:RAW_LIMIT]


@dataclass
class Outcome:
    """Kept records, rejects (`Reject.to_json()` dicts) and the command's manifest fields."""

    kept: list[dict]
    rejects: list[dict]
    manifest: dict


@dataclass
class JobRun:
    """What a run did, for the command's summary."""

    outcome: Outcome
    usage: Usage
    resumed: int  # items finished by earlier runs
    kept: int
    rejects: int


class JournaledJob(ABC, Generic[C]):
    """One model request per item, journaled so that a killed run resumes exactly once.

    A subclass sets `kind` (the journal's kind, the progress label and the manifest's
    step) and `fields`, fills `items` and `input_rejects` when it is made, and says
    what is its own in the methods below.
    """

    kind: ClassVar[str]
    fields: ClassVar[set[str]]  # the placeholders its prompt may use
    labels: ClassVar[dict[str, str]] = {}  # label -> field, for prompts with `output: lines`
    default_sampling: ClassVar[dict] = {}  # under the prompt's `sampling` and cfg.sampling
    tries: int = 1  # requests per item at most (see `try_again`)

    def __init__(self, cfg: C, endpoints: list[Endpoint]) -> None:
        check_outputs([cfg.input], {"--out": cfg.out})
        self.cfg = cfg
        self.endpoints = endpoints
        self.prompt = load_prompt(cfg.prompt)
        self.prompt.check(self.fields)
        # what each request sends: the command's defaults, then what the prompt was
        # written for, then what the user asked for
        self.sampling = {**self.default_sampling, **self.prompt.sampling, **cfg.sampling}
        self.items: list[tuple[str, Any]] = []  # (journal key, payload); keys unique
        self.input_rejects: list[dict] = []  # input lines refused before any request

    def header(self) -> dict:
        """Journal header fields besides kind, input and prompt."""
        return {}

    def sources(self) -> list[tuple[Path, dict]]:
        """Inputs the manifest lists after `cfg.input`, each with its extra fields."""
        return []

    @abstractmethod
    def request(self, payload: Any) -> tuple[int, list[dict]]:
        """Whom to ask about one item (an index into `endpoints`), and the messages."""

    @abstractmethod
    def answer(self, payload: Any, answer: Answer) -> dict:
        """The journal entry made from a usable answer; raise ParseError for an unusable one."""

    @abstractmethod
    def failure(self, payload: Any, reason: str, answer: Answer | None) -> dict:
        """The journal entry of an item that failed: its request (`answer` is None), or its
        answer (`reason` from ParseError)."""

    def try_again(self, got: dict) -> bool:
        """Whether an answer that came back is worth asking for again (up to `tries`)."""
        return False

    def retry_payload(self, payload: Any, n: int) -> Any:
        """What try `n` (1, 2, ...) asks about; a greedy server answers the same request
        the same way, so a retry should differ in what it shows."""
        return payload

    def combine_tries(self, tries: list[dict]) -> dict:
        """The journal entry made from the answers to one item's tries (the last decides)."""
        return tries[-1]

    @abstractmethod
    def finish(self, latest: dict[str, dict]) -> Outcome:
        """What the finished entry of every key makes (side files are written here)."""

    def run(self, echo: Callable[[str], None] = print) -> JobRun:
        """Do what the journal lacks, then write the output, rejects and manifest."""
        cfg, usage = self.cfg, Usage()
        latest, resume = self.journaled(usage, echo)
        self.refuse_no_answer(latest)
        outcome = self.finish(latest)
        rejects = self.input_rejects + outcome.rejects
        manifest = Manifest(
            str(cfg.out),
            command=safe_command(),
            extra={
                "step": self.kind,
                "prompt": {**self.prompt.provenance(), "path": self.prompt.path},
                **outcome.manifest,
                "usage_this_run": usage.to_json(),
                "resume": resume,
            },
        )
        manifest.add_input(cfg.input)
        for path, info in self.sources():
            manifest.add_input(path, **info)
        manifest.kept = write_jsonl(cfg.out, outcome.kept)
        for r in rejects:
            manifest.drop(r["reason"])
        write_rejects(
            cfg.out, (Reject(r["source"], r["line"], r["reason"], r.get("record")) for r in rejects)
        )
        manifest.write()
        return JobRun(
            outcome, usage, resume["items_from_earlier_runs"], manifest.kept, len(rejects)
        )

    def refuse_no_answer(self, latest: dict[str, dict]) -> None:
        """Every item's request failed: no server answered (not there, a wrong --base-url
        or key). That is an error, not an empty output: the earlier output stays, and
        the reasons go to `failed_rejects_path`."""
        if not latest or any(e.get("failed") != "request" for e in latest.values()):
            return
        rejects = [
            Reject(r["source"], r["line"], r["reason"])
            for e in latest.values()
            for r in e.get("rejects") or [{"source": str(self.cfg.input), "line": None, **e}]
        ]
        failed = write_failed_rejects(self.cfg.out, rejects)
        why = rejects[0].reason if rejects else "request failed"
        urls = ", ".join(sorted({e.public()["base_url"] for e in self.endpoints}))
        raise DataError(
            f"{self.cfg.out}: no answer from {urls}: "
            f"{f'all {len(latest)} requests' if len(latest) > 1 else 'the one request'} failed "
            f"({why}; reasons in {failed}). Start the server or fix --base-url, then run the "
            "same command again with --retry-failed"
        )

    async def ask_once(
        self, clients: list, payload: Any, sampling: dict, usage: Usage, rng: random.Random
    ) -> dict:
        """One request for an item and what its answer (or failure) puts in the journal."""
        i, messages = self.request(payload)
        try:
            c = await complete(
                clients[i], self.endpoints[i], messages, sampling, self.cfg.retry, usage, rng
            )
        except RequestFailed as exc:
            failed = self.failure(payload, f"request failed: {exc.reason}", None)
            return {"failed": "request", **failed}
        used = {
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "attempts": c.attempts,
        }
        answer = Answer(scrub(c.text, self.endpoints[i]), c.finish_reason)
        try:
            answer.obj, answer.notes = extract_output(
                self.prompt.output, answer.text, answer.finish_reason, self.labels
            )
            got = self.answer(payload, answer)
        except ParseError as exc:
            got = {"failed": "parse", **self.failure(payload, exc.reason, answer)}
        return {**got, "usage": used}

    def journaled(self, usage: Usage, echo: Callable[[str], None]) -> tuple[dict, dict]:
        """Skip what the journal says is done, ask about the rest, journal each entry as it
        comes; return the finished entry of every key and the resume statistics."""
        cfg, version, t0 = self.cfg, self.prompt.version, time.monotonic()
        clients = [make_client(e) for e in self.endpoints]
        rng = random.Random()

        async def ask(payload: Any, sampling: dict) -> dict:
            return await self.ask_once(clients, payload, sampling, usage, rng)

        async def work(item: tuple[str, Any]) -> dict:
            key, payload = item
            entry: dict = {"key": key, "prompt_version": version}
            tries: list[dict] = []
            for n in range(self.tries):
                sampling = dict(self.sampling)
                if n and "seed" in sampling:  # a seeded retry must not repeat itself
                    sampling["seed"] += n
                tries.append(await ask(self.retry_payload(payload, n) if n else payload, sampling))
                if tries[-1].get("failed") == "request" or not self.try_again(tries[-1]):
                    break
            return {**entry, **self.combine_tries(tries)}

        prompt = self.prompt.provenance()
        header = {"kind": self.kind, "input": str(cfg.input), "prompt": prompt, **self.header()}
        keys = {k for k, _ in self.items}
        with Journal(journal_path(cfg.out), header) as j:
            plan = plan_resume(j.entries, keys, version, cfg.prompt_change, cfg.retry_failed)
            if plan.previous_versions:
                echo(f"{plan.report(version)}: {plan.policy}")
            if decision := plan.decision(version):
                j.append(decision)
            if note := unversioned_edit(j.header.get("prompt"), prompt):
                echo(note)
            if j.repaired:
                echo(f"{j.path}: cut {j.repaired} bytes of a write torn by an earlier stop")
            todo = [(k, x) for k, x in self.items if k not in plan.done]
            n = len(self.items)
            if plan.done:
                echo(f"resuming: {len(plan.done)} of {n} items already done, {len(todo)} to go")
            progress = Progress(n, self.kind, usage, initial=n - len(todo))

            def done(item: tuple[str, Any], entry: dict) -> None:
                j.append(entry)
                progress.update()

            async def main() -> None:
                try:
                    await run_pool(todo, work, done, cfg.concurrency)
                finally:
                    for c in clients:
                        await c.close()

            try:
                asyncio.run(main())
            finally:
                progress.close()
            latest = plan_resume(j.entries, keys, version, plan.policy).latest
            return latest, {
                "journal": str(j.path),
                "items_from_earlier_runs": len(plan.done),
                "items_this_run": len(todo),
                "items_retried": plan.retrying,
                "torn_bytes_repaired": j.repaired,
                "prompt_change": plan.policy if plan.previous_versions else None,
                "earlier_prompt_versions": dict(plan.previous_versions),
                "seconds": round(time.monotonic() - t0, 3),
            }


class RecordsJob(JournaledJob[C]):
    """A journaled job whose every entry is `{"records": [...], "rejects": [...]}`: a
    failed request or an unusable answer is one reject made by `reject`, and `collect`
    gathers every finished entry's records and rejects in item order."""

    @abstractmethod
    def reject(self, payload: Any, reason: str, **extra: Any) -> dict:
        """A reject (`Reject.to_json()`) naming the input line of the item."""

    def failure(self, payload: Any, reason: str, answer: Answer | None) -> dict:
        extra = {} if answer is None else {"raw": answer.raw}
        return {"records": [], "rejects": [self.reject(payload, reason, **extra)]}

    def collect(self, latest: dict[str, dict]) -> tuple[list[dict], list[dict]]:
        kept: list[dict] = []
        rejects: list[dict] = []
        for key, _ in self.items:
            kept.extend(latest[key].get("records", []))
            rejects.extend(latest[key].get("rejects", []))
        return kept, rejects
