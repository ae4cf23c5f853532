"""The environment of every child process the project starts (the trainer, the merger,
the GGUF converter, the local answer server): one rule for going offline; and what a
process reports of itself (its peak memory).

A child whose inputs are all local paths runs with the Hugging Face libraries offline,
so a missing file fails at once with its name instead of after a wait on a network this
machine may not reach. A value already set in the user's environment wins (export
`HF_HUB_OFFLINE=0` to let a child download)."""

from __future__ import annotations

import os
import resource
from pathlib import Path

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


# Axolotl reports usage to its telemetry service unless told not to; nothing the project
# runs, in this process or a child, does
NO_TELEMETRY = {"AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1"}


def no_telemetry() -> None:
    """Turn Axolotl's telemetry off in this process (before it is imported), unless the
    user's environment says otherwise."""
    for key, value in NO_TELEMETRY.items():
        os.environ.setdefault(key, value)


def child_env(*, local: bool, **extra: str) -> dict[str, str]:
    """A copy of this process's environment for a child: tokenizers single-threaded (the
    child forks or runs beside others), offline when `local`, then `extra` as given."""
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    for key, value in NO_TELEMETRY.items():
        env.setdefault(key, value)
    if local:
        for key, value in OFFLINE.items():
            env.setdefault(key, value)
    env.update(extra)
    return env


def _status_mb(field: str) -> float | None:
    """A memory line of Linux's /proc/self/status (VmHWM, VmRSS), MB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, MB: Linux's VmHWM, which is this
    program's own (ru_maxrss also keeps the peak of the process it was forked from, across
    the exec), else ru_maxrss."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_mb() -> float:
    """This process's resident memory now, MB (Linux's VmRSS; 0 where unknown)."""
    return _status_mb("VmRSS") or 0.0


def reset_peak_memory() -> bool:
    """Start the peak (`peak_memory_mb`) afresh from the memory held now, so a worker
    that runs one task after another reports each task's own peak (Linux: writing 5 to
    /proc/self/clear_refs). False where the system cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc's
    malloc_trim), so the next task in this process starts from what is really held."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
