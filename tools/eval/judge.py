"""Judge scoring for `score: judge` prompts: a judge model on any OpenAI-compatible server
says how well each answer agrees with the prompt's `reference`.

    judge = make_judge("http://127.0.0.1:8000/v1", "judge", "build/eval/judge.jsonl")
    score_models(models, suites, judge=judge)   # or judge(prompts, answers) directly

The judge reads the question, the reference and the answer through the prompt file
`prompts/judge_answer.yaml` and replies with a score from 0 to 100 and a reason. An
answer passes at or above `threshold` (default 70); each result is `(passed, detail)`,
e.g. `(True, "judge 85 >= 70: same value as the reference")`. A reply with no readable
score gives `(None, "judge output unusable: ...")` and a request that still fails after
its retries `(None, "judge request failed: ...")`; neither stops an evaluation. An empty
answer is not sent: it fails with "empty answer".

Replies are read leniently, since small local judges often do not write JSON: a JSON
object with `score` (and `reason`), else `score: NN` / `"score": NN` anywhere (broken
or cut-off JSON included), else a number that opens the reply ("85", "85/100 - right"),
else `NN/100` or `NN out of 100` anywhere. `<think>` blocks are skipped.

Requests, retries, bounded concurrency and the cache are those of synthetic Q&A: a
`JournaledJob` (dataprep/synth/jobs.py) whose journal is the cache. Its items are the
distinct (question, reference, answer) triples of one call; an item's journal key is

    sha256(json([judge model, question, reference, answer, prompt version]))[:32]

so an answer judged once, by the same judge with the same prompt version, is never sent
again (a rerun of an evaluation makes no requests; a changed answer makes one), and a
new prompt version or judge model makes new keys rather than clashing with old ones. The
threshold is not in the key: the stored score is compared with it on reading, so a new
threshold costs nothing either.

The cache file is the job's journal, `NAME.journal.jsonl` beside the `cache` path given
(`build/eval/judge.jsonl` -> `build/eval/judge.journal.jsonl`; a path that already ends
in `.journal.jsonl` is used as it is; a path without `.jsonl` is a folder that gets
`judge.journal.jsonl`). One header line (`kind: judge`, the prompt's name, version and
sha), then one line per judged item:

    {"key": "<32 hex>", "prompt_version": "1", "model": "judge", "score": 85.0,
     "reason": "...", "read": "json", "usage": {...}}
    {"key": "...", "prompt_version": "1", "model": "judge", "failed": "parse",
     "error": "no score: ...", "raw": "<the reply>", "usage": {...}}
    {"key": "...", "prompt_version": "1", "failed": "request", "model": "judge",
     "error": "request failed: HTTP 503: ... (after 6 attempts)"}

A line with `score` is a judgment. The shell marks every reply without a JSON value
`failed: "parse"`; the judge then reads it leniently and, when that finds a score, the
line holds `score` and `read` says how it was read. Unusable replies are cached like
judgments (the same judge at temperature 0 would say the same again); failed requests
are not: the next call asks again (the shell's `retry_failed`). Every line is written
and fsynced as it comes, so a stopped evaluation loses no judgment; two processes
cannot use one cache file at the same time (the second is refused).

Why the shell's `journaled` and not `run`: `run` also writes an output,
rejects and a manifest for an input file, which an evaluation has no use for; the
journaled request loop is all the judge needs, and it is synchronous (it runs its own
event loop), so `score_models()` can call the judge directly, though not from inside a
running event loop.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmosage.dataprep.synth.jobs import Answer, JournaledJob, Outcome
from cosmosage.dataprep.synth.llm import Endpoint, RetryPolicy, Usage
from cosmosage.dataprep.synth.parse import ParseError, as_number

JUDGE_FIELDS = {"question", "reference", "answer"}
DEFAULT_THRESHOLD = 70
REASON_LIMIT = 300  # characters of the judge's reason kept
RAW_EXCERPT = 80  # characters of an unusable reply quoted in the detail

Verdict = tuple[bool | None, str]

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_NUM = r"(-?\d+(?:\.\d+)?)"
_SCORE_KEY = re.compile(
    r"\bscore\b[\"'*_\s]*(?:[:=]|\bis\b|\bof\b)\s*[\"'*]*\s*" + _NUM, re.IGNORECASE
)
_LEADING = re.compile(r"\A[\s*\"'`]*" + _NUM + r"\s*(?:/\s*100\b|%|out of 100\b)?[\"'*`]*")
_AFTER_LEADING = re.compile(r"\s*(?:\Z|\n|[.,;:)\]\-–—](?:\s|\Z))")
_OUT_OF_100 = re.compile(_NUM + r"\s*(?:/\s*100|out of 100)\b", re.IGNORECASE)
_REASON_KEY = re.compile(r"\breason\b[\"'*_\s]*[:=]\s*(.+)", re.IGNORECASE)
_REASON_KEYS = ("reason", "explanation", "justification", "critique", "rationale")


def _clean(text: str) -> str:
    """One line, no surrounding quotes or braces, at most REASON_LIMIT characters."""
    return " ".join(str(text).split()).strip(" \"'`*{},")[:REASON_LIMIT]


def _in_range(value: float, how: str) -> float:
    if not 0 <= value <= 100:
        raise ParseError(f"bad score: {value:g} ({how}) is outside 0-100")
    return value


def _from_object(obj: Any) -> tuple[float, str] | None:
    """Score and reason from a JSON value with a `score` key, None if it has none."""
    if isinstance(obj, list) and len(obj) == 1:
        obj = obj[0]
    if not isinstance(obj, dict):
        return None
    lower = {str(k).lower(): v for k, v in obj.items()}
    if "score" not in lower:
        return None
    value = as_number(lower["score"])
    if value is None:
        raise ParseError(f"bad score: 'score' is {str(lower['score'])[:40]!r}, not a number")
    reason = next((lower[k] for k in _REASON_KEYS if lower.get(k) not in (None, "")), "")
    return _in_range(value, "JSON"), _clean(reason)


def read_score(text: str, obj: Any = None) -> tuple[float, str, str]:
    """(score, reason, how it was read) from a judge's reply and the JSON value found in
    it (if any); ParseError whose reason says why no score could be read."""
    if obj is not None and (got := _from_object(obj)) is not None:
        return got[0], got[1], "json"
    body = _THINK.sub("", text or "").strip()
    if not body:
        raise ParseError("empty output: the judge returned no text")
    reason_match = _REASON_KEY.search(body)
    if m := _SCORE_KEY.search(body):
        reason = reason_match.group(1) if reason_match else body[m.end() :]
        return _in_range(float(m.group(1)), "score: NN"), _clean(reason), "score key"
    if (m := _LEADING.match(body)) and (after := _AFTER_LEADING.match(body, m.end())):
        reason = reason_match.group(1) if reason_match else body[after.end() :]
        return _in_range(float(m.group(1)), "leading number"), _clean(reason), "number"
    if m := _OUT_OF_100.search(body):
        reason = reason_match.group(1) if reason_match else body
        return _in_range(float(m.group(1)), "NN/100"), _clean(reason), "out of 100"
    if obj is not None:
        raise ParseError("no score: the judge's JSON has no 'score'")
    raise ParseError("no score: no JSON score, no 'score: NN' and no leading number")


def judge_key(model: str, question: str, reference: str, answer: str, version: str) -> str:
    """The cache key of one judgment."""
    blob = json.dumps([model, question, reference, answer, str(version)], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cache_file(cache: str | Path) -> Path:
    """The journal a `cache` path names (see the module docstring)."""
    path = Path(cache)
    if path.name.endswith(".journal.jsonl"):
        return path
    if path.suffix == ".jsonl":
        return path.with_name(path.name.removesuffix(".jsonl") + ".journal.jsonl")
    return path / "judge.journal.jsonl"


@dataclass
class JudgeConfig:
    """The journaled-job settings of a judge (see dataprep/synth/jobs.JobConfig)."""

    out: str  # journal_path(out) is the cache file
    input: str = "evaluation answers"
    prompt: str = "judge_answer"
    sampling: dict = field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 200})
    concurrency: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    prompt_change: str = "stop"  # versions are in the keys, so old entries never clash
    retry_failed: bool = True  # failed requests are asked again on the next call


class JudgeJob(JournaledJob[JudgeConfig]):
    """One item per distinct (question, reference, answer); its entry holds the score."""

    kind = "judge"
    fields = JUDGE_FIELDS

    def __init__(self, cfg: JudgeConfig, endpoint: Endpoint) -> None:
        super().__init__(cfg, [endpoint])
        self.model = endpoint.model

    def request(self, payload: dict) -> tuple[int, list[dict]]:
        return 0, self.prompt.messages(**payload)

    def answer(self, payload: dict, answer: Answer) -> dict:
        score, reason, how = read_score(answer.text, answer.obj)
        return {"model": self.model, "score": score, "reason": reason, "read": how}

    def failure(self, payload: dict, reason: str, answer: Answer | None) -> dict:
        if answer is None:
            return {"model": self.model, "error": reason}
        if answer.obj is None:  # the reply held no JSON value: read it leniently
            try:
                score, said, how = read_score(answer.text)
            except ParseError as exc:
                reason = exc.reason if reason.startswith("no JSON") else reason
            else:
                return {"model": self.model, "score": score, "reason": said, "read": how}
        return {"model": self.model, "error": reason, "raw": answer.raw}

    def finish(self, latest: dict[str, dict]) -> Outcome:
        """Every judgment as a record (for `run`; the judge itself reads the journal)."""
        kept = [{"key": k, **e} for k, e in latest.items() if "score" in e]
        failed = sum("score" not in e for e in latest.values())
        return Outcome(kept, [], {"judge": self.endpoints[0].public(), "unjudged": failed})


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Judge:
    """`judge(prompts, answers) -> [(passed, detail)]`, cached in `path` (see above).

    `last_run` holds what the latest call did: its requests and resume figures.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        cache: str | Path,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        concurrency: int = 4,
        retry: RetryPolicy | None = None,
        sampling: dict | None = None,
        prompt: str | Path = "judge_answer",
        echo: Callable[[str], None] = _stderr,
    ) -> None:
        self.path = cache_file(cache)
        out = self.path.with_name(self.path.name.removesuffix(".journal.jsonl") + ".jsonl")
        cfg = JudgeConfig(out=str(out), prompt=str(prompt), concurrency=concurrency)
        if retry is not None:
            cfg.retry = retry
        if sampling is not None:
            cfg.sampling = dict(sampling)
        self.job = JudgeJob(cfg, endpoint)
        self.endpoint, self.threshold, self.echo = endpoint, threshold, echo
        self.last_run: dict = {}

    @property
    def version(self) -> str:
        return self.job.prompt.version

    def key(self, payload: dict) -> str:
        return judge_key(
            self.endpoint.model,
            payload["question"],
            payload["reference"],
            payload["answer"],
            self.version,
        )

    def verdict(self, entry: dict) -> Verdict:
        """(passed, detail) from a journal entry, against the current threshold."""
        if "score" in entry:
            score, reason = float(entry["score"]), entry.get("reason") or "no reason given"
            passed = score >= self.threshold
            return passed, f"judge {score:g} {'>=' if passed else '<'} {self.threshold:g}: {reason}"
        error = str(entry.get("error", "no score"))
        if entry.get("failed") == "request":
            return None, f"judge {error}"
        raw = " ".join(str(entry.get("raw", "")).split())
        said = f" (said {raw[:RAW_EXCERPT]!r})" if raw else ""
        return None, f"judge output unusable: {error}{said}"

    def __call__(self, prompts: list[dict], answers: list[str]) -> list[Verdict]:
        if len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
        keys: list[str | None] = []
        items: dict[str, dict] = {}
        for p, a in zip(prompts, answers, strict=True):
            if not str(a or "").strip():
                keys.append(None)
                continue
            payload = {
                "question": str(p["prompt"]),
                "reference": str(p.get("reference", "")),
                "answer": str(a),
            }
            key = self.key(payload)
            items.setdefault(key, payload)
            keys.append(key)
        usage = Usage()
        latest: dict[str, dict] = {}
        if items:
            self.job.items = list(items.items())
            latest, resume = self.job.journaled(usage, self.echo)
            self.last_run = {**resume, "usage": usage.to_json(), "items": len(items)}
        else:
            self.last_run = {"usage": usage.to_json(), "items": 0}
        return [
            self.verdict(latest[k]) if k else (False, "empty answer: nothing for the judge")
            for k in keys
        ]


def make_judge(
    base_url: str,
    model: str,
    cache: str | Path,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    concurrency: int = 4,
    api_key_env: str = "OPENAI_API_KEY",
    timeout: float = 60,
    retry: RetryPolicy | None = None,
    sampling: dict | None = None,
    prompt: str | Path = "judge_answer",
    echo: Callable[[str], None] = _stderr,
) -> Judge:
    """A judge for `score_models(..., judge=...)`: a callable (prompts, answers) ->
    [(passed, detail)] asking `model` at `base_url`, cached beside `cache`.

    The API key is read from the environment variable named `api_key_env` (none needed
    for a local server). `retry` (default: 5 retries with backoff), `sampling` (default:
    temperature 0, at most 200 tokens) and `prompt` (a bundled prompt name or a file)
    change how the judge is asked; `echo` receives notes such as cache hits.
    """
    endpoint = Endpoint(base_url, model, api_key_env, float(timeout))
    return Judge(
        endpoint,
        cache,
        threshold=threshold,
        concurrency=concurrency,
        retry=retry,
        sampling=sampling,
        prompt=prompt,
        echo=echo,
    )
