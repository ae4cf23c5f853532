"""Collections that skip what the imports built: an Axolotl plugin `recipe run` adds to
every stage's config (tools/run/stage.py: write_stage_config).

Axolotl calls `gc.collect()` itself: after each batch plan of the sample-packing sampler
(eleven times in a 4-step run with one evaluation), after loading the model and at
each checkpoint. A full collection walks every object the process holds, and importing
Axolotl, transformers, torch and their neighbours leaves about 630,000 of them: 0.33 s a
collection on this project's 2-core machine, 7 s of a 4-step stage that trains for 1.4 s.
`gc.freeze()` moves the objects alive at that moment into the permanent generation, which
collections skip; everything created later is collected as before.

The plugin freezes twice: when Axolotl registers it (its own and the trainer's modules
are imported by then) and just before the model is loaded (the datasets are built).
Never after: the model's and the trainer's tensors stay collectable, so the collections
Axolotl makes to free accelerator memory still free it. The price is that a reference
cycle that was already garbage at a freeze is not freed before the process exits
(`gc.unfreeze()` then hands the frozen objects back to the interpreter's final
collections); in a process that trains once and exits that is nothing.
"""

from __future__ import annotations

import atexit
import gc
import logging

from axolotl.integrations.base import BasePlugin

# under "axolotl.": Axolotl's logging passes only warnings from other loggers
LOG = logging.getLogger(f"axolotl.{__name__}")


def freeze(moment: str) -> int:
    """Move every object the collector tracks into the permanent generation; returns how
    many the permanent generation holds now."""
    if not gc.get_freeze_count():
        # back before the interpreter's own final collections: native extensions that
        # count what is still alive at exit (nanobind, under Triton) would otherwise
        # list every frozen object of theirs as leaked, hundreds of lines of train.log
        atexit.register(gc.unfreeze)
    gc.freeze()
    frozen = gc.get_freeze_count()
    LOG.info("gc.freeze %s: %d objects that collections now skip", moment, frozen)
    return frozen


class FreezeBeforeTraining(BasePlugin):
    """gc.freeze() once the imports are done and again before the model loads."""

    def register(self, cfg):
        freeze("after the imports")

    def pre_model_load(self, cfg):
        freeze("before the model loads")
