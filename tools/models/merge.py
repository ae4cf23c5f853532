"""Turn a stage's selected checkpoint into a plain model folder.

LoRA/QLoRA checkpoints are merged into the unquantised base with peft; full and ReLoRA
checkpoints already hold full weights and are linked (or copied) without the optimizer
state.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Trainer bookkeeping that a model folder does not need.
TRAINER_FILES = {
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
    "trainer_state.json",
    "training_args.bin",
    "tokens_state.json",
    "README.md",
    "debug.log",
    # a ReLoRA output folder holds merged full weights beside its last adapter
    "adapter_config.json",
    "adapter_model.safetensors",
}


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_model(src: str | Path, dst: str | Path, tokenizer_from: str | Path | None = None) -> Path:
    """A full-weights checkpoint -> model folder (weights, config, tokenizer)."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in TRAINER_FILES:
            link_or_copy(f, tmp / f.name)
    if tokenizer_from:
        for f in Path(tokenizer_from).iterdir():
            if f.is_file() and (
                f.name.startswith("tokenizer")
                or f.name in {"chat_template.jinja", "special_tokens_map.json"}
            ):
                if not (tmp / f.name).exists():
                    link_or_copy(f, tmp / f.name)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def merge_adapter(
    base_model: str, adapter_dir: str | Path, dst: str | Path, tokenizer_from: str | Path
) -> Path:
    """Merge a LoRA adapter into its base model and save the result with the tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dst = Path(dst)
    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    model = AutoModelForCausalLM.from_pretrained(
        base_model, dtype="auto" if torch.cuda.is_available() else torch.float32
    )
    if model.get_input_embeddings().weight.shape[0] < len(tok):
        model.resize_token_embeddings(len(tok))
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst
