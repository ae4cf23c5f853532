"""Talking to any OpenAI-compatible chat server: vLLM, llama.cpp's server, `transformers
serve`, hosted APIs.

One request is `complete(...)`: it retries timeouts, connection errors, 408/409/429 and
5xx answers, and malformed bodies, with exponential backoff and full jitter (honouring
Retry-After), and raises `RequestFailed` with a reason once the retries are spent. The
client's own retries are off so that this policy is the only one.

`run_pool` runs a coroutine over many items with bounded concurrency and hands each
result to a callback on the event loop, one at a time, in completion order.

The API key is read from an environment variable whose *name* is configured; the key
itself is never stored in a config object, printed, or written anywhere.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tqdm import tqdm

from cosmosage.dataprep.records import DataError, reason_group

DUMMY_KEY = "not-needed"  # local servers ignore the key, but the client insists on one
RETRY_STATUS = {408, 409, 429}

T = TypeVar("T")
R = TypeVar("R")


def redact_url(url: str) -> str:
    """The URL without user:password and without query (where some services put keys)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact_argv(argv: list[str]) -> list[str]:
    """A command line safe to record: URLs lose any user:password and query."""
    out = []
    for a in argv:
        key, eq, value = a.partition("=") if a.startswith("--") else ("", "", a)
        if "://" in value and ("@" in value or "?" in value):
            value = redact_url(value)
        out.append(f"{key}{eq}{value}")
    return out


@dataclass(frozen=True)
class Endpoint:
    """Where to send requests: server, model, and the name of the key's environment variable."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 120.0

    def public(self) -> dict:
        """What may be recorded about this endpoint (never the key)."""
        return {"base_url": redact_url(self.base_url), "model": self.model}


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5
    base: float = 1.0
    cap: float = 60.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]; Retry-After is a floor."""
        d = rng.uniform(0, min(self.cap, self.base * (2**attempt)))
        if retry_after is not None:
            d = max(d, min(retry_after, self.cap))
        return d


@dataclass
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    attempts: int


class RequestFailed(Exception):
    """A request that still failed after every retry (or could not be retried)."""

    def __init__(self, reason: str, attempts: int):
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


@dataclass
class Usage:
    """Counters for one run, shown on the progress bar and written to the manifest."""

    requests: int = 0
    retries: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "failed": self.failed,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "errors": dict(sorted(self.errors.items())),
        }


def safe_command() -> list[str]:
    return redact_argv(list(sys.argv))


def scrub(text: str, endpoint: Endpoint) -> str:
    """`text` with the API key (should a server echo it) replaced by ***, and any piece of
    it 8 characters or longer too: an error message cut short can end in half the key."""
    key = os.environ.get(endpoint.api_key_env)
    if not key or len(key) < 6:
        return text
    if key in text:
        text = text.replace(key, "***")
    for n in range(len(key) - 1, 7, -1):
        for i in range(len(key) - n + 1):
            piece = key[i : i + n]
            if piece in text:
                text = text.replace(piece, "***")
    return text


_LOCAL = ("localhost", "127.", "[::1]", "0.0.0.0")
_WARNED: set[str] = set()


def warn_plain_http(endpoint: Endpoint) -> None:
    """Once per server: a key sent over plain http to another machine can be read on the
    way."""
    from urllib.parse import urlsplit

    url = urlsplit(endpoint.base_url)
    host = url.netloc.rsplit("@", 1)[-1]
    if (
        url.scheme == "http"
        and os.environ.get(endpoint.api_key_env)
        and not host.startswith(_LOCAL)
        and host not in _WARNED
    ):
        _WARNED.add(host)
        print(
            f"warning: {redact_url(endpoint.base_url)} is plain http to another machine: "
            f"the key in {endpoint.api_key_env} travels unencrypted; use https",
            file=sys.stderr,
        )


