"""Randomly initialised Llama-style models for pretraining from scratch, by preset.

The presets follow the usual small-model table (PaLM-style: 8 attention heads of 128
whatever the width, SwiGLU MLP, RMSNorm, rotary positions, input and output embeddings
tied, vocabulary 50304 = GPT-NeoX's 50277 tokens padded to a multiple of 128):

    preset  dim   depth  heads x head_dim  mlp    learning rate  parameters
    150m    768   12     8 x 128           2560   6e-4           ~147M
    410m    1024  24     8 x 128           3584   3e-4           ~416M
    1b      2048  16     8 x 128           8192   3e-4           ~1.04B
    tiny    64    2      4 x 16            256    1e-2           ~100k (tests, CPU)

The MLP width of each preset is chosen so the total lands on the preset's name. The
tokenizer is copied from any local folder or Hub id; the vocabulary is the preset's or
the tokenizer's length rounded up to a multiple of 64, whichever is larger.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from cosmosage.dataprep.io import atomic_path
from cosmosage.dataprep.records import DataError
from cosmosage.dataprep.tokenizer import load_tokenizer

FORMAT = 1  # bump when the folder layout changes, so cached inits are rebuilt


@dataclass(frozen=True)
class Preset:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    learning_rate: float
    max_position_embeddings: int = 2048


PRESETS: dict[str, Preset] = {
    "tiny": Preset(64, 2, 4, 16, 256, 0, 1.0e-2, 512),
    "150m": Preset(768, 12, 8, 128, 2560, 50304, 6.0e-4),
    "410m": Preset(1024, 24, 8, 128, 3584, 50304, 3.0e-4),
    "1b": Preset(2048, 16, 8, 128, 8192, 50304, 3.0e-4),
}


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def vocab_size(preset: Preset, tokenizer_len: int) -> int:
    return max(preset.vocab_size, round_up(tokenizer_len, 64))


def count_params(preset: Preset, vocab: int) -> int:
    """Parameters of the preset's model: tied embeddings, q/k/v/o, SwiGLU MLP, 2 norms a
    layer and the final norm (no biases)."""
    h, inner = preset.hidden_size, preset.num_attention_heads * preset.head_dim
    attn = 4 * h * inner
    mlp = 3 * h * preset.intermediate_size
    return vocab * h + preset.num_hidden_layers * (attn + mlp + 2 * h) + h


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise DataError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def llama_config(preset: Preset, tokenizer) -> dict:
    """The config.json fields of a LlamaForCausalLM for `preset` and `tokenizer`."""
    return {
        "vocab_size": vocab_size(preset, len(tokenizer)),
        "hidden_size": preset.hidden_size,
        "intermediate_size": preset.intermediate_size,
        "num_hidden_layers": preset.num_hidden_layers,
        "num_attention_heads": preset.num_attention_heads,
        "num_key_value_heads": preset.num_attention_heads,
        "head_dim": preset.head_dim,
        "max_position_embeddings": preset.max_position_embeddings,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def init_model(
    preset_name: str,
    tokenizer: str,
    out: str | Path,
    seed: int = 0,
    dtype: str = "float32",
    force: bool = False,
) -> dict:
    """Write a randomly initialised model folder (model.safetensors, config.json, the
    tokenizer, cosmosage-init.json) at `out`; an `out` made with the same settings and
    tokenizer is reused unless `force`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    preset = get_preset(preset_name)
    if dtype not in ("float32", "bfloat16", "float16"):
        raise DataError(f"--dtype must be float32, bfloat16 or float16, not {dtype!r}")
    out = Path(out)
    tok = load_tokenizer(str(tokenizer))
    settings = {
        "preset": preset_name,
        **asdict(preset),
        "tokenizer": str(tokenizer),
        "tokenizer_vocab": len(tok),
        "tokenizer_hash": _tokenizer_hash(tok),
        "seed": seed,
        "dtype": dtype,
        "format": FORMAT,
    }
    stamp = out / "cosmosage-init.json"
    if not force and stamp.is_file():
        old = json.loads(stamp.read_text())
        if old.get("settings") == settings:
            return {**old, "reused": True}

    fields = llama_config(preset, tok)
    torch.manual_seed(seed)
    config = LlamaConfig(**fields)
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    model = model.to(getattr(torch, dtype))
    info = {
        "settings": settings,
        "params": n_params,
        "vocab_size": fields["vocab_size"],
        "config": fields,
    }
    with atomic_path(out) as tmp:
        tmp.unlink()
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "cosmosage-init.json").write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
    return {**info, "reused": False}


def _tokenizer_hash(tok) -> str:
    """A hash of the tokenizer's vocabulary and special tokens, so a changed tokenizer
    is noticed even under the same name."""
    import hashlib

    h = hashlib.sha256()
    h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    h.update(json.dumps(tok.special_tokens_map, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
