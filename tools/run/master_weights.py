"""fp32 master weights for full fine-tunes in bf16 or fp16: an Axolotl plugin.

With `bf16: true` Axolotl loads the weights in bf16 and, outside DeepSpeed, nothing
upcasts them (its FSDP2 preparation replaces the upcast accelerate would make), so AdamW
updates bf16 parameters: an update below half a bf16 step (about 1e-3 of the weight; at a
learning rate of 2e-5 most of them) rounds away and nothing reports it. This plugin
upcasts the trainable weights to fp32 once the model is loaded, the way accelerate and
DeepSpeed keep a master copy: the optimizer, its moments and the gradients are fp32,
while the forward and backward passes still compute in bf16 (autocast, or FSDP2's
mixed-precision policy, which gathers bf16 copies of the fp32 shards). Without FSDP the
trained weights go back to the dtype they were loaded in before they are saved, so the
final model is the same size as the base.

It does nothing for adapters (PEFT keeps them in fp32 already), under DeepSpeed (which
keeps its own master copy) and when the weights are loaded in fp32. Recipes name it in
`plugins:` (recipes/_base/methods/full.yaml); `recipe check` fails a full fine-tune that
would train bf16 weights without it.
"""

from __future__ import annotations

import logging

import torch
from axolotl.integrations.base import BasePlugin

# under "axolotl.": Axolotl's logging passes only warnings from other loggers
LOG = logging.getLogger(f"axolotl.{__name__}")

HALF = (torch.bfloat16, torch.float16)


def wants_master_weights(cfg) -> bool:
    """A mixed-precision full fine-tune whose weights Axolotl loads in 16 bits, outside
    DeepSpeed (after Axolotl's normalisation: `bf16` a bool, `torch_dtype` a dtype).
    Pure 16-bit training asked for with `bfloat16: true` / `float16: true` is left as
    asked."""
    return (
        (cfg.get("bf16") is True or cfg.get("fp16") is True)  # mixed precision (autocast)
        and not cfg.get("adapter")
        and not cfg.get("deepspeed")
        and cfg.get("torch_dtype") in HALF
        and not cfg.get("load_in_8bit")
        and not cfg.get("load_in_4bit")
    )


def upcast_trainable(model: torch.nn.Module) -> dict[torch.dtype, int]:
    """Trainable floating-point parameters in 16 bits -> fp32, in place; returns how many
    parameters (elements) each dtype had."""
    moved: dict[torch.dtype, int] = {}
    for param in model.parameters():
        if param.requires_grad and param.dtype in HALF:
            moved[param.dtype] = moved.get(param.dtype, 0) + param.numel()
            param.data = param.data.to(torch.float32)
    return moved


def is_sharded(model: torch.nn.Module) -> bool:
    """Parameters held as DTensor shards (FSDP2): they stay fp32 to the end."""
    return any(type(p).__name__ == "DTensor" for p in model.parameters())


class FP32MasterWeights(BasePlugin):
    """Keep a full fine-tune's trainable weights in fp32 under bf16/fp16 compute."""

    def __init__(self):
        super().__init__()
        self.loaded_dtype: torch.dtype | None = None

    def post_model_load(self, cfg, model):
        if not wants_master_weights(cfg):
            return
        moved = upcast_trainable(model)
        if moved:
            self.loaded_dtype = next(iter(moved))
            total = sum(moved.values())
            LOG.info(
                "fp32 master weights: %.1fM trainable parameters upcast from %s to fp32 "
                "(compute stays in %s)",
                total / 1e6,
                str(self.loaded_dtype).removeprefix("torch."),
                str(cfg.get("torch_dtype")).removeprefix("torch."),
            )

    def post_train(self, cfg, model):
        """Before the final save (Axolotl calls this right after training): the weights
        back in the dtype they were loaded in, except FSDP2 shards, which are gathered and
        saved as they are (fp32)."""
        if self.loaded_dtype is None or is_sharded(model):
            return
        for param in model.parameters():
            if param.dtype == torch.float32 and param.requires_grad:
                param.data = param.data.to(self.loaded_dtype)
        self.loaded_dtype = None
