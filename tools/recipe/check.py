"""`recipe check`: Axolotl's own validation plus what Axolotl cannot know.

Every check returns a list of `Problem`s; nothing here trains or downloads. Checks that
need the tokenizer read it from a local model folder, or from the model fragment's
`recipe.tokenizer` block for Hub models that are not on disk.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from cosmosage.tools.recipe.render import ROOT, Rendered

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

# Bytes of memory per parameter while training, by method (weights, grads, AdamW states
# in mixed precision for full; frozen 16-bit or 4-bit weights plus small adapters for
# LoRA/QLoRA), before activations; a 1.2 factor covers activations and buffers at
# modest sequence lengths with gradient checkpointing.
BYTES_PER_PARAM = {"full": 16.0, "lora": 2.2, "relora": 2.2, "qlora": 0.75}
OVERHEAD = 1.2


@dataclass
class Problem:
    check: str
    message: str
    severity: str = "error"  # error | warning

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


def known_keys() -> set[str]:
    with _quiet():
        from axolotl.utils.schemas.config import AxolotlInputConfig

    keys = set()
    for name, f in AxolotlInputConfig.model_fields.items():
        keys.add(name)
        if f.alias:
            keys.add(f.alias)
    return keys


def dataset_keys() -> set[str]:
    from axolotl.utils.schemas.datasets import SFTDataset

    return set(SFTDataset.model_fields)


# Options Axolotl renamed; the old names are dropped without a word.
RENAMED = {
    "relora_steps": "jagged_restart_steps",
    "relora_warmup_steps": "jagged_restart_warmup_steps",
    "relora_anneal_steps": "jagged_restart_anneal_steps",
}


def suggest(key: str, candidates: set[str]) -> str:
    if key in RENAMED:
        return f"; it was renamed: use `{RENAMED[key]}`"
    close = difflib.get_close_matches(key, sorted(candidates), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def check_axolotl_schema(cfg: dict) -> list[Problem]:
    """Validate with Axolotl's pydantic schema; report keys it silently drops."""
    problems = []
    try:
        with _quiet():
            from axolotl.utils.config import validate_config
            from axolotl.utils.dict import DictDefault

            validated = validate_config(DictDefault(json.loads(json.dumps(cfg))))
    except Exception as exc:  # pydantic ValidationError or Axolotl's ValueError
        msg = str(exc).strip().replace("\n", "\n    ")
        return [Problem("axolotl", msg)]
    kept = set(validated.keys())
    known = known_keys()
    for key in cfg:
        if key not in kept and key not in known:
            problems.append(
                Problem(
                    "unknown-key",
                    f"`{key}` is not an Axolotl option and would be silently dropped{suggest(key, known)}",
                )
            )
    ds_known = dataset_keys()
    for group in ("datasets", "test_datasets"):
        for i, ds in enumerate(cfg.get(group) or []):
            if not isinstance(ds, dict):
                continue
            for key in ds:
                if key not in ds_known:
                    problems.append(
                        Problem(
                            "unknown-key",
                            f"`{group}[{i}].{key}` is not a dataset option{suggest(key, ds_known)}",
                        )
                    )
    return problems


def _local(path: str | None, root: Path) -> Path | None:
    if not path:
        return None
    p = Path(path)
    p = p if p.is_absolute() else root / p
    return p


def build_outputs(meta: dict) -> set[str]:
    """Every path that a `recipe.builds` entry makes (`output` plus `extra_outputs`)."""
    out = set()
    for b in meta.get("builds") or []:
        out.add(str(b["output"]))
        out.update(str(x) for x in b.get("extra_outputs") or [])
    return out


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "build/", "samples/", "runs/")) or Path(path).suffix in {
        ".json",
        ".jsonl",
        ".parquet",
        ".csv",
        ".arrow",
    }


def tokenizer_specials(cfg: dict, meta: dict, root: Path) -> dict | None:
    """pad/eos/bos and chat template of the tokenizer Axolotl will load, if knowable offline."""
    info: dict = {}
    src = cfg.get("tokenizer_config") or cfg.get("base_model")
    local = _local(src, root)
    if local and (local / "tokenizer_config.json").is_file():
        tc = json.loads((local / "tokenizer_config.json").read_text())
        for k in ("bos_token", "eos_token", "pad_token", "unk_token"):
            v = tc.get(k)
            info[k] = v.get("content") if isinstance(v, dict) else v
        info["chat_template"] = (
            bool(tc.get("chat_template")) or (local / "chat_template.jinja").is_file()
        )
    elif meta.get("tokenizer"):
        info.update(meta["tokenizer"])
    else:
        return None
    for k, v in (cfg.get("special_tokens") or {}).items():
        info[k] = v
    return info


