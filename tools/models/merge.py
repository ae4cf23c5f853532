"""Turn a stage's selected checkpoint into a plain model folder.

LoRA/QLoRA checkpoints are merged into the unquantised base with peft; full and ReLoRA
checkpoints already hold full weights and are linked (or copied) without the optimizer
state.

`check_merge` then verifies a LoRA merge: the merged model's logits must match the base
model with the adapter applied by peft (unmerged) on sample inputs, within TOLERANCE.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
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


# ----------------------------------------------------------------------------- merging


def _load_base(base_model: str | Path, tok, dtype):
    """The base model as the adapter was trained on it (embeddings grown to the tokenizer)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=dtype)
    if model.get_input_embeddings().weight.shape[0] < len(tok):
        model.resize_token_embeddings(len(tok))
    return model


def _merge_dtype():
    import torch

    return "auto" if torch.cuda.is_available() else torch.float32


def merge_lora(model, adapter_dir: str | Path):
    """Fold a LoRA adapter into `model`'s weights with peft; returns the plain model."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def merge_adapter(
    base_model: str, adapter_dir: str | Path, dst: str | Path, tokenizer_from: str | Path
) -> Path:
    """Merge a LoRA adapter into its base model and save the result with the tokenizer."""
    from transformers import AutoTokenizer

    dst = Path(dst)
    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    merged = merge_lora(_load_base(base_model, tok, _merge_dtype()), adapter_dir)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst


# ----------------------------------------------------------------------------- the check

# Sample inputs of the check: prose, a question in the chat style, digits and symbols.
CHECK_TEXTS = (
    "The cosmic microwave background is the oldest light in the universe, released when "
    "protons and electrons combined about 380,000 years after the Big Bang.",
    "Question: what sets the scale of the first acoustic peak? Answer:",
    "H0 = 67.4 +/- 0.5 km/s/Mpc; Omega_m = 0.315; sigma_8 = 0.811 (Planck 2018).",
    "def f(x):\n    return x ** 2 + 1  # a tiny function\n",
)
CHECK_MAX_TOKENS = 64

# Largest allowed |logit(merged) - logit(base + adapter)| over every position and vocabulary
# entry, as ABS + REL * (largest |logit| of the reference), by the dtype the merged model
# was saved in. Both models run in float32 on the CPU (a bfloat16 merge is upcast), so
# only the merge itself differs. A float32 merge differs from peft's unmerged forward by
# rounding alone (1e-4 on SmolLM2-135M). A bfloat16 merge rounds W + BA to 8 significant
# bits: 0.53 on SmolLM2-135M with a 40-step LoRA (largest logit 39), so its bound, 4x
# that, catches a merge that lost or mis-scaled the adapter (the adapter moves logits by
# up to 20 there), not a single layer's delta; float16 keeps 3 more bits.
TOLERANCE = {"float32": (1e-3, 1e-4), "bfloat16": (1e-1, 5e-2), "float16": (5e-2, 1e-2)}


@dataclass
class MergeCheck:
    max_abs_diff: float  # largest |logit difference|
    tolerance: float
    max_abs_logit: float  # largest |logit| of base + adapter
    adapter_effect: float  # largest |logit(base + adapter) - logit(base)|
    tokens: int
    dtype: str

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def text(self) -> str:
        return (
            f"max |logit difference| {self.max_abs_diff:.3g} "
            f"({'within' if self.passed else 'above'} the tolerance {self.tolerance:.3g}; "
            f"largest logit {self.max_abs_logit:.3g}, the adapter moves logits by up to "
            f"{self.adapter_effect:.3g}; {self.tokens} tokens, {self.dtype})"
        )


class MergeCheckError(Exception):
    """The merged model does not reproduce base + adapter; `.check` holds the figures."""

    def __init__(self, message: str, check: MergeCheck):
        super().__init__(message)
        self.check = check


def _logits(model, batches: list) -> list:
    import torch

    with torch.no_grad():
        return [model(input_ids=ids).logits.float() for ids in batches]


def check_merge(
    base_model: str | Path,
    adapter_dir: str | Path,
    merged_dir: str | Path,
    tokenizer_from: str | Path | None = None,
) -> MergeCheck:
    """Compare the merged model's logits with base + adapter run through peft (unmerged) on
    CHECK_TEXTS. Models are loaded one after another, so at most one copy of the weights
    and the adapter is in memory. Raises MergeCheckError when the difference is above
    TOLERANCE; returns the figures otherwise."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged_dir = Path(merged_dir)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_from or merged_dir))
    batches = [
        torch.tensor([tok(t, add_special_tokens=True)["input_ids"][:CHECK_MAX_TOKENS]])
        for t in CHECK_TEXTS
    ]
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype="auto").eval()
    dtype = merged.dtype
    got = _logits(merged.float(), batches)
    del merged
    base = _load_base(base_model, tok, torch.float32).eval()
    plain = _logits(base, batches)
    ref = _logits(PeftModel.from_pretrained(base, str(adapter_dir)).eval(), batches)
    del base
    diff = max(float((a - b).abs().max()) for a, b in zip(got, ref, strict=True))
    scale = max(float(r.abs().max()) for r in ref)
    effect = max(float((a - b).abs().max()) for a, b in zip(ref, plain, strict=True))
    name = str(dtype).removeprefix("torch.")
    abs_tol, rel_tol = TOLERANCE.get(name, TOLERANCE["bfloat16"])
    check = MergeCheck(
        max_abs_diff=diff,
        tolerance=abs_tol + rel_tol * scale,
        max_abs_logit=scale,
        adapter_effect=effect,
        tokens=sum(int(b.shape[1]) for b in batches),
        dtype=name,
    )
    if not check.passed:
        raise MergeCheckError(
            f"{merged_dir} does not reproduce {base_model} + adapter {adapter_dir}: {check.text()}",
            check,
        )
    return check
