"""`datasets`' save_to_disk without a process pool when one process is asked for: an
Axolotl plugin `recipe run` adds to every stage's config (tools/run/stage.py:
write_stage_config).

Axolotl saves each prepared split with `save_to_disk(num_proc=n)`, n at least 1, and
`datasets` starts a spawned pool whenever num_proc is given, even for one process: a
fresh interpreter that runs the parent's main module again (Axolotl's training command)
before it writes a byte, seconds a split on this project's 2-core machine for files a
few kilobytes long (bench/stage_overhead.py). With num_proc 1 (the
cpu hardware profile's `dataset_num_proc: 1`, or a split too small to divide) the
plugin makes the call the one `datasets` makes without num_proc: the same single shard,
written in the process itself. Calls that ask for more processes are left as they are.
"""

from __future__ import annotations

import functools
import logging

from axolotl.integrations.base import BasePlugin
from datasets import Dataset

# under "axolotl.": Axolotl's logging passes only warnings from other loggers
LOG = logging.getLogger(f"axolotl.{__name__}")
MARK = "__cosmosage_in_process__"


def in_process(save):
    """save_to_disk with num_proc 1 (or 0) turned into no num_proc at all."""

    @functools.wraps(save)
    def wrapper(self, dataset_path, *args, num_proc=None, **kwargs):
        if num_proc is not None and num_proc <= 1:
            num_proc = None
        return save(self, dataset_path, *args, num_proc=num_proc, **kwargs)

    setattr(wrapper, MARK, True)
    return wrapper


def patch() -> bool:
    """Wrap Dataset.save_to_disk once; True when this call wrapped it."""
    if getattr(Dataset.save_to_disk, MARK, False):
        return False
    Dataset.save_to_disk = in_process(Dataset.save_to_disk)
    LOG.info("datasets' save_to_disk writes a one-process save in this process (no pool)")
    return True


class SaveInProcess(BasePlugin):
    """Prepared splits saved without a spawned pool when one process is asked for."""

    def register(self, cfg):
        patch()