def check_tokens(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    info = tokenizer_specials(cfg, meta, root)
    if info is None:
        return [
            Problem(
                "pad-token",
                "cannot see the tokenizer offline; add `recipe.tokenizer` (bos/eos/pad) to the model fragment",
                "warning",
            )
        ]
    pad, eos = info.get("pad_token"), info.get("eos_token")
    fix = "set `special_tokens: {pad_token: <a token that is not eos, e.g. <pad> or <unk>>}`"
    if not pad:
        return [
            Problem(
                "pad-token",
                f"the tokenizer has no pad token, so Axolotl falls back to eos ({eos!r}); "
                f"padding then masks eos and the model never learns to stop: {fix}",
            )
        ]
    if pad == eos:
        return [
            Problem(
                "pad-token",
                f"pad token equals eos ({eos!r}): padding masks eos and the model never learns to stop "
                f"(it writes follow-on prompts): {fix}",
            )
        ]
    return []


def check_chat_template(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    chat = [
        ds
        for ds in (cfg.get("datasets") or [])
        if isinstance(ds, dict) and ds.get("type") == "chat_template"
    ]
    if not chat:
        return []
    template = cfg.get("chat_template")
    if template and template != "tokenizer_default":
        return []
    if template == "jinja" and cfg.get("chat_template_jinja"):
        return []
    info = tokenizer_specials(cfg, meta, root) or {}
    if template == "tokenizer_default" and info.get("chat_template"):
        return []
    why = (
        "`chat_template: tokenizer_default` but the tokenizer has no chat template"
        if template
        else "chat data (`type: chat_template`) but no `chat_template` is set"
    )
    return [
        Problem(
            "chat-template",
            f"{why}; set `chat_template:` to a named template (e.g. chatml, mistral_v1) or `jinja` with `chat_template_jinja`",
        )
    ]


def check_files(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    """Local dataset files and model folders exist, or the recipe says how to build them."""
    builds = build_outputs(meta)
    problems = []
    paths = []
    for group in ("datasets", "test_datasets"):
        for i, ds in enumerate(cfg.get(group) or []):
            if isinstance(ds, dict) and ds.get("path") and _looks_local(str(ds["path"])):
                paths.append((f"{group}[{i}].path", str(ds["path"])))
    base = cfg.get("base_model")
    if base and _looks_local(str(base)) and not str(base).startswith("<"):
        paths.append(("base_model", str(base)))
    for field_name, path in paths:
        if _local(path, root).exists():
            continue
        if path in builds:
            continue  # `recipe run` builds it first
        hint = ""
        if path.startswith("build/data"):
            hint = " (make it with a `cosmosage data ...` command, or add it to `recipe.builds`)"
        problems.append(Problem("files", f"{field_name}: {path} does not exist{hint}"))
    return problems


def params_from_config(c: dict) -> int | None:
    """Parameter count of a decoder-only transformer from its config.json (dense models)."""
    try:
        h, layers, vocab = int(c["hidden_size"]), int(c["num_hidden_layers"]), int(c["vocab_size"])
        inter = int(c.get("intermediate_size") or 4 * h)
        heads = int(c.get("num_attention_heads") or 1)
        kv = int(c.get("num_key_value_heads") or heads)
    except (KeyError, TypeError, ValueError):
        return None
    head_dim = int(c.get("head_dim") or h // heads)
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q, o + k, v
    mlp = 3 * h * inter  # gate, up, down
    embed = vocab * h * (1 if c.get("tie_word_embeddings") else 2)
    return embed + layers * (attn + mlp + 2 * h) + h


def model_params(cfg: dict, meta: dict, root: Path) -> float | None:
    """From the model's config.json when it is on disk (a folder or the Hub cache),
    else from the model fragment's `recipe.params`."""
    base = str(cfg.get("base_model") or "")
    local = _local(base, root)
    path = local / "config.json" if local and (local / "config.json").is_file() else None
    if path is None and base.count("/") == 1:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(base, "config.json")
        path = Path(found) if isinstance(found, str) else None
    if path is not None:
        n = params_from_config(json.loads(path.read_text()))
        if n:
            return float(n)
    return float(meta["params"]) if meta.get("params") else None


def check_hardware(cfg: dict, meta: dict, root: Path = ROOT) -> list[Problem]:
    hw = meta.get("hardware") or {}
    problems = []
    if hw.get("name") == "cpu":
        for key, why in CUDA_ONLY.items():
            value = cfg.get(key)
            if value not in (None, False, "false", 0):
                problems.append(
                    Problem(
                        "cpu-profile",
                        f"`{key}: {value}` on the cpu profile: {why}; set it false or remove it",
                    )
                )
    params = model_params(cfg, meta, root)
    method = meta.get("method") or (
        "qlora" if cfg.get("load_in_4bit") else "lora" if cfg.get("adapter") else "full"
    )
    if params:
        need = float(params) * BYTES_PER_PARAM.get(method, 16.0) * OVERHEAD / 2**30
        shards = 1
        if (
            cfg.get("deepspeed")
            and "zero3" in str(cfg.get("deepspeed"))
            or cfg.get("fsdp")
            or cfg.get("fsdp_config")
        ):
            shards = max(int(hw.get("gpus", 1)), 1)
        per_device = hw.get("gpu_memory_gb") if hw.get("gpus") else hw.get("memory_gb")
        if per_device and need / shards > float(per_device):
            problems.append(
                Problem(
                    "hardware",
                    f"{method} training of a {float(params) / 1e9:.2f}B-parameter model needs about "
                    f"{need / shards:.0f} GiB per device; the {hw.get('name')} profile has {per_device} GiB "
                    "(use qlora/lora, a larger profile, or ZeRO-3/FSDP across GPUs)",
                )
            )
    return problems


def check_rendered(r: Rendered, root: Path = ROOT, schema: bool = True) -> list[Problem]:
    """Every problem in one stage recipe; pipelines are checked stage by stage by the caller."""
    cfg, meta = r.config, r.meta
    problems: list[Problem] = []
    if not cfg.get("base_model"):
        problems.append(
            Problem("model", "no `base_model` (add a models/ fragment to recipe.extends)")
        )
    if not cfg.get("datasets"):
        problems.append(Problem("data", "no `datasets`"))
    if schema:
        problems += check_axolotl_schema(cfg)
    problems += check_tokens(cfg, meta, root)
    problems += check_chat_template(cfg, meta, root)
    problems += check_files(cfg, meta, root)
    problems += check_hardware(cfg, meta, root)
    return problems