def make_client(endpoint: Endpoint):
    from openai import AsyncOpenAI

    warn_plain_http(endpoint)

    return AsyncOpenAI(
        base_url=endpoint.base_url,
        api_key=os.environ.get(endpoint.api_key_env) or DUMMY_KEY,
        max_retries=0,
        timeout=endpoint.timeout,
    )


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify(exc: Exception) -> tuple[str, bool]:
    """(short reason, retryable?) for an exception raised by the client."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout", True
    if isinstance(exc, openai.APIConnectionError):
        return "connection error", True
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        message = _error_message(exc)
        return (
            f"HTTP {code}: {message}" if message else f"HTTP {code}",
            code in RETRY_STATUS or code >= 500,
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return "malformed response", True
    if isinstance(exc, (ValueError, KeyError, TypeError, AttributeError)):
        return f"malformed response: {type(exc).__name__}", True
    return f"{type(exc).__name__}: {exc}", False


def _error_message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        if msg is None:
            msg = body.get("detail")
        return str(msg)[:200] if msg is not None else ""
    return str(body)[:200] if body else ""


def _unpack(resp: Any) -> tuple[str, str | None, int, int]:
    """Text, finish reason and token counts from a chat completion; ValueError if malformed."""
    choices = getattr(resp, "choices", None)
    if not choices:
        raise ValueError("no choices")
    message = getattr(choices[0], "message", None)
    text = getattr(message, "content", None)
    if text is not None and not isinstance(text, str):
        raise ValueError("content is not text")
    usage = getattr(resp, "usage", None)
    pt = getattr(usage, "prompt_tokens", 0) or 0
    ct = getattr(usage, "completion_tokens", 0) or 0
    return text or "", getattr(choices[0], "finish_reason", None), int(pt), int(ct)


async def complete(
    client,
    endpoint: Endpoint,
    messages: list[dict],
    sampling: dict,
    policy: RetryPolicy,
    usage: Usage,
    rng: random.Random | None = None,
) -> Completion:
    """One chat completion with retries; raises RequestFailed with the last reason."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        usage.requests += 1
        try:
            resp = await client.chat.completions.create(
                model=endpoint.model, messages=messages, **sampling
            )
            text, finish, pt, ct = _unpack(resp)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is classified below
            reason, retryable = classify(exc)
            reason = scrub(reason, endpoint)
            usage.errors[reason_group(reason)] = usage.errors.get(reason_group(reason), 0) + 1
            if not retryable or attempt >= policy.retries:
                usage.failed += 1
                tries = attempt + 1
                raise RequestFailed(
                    f"{reason} (after {tries} attempt{'s' if tries > 1 else ''})", tries
                ) from None
            usage.retries += 1
            await asyncio.sleep(policy.delay(attempt, rng, _retry_after(exc)))
            attempt += 1
            continue
        usage.prompt_tokens += pt
        usage.completion_tokens += ct
        return Completion(text, finish, pt, ct, attempt + 1)


async def run_pool(
    items: Iterable[T],
    work: Callable[[T], Awaitable[R]],
    done: Callable[[T, R], None],
    concurrency: int,
) -> int:
    """Run `work` over `items` with at most `concurrency` in flight; call `done` for each.

    Items are pulled lazily, so a long input is never all in memory. `work` must not
    raise (turn failures into results); if it does, the run stops with that error.
    """
    if concurrency < 1:
        raise DataError("concurrency must be at least 1")
    it = iter(items)
    count = 0

    async def worker() -> None:
        nonlocal count
        for item in it:  # a shared iterator: each item goes to exactly one worker
            result = await work(item)
            done(item, result)
            count += 1

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return count


class Progress:
    """A tqdm bar (rate and ETA built in) over `total` items (`unit`), which also shows a
    job's requests, retries and tokens when given its `usage`.

    Where stderr is not a terminal (a batch job's log), the bar is off and a status
    line with the same figures is written at the start, every `every` seconds and at
    the end instead.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        usage: Usage | None = None,
        initial: int = 0,
        every: float = 60.0,
        unit: str = "item",
    ):
        self.usage = usage
        self.total, self.done, self.initial = total, initial, initial
        self.desc, self.every, self.unit = desc, every, unit
        self.bar = tqdm(
            total=total, initial=initial, desc=desc, unit=unit, disable=None, dynamic_ncols=True
        )
        self._t0 = self._last = self._last_line = time.monotonic()
        self._shown = -1
        if self.bar.disable:
            self._say()

    def status(self) -> str:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        rate = (self.done - self.initial) / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = (
            "?"
            if left == float("inf")
            else f"{int(left // 3600)}h{int(left % 3600 // 60):02d}m{int(left % 60):02d}s"
        )
        line = (
            f"{self.desc}: {self.done}/{self.total} {self.unit}s, {rate:.2f} {self.unit}/s, "
            f"ETA {eta}"
        )
        if (u := self.usage) is not None:
            line += (
                f", {u.requests} requests ({u.retries} retries, {u.failed} failed), "
                f"tokens {u.prompt_tokens} in / {u.completion_tokens} out"
            )
        return line

    def update(self, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)
        now = time.monotonic()
        if self.bar.disable:
            if now - self._last_line >= self.every:
                self._last_line = now
                self._say()
            return
        if self.usage is not None and now - self._last > 0.5:
            self._last = now
            u = self.usage
            self.bar.set_postfix(
                req=u.requests,
                retry=u.retries,
                fail=u.failed,
                tok_in=u.prompt_tokens,
                tok_out=u.completion_tokens,
                refresh=False,
            )

    def close(self) -> None:
        if self.bar.disable and self._shown != self.done:
            self._say()
        self.bar.close()

    def _say(self) -> None:
        self._shown = self.done
        print(self.status(), file=sys.stderr, flush=True)
