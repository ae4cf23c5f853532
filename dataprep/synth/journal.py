"""An append-only journal that makes long model-driven runs resumable, exactly once.

Beside `OUT.jsonl` lives `OUT.journal.jsonl`: one header line, then one line per
finished item (its key, the prompt version it was made with, and everything it
produced: records and rejects). Each line goes out in one `write` on an O_APPEND file
descriptor and is fsynced before the next item is taken as done. The final output is
built from the journal, keyed by item, so a process killed at any moment and run again
with the same command skips what is finished, redoes what was in flight, and writes
every item exactly once. `jobs.JournaledJob` runs commands on it.

A kill in the middle of a write can leave a torn last line; opening the journal cuts
it off (that item is simply done again). An exclusive lock stops two runs from
writing one journal at the same time. With `io`, this is the only dataprep module that
opens files.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cosmosage.dataprep.io import sibling
from cosmosage.dataprep.records import DataError

FORMAT = 1
PROMPT_CHANGE_POLICIES = ("stop", "continue", "regenerate")


def journal_path(output: str | Path) -> Path:
    return sibling(output, ".journal.jsonl")


class Journal:
    """Open with `Journal(path, header)`; `entries` holds what earlier runs finished."""

    def __init__(self, path: str | Path, header: dict):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise DataError(
                f"{self.path}: another run is writing this journal; wait for it or stop it"
            ) from None
        self.repaired = 0
        self.header, self.entries = self._load()
        if self.header is None:
            self.header = {"journal": FORMAT, **header}
            self._append(self.header)
        elif self.header.get("kind") != header.get("kind"):
            self.close()
            raise DataError(
                f"{self.path}: journal of a '{self.header.get('kind')}' run, not '{header.get('kind')}'; use another --out"
            )

    def _load(self) -> tuple[dict | None, list[dict]]:
        with os.fdopen(os.dup(self.fd), "rb") as fh:
            fh.seek(0)
            data = fh.read()
        good_end = 0
        lines: list[dict] = []
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:
                break  # torn tail: no newline
            try:
                obj = json.loads(data[pos:nl])
            except ValueError:
                if data.find(b"\n", nl + 1) >= 0 or nl + 1 < len(data):
                    raise DataError(
                        f"{self.path}:{len(lines) + 1}: damaged journal line in the middle of the file"
                    ) from None
                break  # a bad last line is a torn write too
            lines.append(obj)
            pos = nl + 1
            good_end = pos
        if good_end < len(data):
            self.repaired = len(data) - good_end
            os.ftruncate(self.fd, good_end)
        if not lines:
            return None, []
        header = lines[0]
        if header.get("journal") != FORMAT:
            raise DataError(f"{self.path}: not a journal this version can read")
        return header, lines[1:]

    def _append(self, obj: dict) -> None:
        line = (json.dumps(obj, ensure_ascii=False) + "\n").encode()
        view = memoryview(line)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        os.fsync(self.fd)

    def append(self, entry: dict) -> None:
        """Record one finished item durably (it counts as done once this returns)."""
        if "key" not in entry:
            raise ValueError("journal entries need a 'key'")
        self._append(entry)
        self.entries.append(entry)

    def close(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class ResumePlan:
    """Which keys are finished, and what the journal says about prompt versions."""

    latest: dict[str, dict]
    done: set[str]
    previous_versions: Counter = field(default_factory=Counter)
    retrying: int = 0
    policy: str = "stop"

    def decision(self, prompt_version: str) -> dict | None:
        """A journal line that remembers the choice, so later reruns need no flag."""
        if self.previous_versions and self.policy != "stop":
            return {"key": "", "decision": self.policy, "prompt_version": prompt_version}
        return None

    def report(self, current_version: str) -> str:
        if not self.previous_versions:
            return ""
        olds = ", ".join(
            f"{n} item(s) with version {v}" for v, n in sorted(self.previous_versions.items())
        )
        return f"the journal holds {olds}; the prompt is now version {current_version}"


def plan_resume(
    entries: list[dict],
    wanted: set[str],
    prompt_version: str,
    policy: str = "stop",
    retry_failed: bool = False,
) -> ResumePlan:
    """Decide what an earlier run already finished, among the `wanted` keys.

    `policy` says what to do with items made with an older prompt version: "stop" (raise
    with a report), "continue" (keep them, use the new version for the rest), or
    "regenerate" (make them again). With `retry_failed`, items whose request failed (not
    items whose output was bad) are tried again.
    """
    if policy not in PROMPT_CHANGE_POLICIES:
        raise DataError(f"prompt-change policy must be one of {', '.join(PROMPT_CHANGE_POLICIES)}")
    decided = {str(e.get("prompt_version")): e["decision"] for e in entries if "decision" in e}
    if policy == "stop" and prompt_version in decided:
        policy = decided[prompt_version]  # an earlier run of this version already chose
    latest: dict[str, dict] = {}
    for e in entries:
        if e["key"] in wanted:
            prev = latest.get(e["key"])
            # Within one key, an entry for the current version wins over older ones.
            if (
                prev is None
                or e.get("prompt_version") == prompt_version
                or prev.get("prompt_version") != prompt_version
            ):
                latest[e["key"]] = e
    plan = ResumePlan(latest=latest, done=set(), policy=policy)
    for e in latest.values():
        if str(e.get("prompt_version")) != prompt_version:
            plan.previous_versions[str(e.get("prompt_version"))] += 1
    if plan.previous_versions and policy == "stop":
        raise DataError(
            plan.report(prompt_version)
            + ". Rerun with --prompt-change continue (keep those, new version for the rest) "
            "or --prompt-change regenerate (make them again with the new version)."
        )
    for key, e in latest.items():
        if policy == "regenerate" and str(e.get("prompt_version")) != prompt_version:
            continue
        if retry_failed and e.get("failed") == "request":
            plan.retrying += 1
            continue
        plan.done.add(key)
    plan.latest = {k: v for k, v in latest.items() if k in plan.done}
    return plan


def unversioned_edit(first: dict | None, now: dict | None) -> str | None:
    """A warning when the prompt text changed but its version did not."""
    if not first or not now or str(first.get("version")) != str(now.get("version")):
        return None
    if first.get("sha") and now.get("sha") and first["sha"] != now["sha"]:
        return (
            f"the prompt text changed since this journal began but its version is still "
            f"{now['version']}: items made before and after the edit cannot be told apart; "
            "bump `version` in the prompt file"
        )
    return None
