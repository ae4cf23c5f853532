"""Read what the trainer logged: loss per step, eval loss per step, checkpoints, best one."""

from __future__ import annotations

import json
import re
from pathlib import Path

_CKPT_RE = re.compile(r"checkpoint-(\d+)$")


def checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    out = []
    for p in Path(output_dir).glob("checkpoint-*"):
        if p.is_dir() and (m := _CKPT_RE.search(p.name)):
            out.append((int(m.group(1)), p))
    return sorted(out)


def log_history(output_dir: str | Path) -> list[dict]:
    """The trainer's log history, from the last checkpoint that has one."""
    for _, ckpt in reversed(checkpoints(output_dir)):
        state = ckpt / "trainer_state.json"
        if state.is_file():
            return json.loads(state.read_text()).get("log_history", [])
    state = Path(output_dir) / "trainer_state.json"
    if state.is_file():
        return json.loads(state.read_text()).get("log_history", [])
    return []


def collect(output_dir: str | Path) -> dict:
    """metrics.json content: curves, the checkpoint with the lowest eval loss, before/after."""
    history = log_history(output_dir)
    train = [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h and "step" in h]
    evals = [{"step": h["step"], "eval_loss": h["eval_loss"]} for h in history if "eval_loss" in h]
    eval_at = {e["step"]: e["eval_loss"] for e in evals}
    ckpts = [
        {"step": s, "path": str(p), "eval_loss": eval_at.get(s)} for s, p in checkpoints(output_dir)
    ]
    scored = [c for c in ckpts if c["eval_loss"] is not None]
    best = (
        min(scored, key=lambda c: (c["eval_loss"], -c["step"]))
        if scored
        else (ckpts[-1] if ckpts else None)
    )
    summary = next((h for h in reversed(history) if "train_runtime" in h), {})
    return {
        "train_loss": train,
        "eval_loss": evals,
        "checkpoints": ckpts,
        "best_checkpoint": best,
        "eval_loss_before": eval_at.get(0),
        "eval_loss_best": best["eval_loss"] if best else None,
        "final_train_loss": train[-1]["loss"] if train else None,
        "train_runtime_s": summary.get("train_runtime"),
        "steps": max((h.get("step", 0) for h in history), default=0),
    }
