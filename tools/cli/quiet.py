"""Keep library chatter (import-time warnings, per-file progress bars) off the terminal;
our own progress bars and messages stay. Subprocess output goes to log files instead."""

from __future__ import annotations

import logging
import os
import warnings

NOISY_LOGGERS = (
    "torchao",
    "torch.utils._pytree",
    "bitsandbytes",
    "transformers",
    "peft",
    "datasets",
    "axolotl",
)


def quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings(
        "ignore", category=UserWarning, module=r"(torch|transformers|bitsandbytes|peft)\b.*"
    )
    warnings.filterwarnings("ignore", category=FutureWarning)
