"""The disk a stage's checkpoints take."""

from __future__ import annotations

from pathlib import Path

from cosmosage.tools.recipe.check.base import AXOLOTL_SAVE_TOTAL_LIMIT, GB, Problem
from cosmosage.tools.recipe.check.memory import (
    _dtype_bytes,
    _optimizer_state_bytes,
    adapter_params,
    master_copy,
    method_of,
    model_architecture,
    model_params,
)
from cosmosage.tools.recipe.check.relora import planned_steps

# --------------------------------------------------------------------------- disk


def checkpoint_bytes(cfg: dict, meta: dict, root: Path) -> tuple[float, float, str] | None:
    """(bytes of one checkpoint, bytes of the final weights, what a checkpoint holds)."""
    arch = model_architecture(cfg, meta, root)
    params = model_params(cfg, meta, root)
    if not params:
        return None
    method = method_of(cfg, meta)
    d = _dtype_bytes(cfg)
    weights16 = params * d  # what save_pretrained writes (ZeRO-3 gathers 16-bit weights)
    if method == "full":
        master = master_copy(cfg)
        if master == "plugin":
            # fp32 weights and moments in every checkpoint; the final weights go back to
            # 16 bits, except under FSDP, which gathers the fp32 shards as they are
            state = _optimizer_state_bytes(cfg, 4, False)
            what = f"4 B/param weights + {state:g} B/param optimizer states (fp32 master weights)"
            final = params * 4 if cfg.get("fsdp_config") else weights16
            return params * (4 + state), final, what
        state = _optimizer_state_bytes(cfg, d, master == "deepspeed")
        what = f"{d} B/param weights + {state:g} B/param optimizer states" + (
            " (fp32 master + Adam moments, DeepSpeed)" if master else ""
        )
        return params * (d + state), weights16, what
    n_adapter = adapter_params(cfg, arch) if arch else 0.01 * params
    state = _optimizer_state_bytes(cfg, 4, False)
    adapter = n_adapter * (4 + state)
    if method == "relora":
        # each checkpoint after the first restart also holds the merged full weights
        what = f"full 16-bit weights + adapter and its optimizer ({n_adapter / 1e6:.0f}M params)"
        return weights16 + adapter, weights16, what
    what = f"adapter and its optimizer ({n_adapter / 1e6:.0f}M params)"
    return adapter, n_adapter * 4, what


def disk_estimate(cfg: dict, meta: dict, root: Path) -> tuple[float, str] | None:
    """Disk a stage needs: checkpoints kept x checkpoint size, the final save in
    output_dir, and the selected model that `recipe run` writes (full 16-bit weights)."""
    sizes = checkpoint_bytes(cfg, meta, root)
    if sizes is None or cfg.get("save_strategy") == "no":
        return None
    ckpt, final, what = sizes
    keep = int(cfg.get("save_total_limit") or AXOLOTL_SAVE_TOTAL_LIMIT)
    keep = max(keep, 2) if cfg.get("metric_for_best_model") else keep  # best + newest
    saves = planned_saves(cfg, meta, root)
    keep = min(keep, saves) if saves else keep
    params = model_params(cfg, meta, root) or 0
    selected = params * 2
    total = keep * ckpt + final + selected
    text = (
        f"~{total / GB:,.0f} GB: {keep} checkpoint{'s' if keep != 1 else ''} x "
        f"{ckpt / GB:,.1f} GB ({what}) + final save "
        f"{final / GB:,.1f} GB + selected model {selected / GB:,.1f} GB"
    )
    return total, text


def planned_saves(cfg: dict, meta: dict, root: Path) -> int | None:
    """How many checkpoints a whole-number `save_steps` writes at most over the stage's
    steps (one every save_steps, the last step counted); None when either is unknown."""
    every = cfg.get("save_steps")
    steps, _ = planned_steps(cfg, meta, root)
    if not isinstance(every, int) or every < 1 or not steps:
        return None
    return -(-steps // every)


def check_disk(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    if not int((meta.get("hardware") or {}).get("gpus") or 0):
        return []
    est = disk_estimate(cfg, meta, root)
    return [Problem("disk", est[1], "info")] if est else []
