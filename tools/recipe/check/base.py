"""What every check shares: `Problem`, the constants of the estimates, and the quiet
way of running Axolotl's loaders."""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from typing import Any

from cosmosage.dataprep.env import no_telemetry

# The checks run Axolotl's loaders in this process; they must not report to its telemetry.
no_telemetry()

# Keys that need CUDA (or a GPU-only library) and must not appear in a cpu profile.
CUDA_ONLY = {
    "flash_attention": "uses the flash-attn CUDA kernels",
    "xformers_attention": "uses xformers CUDA kernels",
    "bf16": "bf16 mixed precision needs a GPU here",
    "fp16": "fp16 mixed precision needs a GPU",
    "tf32": "tf32 is an NVIDIA GPU mode",
    "lora_mlp_kernel": "the Triton LoRA kernels assert CUDA",
    "lora_qkv_kernel": "the Triton LoRA kernels assert CUDA",
    "lora_o_kernel": "the Triton LoRA kernels assert CUDA",
    "deepspeed": "DeepSpeed needs GPUs",
    "fsdp": "FSDP here needs GPUs",
    "fsdp_config": "FSDP here needs GPUs",
    "liger_rope": "Liger kernels are Triton (CUDA)",
    "liger_rms_norm": "Liger kernels are Triton (CUDA)",
    "liger_glu_activation": "Liger kernels are Triton (CUDA)",
    "liger_fused_linear_cross_entropy": "Liger kernels are Triton (CUDA)",
    "unsloth_lora_mlp": "unsloth kernels need CUDA",
    "unsloth_lora_qkv": "unsloth kernels need CUDA",
    "unsloth_lora_o": "unsloth kernels need CUDA",
    "gptq": "GPTQ kernels need CUDA",
}
# attn_implementation values that need CUDA kernels.
CUDA_ATTN = ("flash_attention_2", "flash_attention_3", "flash_attention_4", "xformers", "sage")

# Bytes per parameter by method when only a parameter count is known (no config.json and
# no `recipe.architecture`): weights, grads and mixed-precision AdamW for full, frozen
# 16-bit or 4-bit weights plus small adapters for LoRA/QLoRA; OVERHEAD covers the rest
# roughly. With an architecture, `memory_estimate` adds activations and logits instead.
BYTES_PER_PARAM = {"full": 16.0, "lora": 2.2, "relora": 2.2, "qlora": 0.75}
OVERHEAD = 1.2

GiB = 2**30
GB = 1e9
# Checkpoints the trainer keeps when `save_total_limit` is unset (Axolotl's default).
AXOLOTL_SAVE_TOTAL_LIMIT = 4


@dataclass
class Problem:
    check: str
    message: str
    severity: str = "error"  # error | warning | info

    def __str__(self) -> str:
        return f"[{self.severity}] {self.check}: {self.message}"


def _quiet():
    """Silence Axolotl's logging and prints while validating."""
    logging.disable(logging.WARNING)
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    stack.callback(logging.disable, logging.NOTSET)
    return stack


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "", "false", "False")
