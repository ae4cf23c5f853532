"""The shape every data step shares: a generator over records that passes rejects along,
and the sink at the end of a chain that keeps them.

A step maps `Iterator[Record | Reject] -> Iterator[Record | Reject]`. Most steps are a
plain function of one record (returning the new record, or a `Reject` saying why it was
dropped); `@step` turns such a function into the generator, so a reject made by an
earlier step passes through untouched and no step tests for rejects itself. At the end of
a chain, `Drops.keep(items)` yields only the records and keeps every reject, in order,
counted by `reason_group`: nothing is lost, and any two commands' dropped counts compare.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cosmosage.dataprep.io import (
    failed_rejects_path,
    manifest_path,
    rejects_path,
    write_jsonl,
    write_rejects,
)
from cosmosage.dataprep.records import DataError, Reject, reason_group, where

T = TypeVar("T")


def step(fn: Callable[..., Any]) -> Callable[..., Iterator[Any]]:
    """`fn(record, *args, **kw) -> record | Reject` as a step over a stream of records and
    rejects: `fn` only ever sees records."""

    @functools.wraps(fn)
    def run(items: Iterable[Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
        for item in items:
            yield item if isinstance(item, Reject) else fn(item, *args, **kwargs)

    return run


def numbered(rows: Iterable[tuple[int, T | Reject]]) -> Iterator[tuple[int, T] | Reject]:
    """A reader's (line, record) pairs, with an unreadable line as its bare Reject."""
    for line, rec in rows:
        yield rec if isinstance(rec, Reject) else (line, rec)


class Drops:
    """The rejects of one job: kept in order for the rejects file, counted by reason."""

    def __init__(self) -> None:
        self.rejects: list[Reject] = []
        self.counts: Counter = Counter()

    def add(self, rej: Reject) -> None:
        self.rejects.append(rej)
        self.counts[reason_group(rej.reason)] += 1

    def keep(self, items: Iterable[T | Reject]) -> Iterator[T]:
        """The records of `items`; their rejects are added here."""
        for item in items:
            if isinstance(item, Reject):
                self.add(item)
            else:
                yield item

    def __len__(self) -> int:
        return len(self.rejects)

    def write(self, output: str | Path) -> int:
        """Write the rejects file beside `output` (always, empty when nothing was dropped)."""
        return write_rejects(output, self.rejects)


def write_failed_rejects(output: str | Path, rejects: Iterable[Reject]) -> Path:
    """The rejects of a run that kept nothing, written aside (`failed_rejects_path`) so
    the last good run's output set stays whole; returns where."""
    failed = failed_rejects_path(output)
    write_jsonl(failed, (r.to_json() for r in rejects))
    return failed


def refuse_nothing_kept(out: str | Path, kept: int, rejects: list[Reject]) -> None:
    """A command that kept nothing has failed. Call it after writing the output with
    `write_jsonl(..., empty_ok=False)` and before the manifest and rejects: it leaves the
    earlier output set as it was and puts this run's rejects in `failed_rejects_path`."""
    if kept:
        return
    earlier = [str(p) for p in (out, manifest_path(out), rejects_path(out)) if Path(p).exists()]
    left = (
        f"{', '.join(earlier)} left as {'it was' if len(earlier) == 1 else 'they were'}"
        if earlier
        else "no output written"
    )
    if not rejects:
        raise DataError(f"{out}: nothing kept: the inputs hold no records ({left})")
    failed = write_failed_rejects(out, rejects)
    first = rejects[0]
    raise DataError(
        f"{out}: nothing kept: all {len(rejects)} records were rejected (first: "
        f"{where(first.source, first.line)}: {first.reason[:200]}); every reason is in "
        f"{failed} ({left})"
    )
