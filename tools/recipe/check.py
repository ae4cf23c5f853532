"""`recipe check`: Axolotl's own validation plus what Axolotl cannot know.

Every check returns a list of `Problem`s; nothing here trains or downloads. Checks that
need the tokenizer read it from a local model folder, the Hugging Face cache, or the
copy of the same vocabulary that the model fragment names (`recipe.tokenizer.local_copy`),
and fall back to the fragment's `recipe.tokenizer` block for the special tokens.

Severities: `error` fails the check (and `recipe run`), `warning` is printed, `info` is
an estimate the check prints (disk, memory, restarts). docs/gpu.md explains the memory
and disk formulas.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmosage.dataprep.io import manifest_path
from cosmosage.tools.recipe.render import ROOT, Rendered

# The checks run Axolotl's loaders in this process; they must not report to its telemetry.
os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")

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


# --------------------------------------------------------------------------- schema


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


def deprecated_keys() -> dict[str, str]:
    """Keys Axolotl still accepts but has deprecated, with its own advice."""
    with _quiet():
        from axolotl.utils.schemas.config import AxolotlInputConfig
        from axolotl.utils.schemas.deprecated import DeprecatedParameters

    out: dict[str, str] = {}
    for name, f in AxolotlInputConfig.model_fields.items():
        note = f.deprecated
        if note:
            out[name] = note if isinstance(note, str) else getattr(note, "message", str(note))
    for name in DeprecatedParameters.model_fields:
        out.setdefault(name, "no longer supported")
    return out


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
            from axolotl.utils.config import prepare_plugins, validate_config
            from axolotl.utils.dict import DictDefault

            plain = DictDefault(json.loads(json.dumps(cfg)))
            # as Axolotl's own CLI does: plugins add their keys to the schema first
            prepare_plugins(plain)
            validated = validate_config(plain)
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


def check_deprecated(cfg: dict) -> list[Problem]:
    """Deprecated keys: Axolotl still maps most of them, but the legacy attention flags
    (`flash_attention`, `sdp_attention`, ...) are refused beside `attn_implementation`,
    so `--set attn_implementation=...` fails on any recipe that carries one."""
    from axolotl.utils.schemas.enums import LEGACY_ATTN_FLAG_TO_IMPL

    problems = []
    notes = deprecated_keys()
    for key, value in cfg.items():
        if key not in notes:
            continue
        extra = ""
        if key in LEGACY_ATTN_FLAG_TO_IMPL:
            extra = (
                f" (Axolotl refuses it beside `attn_implementation`, so `--set attn_implementation=...` "
                f"fails; write `attn_implementation: {LEGACY_ATTN_FLAG_TO_IMPL[key]}` instead)"
            )
        problems.append(
            Problem("deprecated", f"`{key}: {value}` is deprecated: {notes[key]}{extra}", "warning")
        )
    return problems


# --------------------------------------------------------------------------- files


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


# --------------------------------------------------------------------------- tokenizer


def _hub_cached_folder(repo: str, filename: str) -> Path | None:
    """The snapshot folder of a Hub repo in the local cache that holds `filename`."""
    if repo.count("/") != 1 or repo.startswith((".", "/")):
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    return Path(found).parent if isinstance(found, str) else None


def tokenizer_folder(cfg: dict, meta: dict, root: Path) -> tuple[Path | None, str]:
    """A folder on disk with the tokenizer Axolotl would load, and what it is: the model
    folder, the Hugging Face cache, or the fragment's `recipe.tokenizer.local_copy`."""
    src = str(cfg.get("tokenizer_config") or cfg.get("base_model") or "")
    local = _local(src, root)
    if local and (local / "tokenizer_config.json").is_file():
        return local, f"the model folder {src}"
    cached = _hub_cached_folder(src, "tokenizer_config.json")
    if cached is not None and (cached / "config.json").is_file():
        return cached, f"{src} in the Hugging Face cache"
    copy = (meta.get("tokenizer") or {}).get("local_copy")
    path = _local(str(copy), root) if copy else None
    if path and (path / "tokenizer_config.json").is_file():
        return path, f"{copy} (a local copy of its vocabulary)"
    return None, ""


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


def check_flash_attention(cfg: dict) -> list[Problem]:
    """`attn_implementation: flash_attention_2` without the flash-attn package: Axolotl
    falls back to a kernel fetched from the Hub, which an offline run cannot fetch. An
    error on a CUDA machine (the run would fail after loading), a warning elsewhere (the
    recipe is meant for another machine)."""
    import importlib.util

    if str(cfg.get("attn_implementation")) != "flash_attention_2":
        return []
    if importlib.util.find_spec("flash_attn") is not None:
        return []
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    return [
        Problem(
            "attention",
            "`attn_implementation: flash_attention_2` but the flash-attn package is not "
            "installed here: install the `gpu` extra (README, GPU install) or use the "
            "docker image, or run with `--set attn_implementation=sdpa`",
            "error" if cuda else "warning",
        )
    ]


def check_completion_eos(cfg: dict, meta: dict) -> list[Problem]:
    """A completion (continued pretraining) stage appends eos to every chunk, chunks cut
    mid-document included: that token should be the base model's end of text, not the
    chat template's end of turn, or pretraining teaches the end-of-turn token after
    fragments of papers."""
    kinds = {str(d.get("type")) for d in cfg.get("datasets") or [] if isinstance(d, dict)}
    if kinds != {"completion"}:
        return []
    eos = (cfg.get("special_tokens") or {}).get("eos_token")
    base_eos = (meta.get("tokenizer") or {}).get("eos_token")
    if not eos or not base_eos or eos == base_eos:
        return []
    return [
        Problem(
            "eos",
            f"a completion stage whose eos is {eos!r} (an end-of-turn token) ends every chunk "
            f"with it, mid-paper ones included; set `special_tokens: {{eos_token: "
            f"{base_eos!r}}}` (the base model's end of text) in this stage",
        )
    ]


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


def _chat_datasets(cfg: dict) -> list[tuple[int, dict]]:
    return [
        (i, ds)
        for i, ds in enumerate(cfg.get("datasets") or [])
        if isinstance(ds, dict) and str(ds.get("type") or "").split(".")[0] == "chat_template"
    ]


def check_chat_template(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    if not _chat_datasets(cfg):
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


# --------------------------------------------------------------------------- end of turn

# Config keys that Axolotl's tokenizer loader and chat_template strategy read.
TOKENIZER_KEYS = (
    "special_tokens", "tokens", "added_tokens_overrides", "chat_template",
    "chat_template_jinja", "chat_template_kwargs", "default_system_message", "eot_tokens",
    "tokenizer_use_fast", "tokenizer_legacy", "tokenizer_type", "adapter",
    "lora_modules_to_save", "trust_remote_code", "train_on_inputs", "sequence_len",
)  # fmt: skip
# Dataset keys that change which tokens train in a chat_template dataset.
LABEL_KEYS = (
    "roles_to_train", "train_on_eos", "train_on_eot", "chat_template",
    "chat_template_jinja", "drop_system_message",
)  # fmt: skip
# One conversation in the canonical shape, rendered through the recipe's template.
CHAT_SAMPLE = [
    {"role": "system", "content": "You answer questions about cosmology."},
    {"role": "user", "content": "What is the cosmic microwave background?"},
    {"role": "assistant", "content": "Relic radiation from the epoch of recombination."},
    {"role": "user", "content": "How hot is it today?"},
    {"role": "assistant", "content": "About 2.725 K."},
]
IGNORE = -100
AXOLOTL_EOT_WINDOW = 3  # Axolotl looks this many tokens past a turn for its terminator


def load_axolotl_tokenizer(cfg: dict, folder: Path) -> Any:
    """The tokenizer as Axolotl's loader builds it for this config (special tokens,
    added tokens, chat template), read from `folder` instead of the Hub."""
    from axolotl.loaders.tokenizer import load_tokenizer
    from axolotl.utils.dict import DictDefault

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        c = {k: cfg[k] for k in TOKENIZER_KEYS if k in cfg}
        c.update(
            base_model=str(folder),
            base_model_config=str(folder),
            tokenizer_config=str(folder),
            output_dir=tmp,
        )
        return load_tokenizer(DictDefault(json.loads(json.dumps(c))))


@dataclass
class TurnEnd:
    """How the assistant turns of the sample conversation end, and what trains."""

    template: str
    ending: str  # the text after the last assistant answer
    ending_pieces: list[str]  # ... as this tokenizer splits it
    eot_names: list[str]  # the tokens Axolotl trains as end of turn (eot_tokens, else eos)
    eos: str
    found: list[int | None] = field(default_factory=list)  # terminator index per turn
    trained: list[bool] = field(default_factory=list)
    terminator: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.found) and all(i is not None for i in self.found) and all(self.trained)


def analyse_turn_end(tokenizer: Any, cfg: dict, ds: dict) -> TurnEnd:
    """Render CHAT_SAMPLE with Axolotl's chat_template strategy for dataset entry `ds`
    and find, after each assistant answer, the end-of-turn token and whether it trains
    (with the dataset's train_on_eos/train_on_eot as Axolotl applies them)."""
    from axolotl.prompt_strategies.chat_template import load as load_chat
    from axolotl.utils.dict import DictDefault

    c = DictDefault(json.loads(json.dumps({k: cfg[k] for k in TOKENIZER_KEYS if k in cfg})))
    c.setdefault("sequence_len", 4096)
    ds_cfg = {k: ds[k] for k in LABEL_KEYS if k in ds}
    ds_cfg.update(type="chat_template", field_messages="messages")
    with _quiet():
        strategy = load_chat(tokenizer, c, ds_cfg)
        messages = [dict(m) for m in CHAT_SAMPLE]
        try:
            out = strategy.tokenize_prompt({"messages": messages})
        except Exception:  # a template without a system role
            messages = [dict(m) for m in CHAT_SAMPLE if m["role"] != "system"]
            out = strategy.tokenize_prompt({"messages": messages})
        template = strategy.prompter.chat_template
        text = tokenizer.apply_chat_template(messages, tokenize=False, chat_template=template)
    ids, labels = list(out["input_ids"]), list(out["labels"])
    # what Axolotl looks for after a turn: its eot_tokens that are one token, and eos
    names = list(strategy.eot_tokens) or [tokenizer.eos_token]
    eot_ids = {tokenizer.eos_token_id}
    for token in strategy.eot_tokens:
        enc = tokenizer.encode(token, add_special_tokens=False)
        if len(enc) == 1:
            eot_ids.add(enc[0])
    name = ds.get("chat_template") or cfg.get("chat_template") or "tokenizer_default"
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]] if list(enc["input_ids"]) == ids else []

    # where each assistant answer ends, in characters, then in tokens
    ends, cursor = [], 0
    for m in messages:
        content = m["content"].strip()
        pos = text.find(content, cursor)
        if pos < 0:
            continue
        cursor = pos + len(content)
        if m["role"] == "assistant":
            ends.append(cursor)
    last_end = ends[-1] if ends else len(text)
    ending = text[last_end:].strip() or text[last_end:]
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode(ending, add_special_tokens=False))[
        :12
    ]
    result = TurnEnd(str(name), ending, list(pieces), names, str(tokenizer.eos_token))
    for end in ends:
        if offsets:
            after = next((k for k, (a, b) in enumerate(offsets) if b > end), len(ids))
            window = range(after, min(after + AXOLOTL_EOT_WINDOW + 1, len(ids)))
        else:  # no offsets: any terminator anywhere counts
            window = range(len(ids))
        hit = next((k for k in window if ids[k] in eot_ids), None)
        result.found.append(hit)
        result.trained.append(hit is not None and labels[hit] != IGNORE)
        if hit is not None and result.terminator is None:
            result.terminator = tokenizer.convert_ids_to_tokens(ids[hit])
    return result


def _turn_end_problem(where: str, t: TurnEnd, cfg: dict, ds: dict) -> Problem | None:
    stop = "the model never learns to stop"
    ending = t.ending
    split = (
        f"one token {t.ending_pieces[0]!r}"
        if len(t.ending_pieces) == 1
        else f"{len(t.ending_pieces)} tokens {t.ending_pieces}"
    )
    if t.ok:
        return None
    if any(i is None for i in t.found):
        if len(t.ending_pieces) == 1:
            fix = (
                f"make it the end-of-turn token: `special_tokens: {{eos_token: {ending!r}}}` "
                f"(generation then stops there) or `eot_tokens: [{ending!r}]`"
            )
        else:
            fix = (
                "use a template that ends a turn with eos (e.g. `chat_template: mistral_v1` for "
                "Mistral-7B-v0.1), or add its tokens (`tokens:`), name the terminator in "
                "`eot_tokens:` and train the new embeddings (`lora_modules_to_save: "
                "[embed_tokens, lm_head]` with an adapter)"
            )
        return Problem(
            "end-of-turn",
            f"{where}: the {t.template} template ends an assistant turn with {ending!r}, which this "
            f"tokenizer encodes as {split}; Axolotl trains {t.eot_names} as the end of a turn "
            f"(eos {t.eos!r}), and no such token follows the assistant turns (Axolotl only logs "
            f"that the turn terminator won't be trained): {stop}. Fix: {fix}",
        )
    eos_opt, eot_opt = ds.get("train_on_eos", "turn"), ds.get("train_on_eot")
    return Problem(
        "end-of-turn",
        f"{where}: the end-of-turn token {t.terminator!r} follows each assistant turn but is not "
        f"trained (train_on_eos: {eos_opt}, train_on_eot: {eot_opt}): {stop}. Fix: "
        "`train_on_eos: turn` (Axolotl's default) on the dataset",
    )


def check_end_of_turn(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    """Render the chat template with the model's tokenizer, as Axolotl will, and fail
    when the assistant turns do not end with a single end-of-turn token that trains."""
    chats = _chat_datasets(cfg)
    if not chats or check_chat_template(cfg, meta, root):
        return []
    folder, what = tokenizer_folder(cfg, meta, root)
    if folder is None:
        return [
            Problem(
                "end-of-turn",
                f"no tokenizer of {cfg.get('base_model')} on disk (not a local folder, not in the "
                "Hugging Face cache, no `recipe.tokenizer.local_copy`): the chat template was not "
                "rendered, so whether a single end-of-turn token trains is unchecked; "
                "`recipe run` stops here until it can be checked: `make tokenizers` makes the "
                "local copies the model fragments name, or fetch it with "
                f"`hf download {cfg.get('base_model')} --include 'tokenizer*' '*.json'`",
                "warning",
            )
        ]
    try:
        tokenizer = load_axolotl_tokenizer(cfg, folder)
    except Exception as exc:
        return [Problem("end-of-turn", f"Axolotl's tokenizer loader refuses it: {_one_line(exc)}")]
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for i, ds in chats:
        key = json.dumps({k: ds.get(k) for k in LABEL_KEYS}, sort_keys=True, default=str)
        where = f"datasets[{i}]"
        if key in seen:
            continue  # same labelling as an earlier entry
        seen[key] = where
        try:
            t = analyse_turn_end(tokenizer, cfg, ds)
        except Exception as exc:  # Axolotl's own refusals (multi-token eot_tokens, ...)
            problems.append(Problem("end-of-turn", f"{where}: {_one_line(exc)}"))
            continue
        bad = _turn_end_problem(f"{where} with {what}", t, cfg, ds)
        if bad:
            problems.append(bad)
            continue
        problems.append(
            Problem(
                "end-of-turn",
                f"{where}: the {t.template} template ends each assistant turn with "
                f"{t.terminator!r}, one token that trains (rendered with {what})",
                "info",
            )
        )
        if t.terminator != t.eos:
            problems.append(
                Problem(
                    "end-of-turn",
                    f"{where}: the end-of-turn token {t.terminator!r} trains, but eos is "
                    f"{t.eos!r}: generation stops only at eos unless told to stop at "
                    f"{t.terminator!r} (`special_tokens: {{eos_token: {t.terminator!r}}}` makes "
                    "them one)",
                    "warning",
                )
            )
    return problems


# --------------------------------------------------------------------------- checkpoints


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "", "false", "False")


def has_eval(cfg: dict) -> bool:
    return bool(cfg.get("test_datasets")) or bool(cfg.get("val_set_size"))


def _is_multiple(a: float, b: float) -> bool:
    """a is a whole multiple of b (steps, or shares of the run below 1)."""
    ratio = a / b
    return abs(ratio - round(ratio)) < 1e-6 and round(ratio) >= 1


def check_checkpoints(cfg: dict) -> list[Problem]:
    """The checkpoint with the lowest eval loss must survive rotation until `recipe run`
    selects it (tools/run/metrics.py): the trainer keeps `save_total_limit` checkpoints
    (Axolotl: 4 when unset) and protects the best one only when `metric_for_best_model`
    names the eval loss; and a checkpoint has an eval loss only if an eval ran at its step."""
    if not has_eval(cfg) or cfg.get("save_strategy") == "no":
        return []
    limit = cfg.get("save_total_limit") or AXOLOTL_SAVE_TOTAL_LIMIT
    limit_text = f"save_total_limit {limit}" + ("" if cfg.get("save_total_limit") else " (default)")
    problems = []
    metric = str(cfg.get("metric_for_best_model") or "")
    if metric.removeprefix("eval_") != "loss":
        why = (
            f"`metric_for_best_model: {metric}` ranks checkpoints by another metric"
            if metric
            else "no `metric_for_best_model`"
        )
        problems.append(
            Problem(
                "checkpoints",
                f"{why}: the trainer keeps the newest checkpoints ({limit_text}) and can delete "
                "the one with the lowest eval loss before `recipe run` selects it; set "
                "`metric_for_best_model: eval_loss` (the trainer then never rotates the best "
                "checkpoint away)",
            )
        )
    elif cfg.get("greater_is_better"):
        problems.append(
            Problem(
                "checkpoints",
                "`greater_is_better: true` with eval loss protects the worst checkpoint; remove it",
            )
        )
    save_steps, eval_steps = cfg.get("save_steps"), cfg.get("eval_steps")
    saves, evals = cfg.get("saves_per_epoch"), cfg.get("evals_per_epoch")
    misaligned = None
    if save_steps and eval_steps and (float(save_steps) < 1) != (float(eval_steps) < 1):
        # below 1 the trainer reads a step count as a share of all steps
        misaligned = "save_steps and eval_steps are counted differently (share of the run vs steps)"
    elif save_steps and eval_steps and not _is_multiple(float(save_steps), float(eval_steps)):
        misaligned = f"save_steps {save_steps} is not a multiple of eval_steps {eval_steps}"
    elif saves and evals and int(evals) % int(saves):
        misaligned = f"evals_per_epoch {evals} is not a multiple of saves_per_epoch {saves}"
    elif (save_steps and evals) or (saves and eval_steps):
        misaligned = "saves and evals are counted differently (steps vs per epoch)"
    if not problems and not misaligned:
        problems.append(
            Problem(
                "checkpoints",
                f"the checkpoint with the lowest eval loss is kept until selection "
                f"(metric_for_best_model: {metric}, {limit_text})",
                "info",
            )
        )
    if misaligned:
        problems.append(
            Problem(
                "checkpoints",
                f"{misaligned}: a checkpoint saved where no eval ran has no eval loss, so it can "
                "be neither protected nor selected; save where you evaluate",
            )
        )
    return problems


# --------------------------------------------------------------------------- model size


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


def model_architecture(cfg: dict, meta: dict, root: Path) -> dict | None:
    """The model's config.json when it is on disk (a folder or the Hub cache), else the
    model fragment's `recipe.architecture` (the same keys)."""
    base = str(cfg.get("base_model") or "")
    local = _local(base, root)
    path = local / "config.json" if local and (local / "config.json").is_file() else None
    if path is None:
        cached = _hub_cached_folder(base, "config.json")
        path = cached / "config.json" if cached else None
    if path is not None:
        c = json.loads(path.read_text())
        c = c.get("text_config", c) if "hidden_size" not in c else c
        if params_from_config(c):
            return c
    arch = meta.get("architecture")
    return dict(arch) if isinstance(arch, dict) and params_from_config(arch) else None


def model_params(cfg: dict, meta: dict, root: Path) -> float | None:
    """From the model's config.json when it is on disk (a folder or the Hub cache),
    else the fragment's `recipe.architecture`, else its `recipe.params`."""
    arch = model_architecture(cfg, meta, root)
    if arch:
        return float(params_from_config(arch))
    return float(meta["params"]) if meta.get("params") else None


def method_of(cfg: dict, meta: dict) -> str:
    if meta.get("method"):
        return str(meta["method"])
    if cfg.get("relora"):
        return "relora"
    if cfg.get("load_in_4bit") or cfg.get("adapter") == "qlora":
        return "qlora"
    return "lora" if cfg.get("adapter") else "full"


# --------------------------------------------------------------------------- sharding


@dataclass
class Sharding:
    """How training states are spread over the GPUs, read from the DeepSpeed JSON or the
    FSDP keys (never from a file name)."""

    kind: str = "none"  # none | zero1 | zero2 | zero3 | fsdp-full | fsdp-grad-op
    shards: int = 1
    offload_optimizer: bool = False
    offload_params: bool = False
    source: str = ""
    note: str = ""

    def divides(self, part: str) -> int:
        """Over how many GPUs `part` (weights | grads | optimizer) is split."""
        split = {
            "zero1": {"optimizer"},
            "zero2": {"optimizer", "grads"},
            "zero3": {"optimizer", "grads", "weights"},
            "fsdp-grad-op": {"optimizer", "grads"},
            "fsdp-full": {"optimizer", "grads", "weights"},
        }.get(self.kind, set())
        return self.shards if part in split else 1


def _deepspeed_json(value: Any, root: Path) -> tuple[dict | None, str]:
    if isinstance(value, dict):
        return value, "the inline DeepSpeed config"
    path = _local(str(value), root)
    if path is None or not path.is_file():
        return None, f"DeepSpeed config {value} not found"
    try:
        return json.loads(path.read_text()), str(value)
    except json.JSONDecodeError as exc:
        return None, f"DeepSpeed config {value} is not JSON ({exc})"


def sharding(cfg: dict, meta: dict, root: Path) -> Sharding:
    gpus = max(int((meta.get("hardware") or {}).get("gpus") or 1), 1)
    if cfg.get("deepspeed"):
        ds, source = _deepspeed_json(cfg["deepspeed"], root)
        if ds is None:
            return Sharding(note=f"{source}: sharding unknown, estimated unsharded")
        zero = ds.get("zero_optimization") or {}
        stage = int(zero.get("stage") or 0)
        off_opt = str((zero.get("offload_optimizer") or {}).get("device", "none")) != "none"
        off_par = str((zero.get("offload_param") or {}).get("device", "none")) != "none"
        kind = {1: "zero1", 2: "zero2", 3: "zero3"}.get(stage, "none")
        return Sharding(kind, gpus, off_opt, off_par and stage == 3, f"{source} (stage {stage})")
    fsdp = cfg.get("fsdp_config") or {}
    legacy = cfg.get("fsdp") or []
    if fsdp or legacy:
        fsdp = fsdp if isinstance(fsdp, dict) else {}
        get = lambda k: fsdp.get(k, fsdp.get(f"fsdp_{k}"))  # noqa: E731
        strategy = str(get("sharding_strategy") or "").upper()
        reshard = get("reshard_after_forward")
        full = (
            reshard is not False
            and strategy not in ("SHARD_GRAD_OP", "NO_SHARD")
            and not (isinstance(legacy, list) and "shard_grad_op" in legacy)
        )
        if strategy == "NO_SHARD":
            return Sharding(source="FSDP (NO_SHARD)")
        offload = bool(get("offload_params"))
        return Sharding(
            "fsdp-full" if full else "fsdp-grad-op",
            gpus,
            offload,
            offload,
            "fsdp_config" + (" (reshard_after_forward)" if full else ""),
        )
    return Sharding()


# --------------------------------------------------------------------------- memory


def checkpointing(cfg: dict) -> bool:
    """Gradient (activation) checkpointing: Axolotl's key, or FSDP's own."""
    fsdp = cfg.get("fsdp_config") if isinstance(cfg.get("fsdp_config"), dict) else {}
    return any(
        _truthy(v)
        for v in (
            cfg.get("gradient_checkpointing"),
            fsdp.get("activation_checkpointing"),
            fsdp.get("fsdp_activation_checkpointing"),
        )
    )


def _dtype_bytes(cfg: dict) -> int:
    """2 for bf16/fp16 training (Axolotl then loads the weights in that dtype), else 4."""
    return 2 if _truthy(cfg.get("bf16")) or _truthy(cfg.get("fp16")) else 4


# the Axolotl plugin that keeps a full fine-tune's weights in fp32 under bf16 compute
# (tools/run/master_weights.py; named in recipes/_base/methods/full.yaml)
MASTER_WEIGHTS_PLUGIN = "cosmosage.tools.run.master_weights.FP32MasterWeights"


def master_copy(cfg: dict) -> str | None:
    """Who keeps fp32 master weights of a 16-bit full fine-tune: "deepspeed" (its
    mixed-precision optimizer), "plugin" (FP32MasterWeights: the weights themselves are
    fp32, compute bf16), or None (AdamW updates 16-bit weights, or training is fp32)."""
    if _dtype_bytes(cfg) != 2:
        return None
    if cfg.get("deepspeed"):
        return "deepspeed"
    if MASTER_WEIGHTS_PLUGIN in (cfg.get("plugins") or []):
        return "plugin"
    return None


def check_master_weights(cfg: dict, meta: dict) -> list[Problem]:
    """A full fine-tune in bf16/fp16 mixed precision outside DeepSpeed without the fp32
    master-weights plugin: Axolotl loads the weights in 16 bits and AdamW updates them
    there, so every update below half a bf16 step (about 1e-3 of the weight) rounds away."""
    if method_of(cfg, meta) != "full" or _dtype_bytes(cfg) != 2 or master_copy(cfg):
        return []
    precision = "bf16" if _truthy(cfg.get("bf16")) else "fp16"
    lr = cfg.get("learning_rate")
    at = f" at learning rate {lr}" if lr is not None else ""
    return [
        Problem(
            "precision",
            f"full fine-tune with `{precision}: {cfg.get(precision)}` outside DeepSpeed stores "
            "the weights in 16 bits with no fp32 master copy: AdamW's updates smaller than half "
            f"a {precision} step (most of them{at}) round away. Add `plugins: "
            f"[{MASTER_WEIGHTS_PLUGIN}]` (recipes/_base/methods/full.yaml has it; keep it beside "
            "any other plugin), or train under DeepSpeed",
        )
    ]


def _optimizer_state_bytes(cfg: dict, param_bytes: int, master: bool) -> float:
    """Optimizer bytes per trained parameter: 8-bit Adam keeps two 1-byte states; DeepSpeed
    keeps an fp32 master copy and two fp32 moments (12); torch AdamW keeps two moments in
    the parameter's dtype."""
    name = str(cfg.get("optimizer") or "adamw_torch")
    if "8bit" in name:
        return 2.0
    if master:
        return 12.0
    return 2.0 * param_bytes


def lora_targets(cfg: dict) -> list[str]:
    targets = cfg.get("lora_target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    if cfg.get("lora_target_linear") or not targets:
        return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return targets


def adapter_params(cfg: dict, arch: dict) -> int:
    """LoRA parameters: r x (in + out) for every targeted linear layer of every block."""
    h, layers = int(arch["hidden_size"]), int(arch["num_hidden_layers"])
    inter = int(arch.get("intermediate_size") or 4 * h)
    heads = int(arch.get("num_attention_heads") or 1)
    head_dim = int(arch.get("head_dim") or h // heads)
    kvd = int(arch.get("num_key_value_heads") or heads) * head_dim
    shapes = {
        "q_proj": (h, heads * head_dim),
        "k_proj": (h, kvd),
        "v_proj": (h, kvd),
        "o_proj": (heads * head_dim, h),
        "gate_proj": (h, inter),
        "up_proj": (h, inter),
        "down_proj": (inter, h),
    }
    r = int(cfg.get("lora_r") or 8)
    per_layer = sum(r * (a + b) for name, (a, b) in shapes.items() if name in lora_targets(cfg))
    return per_layer * layers


@dataclass
class MemoryEstimate:
    """Bytes per device while training; `parts` in the order they are printed."""

    parts: dict[str, float]
    per_device_of: str  # "GPU" or "CPU"
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        shown = " + ".join(f"{k} {v / GiB:.1f}" for k, v in self.parts.items() if v >= 0.05 * GiB)
        return f"~{self.total / GiB:.1f} GiB per {self.per_device_of} = {shown} GiB"


def memory_estimate(cfg: dict, meta: dict, root: Path) -> MemoryEstimate | None:
    """Memory per device: training states (weights, grads, optimizer, adapters; divided
    by the shards that hold them), activations kept for backward (batch x sequence x
    layers x hidden, or one layer's worth more with gradient checkpointing), the logits
    and their gradient (batch x sequence x vocabulary), and a fixed overhead. Formula and
    comparison with published figures: docs/gpu.md."""
    arch = model_architecture(cfg, meta, root)
    params = model_params(cfg, meta, root)
    if not params:
        return None
    method = method_of(cfg, meta)
    hw = meta.get("hardware") or {}
    gpu = int(hw.get("gpus") or 0) > 0
    d = _dtype_bytes(cfg)
    shard = sharding(cfg, meta, root)
    notes = [shard.note] if shard.note else []
    parts: dict[str, float] = {}
    if arch is None:  # a parameter count only: the per-parameter rule of thumb
        total = params * BYTES_PER_PARAM.get(method, 16.0) * OVERHEAD
        parts["states+activations (rule of thumb)"] = total / shard.divides("weights")
        notes.append("no architecture known: activations and logits not estimated")
        return MemoryEstimate(parts, "GPU" if gpu else "CPU", notes)

    h, layers = int(arch["hidden_size"]), int(arch["num_hidden_layers"])
    vocab = int(arch["vocab_size"])
    inter = int(arch.get("intermediate_size") or 4 * h)
    heads = int(arch.get("num_attention_heads") or 1)
    head_dim = int(arch.get("head_dim") or h // heads)
    kvd = int(arch.get("num_key_value_heads") or heads) * head_dim
    embed = vocab * h * (1 if arch.get("tie_word_embeddings") else 2)
    master = master_copy(cfg) if method == "full" else None

    # training states
    if method == "full" and master == "plugin":
        # the weights, their gradients and AdamW's moments all fp32
        weights, grads = params * 4, params * 4
        optimizer = params * _optimizer_state_bytes(cfg, 4, False)
        adapters = 0.0
    elif method == "full":
        weights, grads = params * d, params * d
        optimizer = params * _optimizer_state_bytes(cfg, d, master == "deepspeed")
        adapters = 0.0
    else:
        if method == "qlora" or _truthy(cfg.get("load_in_4bit")):
            # NF4: 4 bits + ~0.03 bytes of (double-quantized) block constants per weight;
            # embeddings and lm_head stay in the compute dtype
            weights = (params - embed) * 0.53 + embed * d
        elif _truthy(cfg.get("load_in_8bit")):
            weights = (params - embed) * 1.0 + embed * d  # LLM.int8 weights
        else:
            weights = params * d
        grads = 0.0
        n_adapter = adapter_params(cfg, arch)
        # PEFT keeps adapter weights in fp32: weight 4 + grad 4 + optimizer states
        adapters = n_adapter * (8 + _optimizer_state_bytes(cfg, 4, False))
        saved = [str(m) for m in cfg.get("lora_modules_to_save") or []]
        copies = sum(vocab * h for m in saved if m in ("embed_tokens", "lm_head"))
        adapters += copies * (2 * d + _optimizer_state_bytes(cfg, d, False))
        optimizer = 0.0
    if shard.offload_params:
        weights = 0.0
    if shard.offload_optimizer:
        optimizer = 0.0
    parts["weights"] = weights / shard.divides("weights")
    if grads:
        parts["grads"] = grads / shard.divides("grads")
    if optimizer:
        parts["optimizer"] = optimizer / shard.divides("optimizer")
    if adapters:
        parts["adapters+states"] = adapters

    # activations: b x s tokens per device
    tokens = int(cfg.get("micro_batch_size") or 1) * int(cfg.get("sequence_len") or 2048)
    per_layer = 6 * h + 2 * kvd + 4 * inter  # saved for backward in one decoder block
    if method != "full" and float(cfg.get("lora_dropout") or 0) > 0:
        per_layer += 6 * h + inter  # each LoRA input's dropout copy
    if str(cfg.get("attn_implementation")) == "eager":
        per_layer += heads * int(cfg.get("sequence_len") or 2048)  # attention probabilities
    if checkpointing(cfg):
        acts = tokens * d * (layers * h + per_layer)  # layer inputs + one layer recomputed
        act_name = "activations (checkpointed)"
    else:
        acts = tokens * d * layers * per_layer
        act_name = "activations"
    parts[act_name] = float(acts)

    # logits: the model-dtype logits, fp32 log-probabilities kept for backward, their grad
    if _truthy(cfg.get("liger_fused_linear_cross_entropy")) or _truthy(
        cfg.get("cut_cross_entropy")
    ):
        logits = 0.0
        notes.append("fused linear cross-entropy: the logits are never materialized")
    elif _truthy(cfg.get("chunked_cross_entropy")):
        chunks = int(cfg.get("chunked_cross_entropy_num_chunks") or 8)
        logits = tokens * vocab * (d + 8 / chunks)
    else:
        logits = tokens * vocab * (d + 8)
    parts[f"logits ({tokens} tokens x {vocab} vocab)"] = logits

    subtotal = sum(parts.values())
    parts["overhead"] = 0.1 * subtotal + (GiB if gpu else 0.0)  # fragmentation, CUDA context
    return MemoryEstimate(parts, "GPU" if gpu else "CPU", notes)


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
        if str(cfg.get("attn_implementation")) in CUDA_ATTN:
            problems.append(
                Problem(
                    "cpu-profile",
                    f"`attn_implementation: {cfg['attn_implementation']}` on the cpu profile needs "
                    "CUDA kernels; use sdpa or eager",
                )
            )
    problems += check_flash_attention(cfg)
    est = memory_estimate(cfg, meta, root)
    if est is None:
        return problems
    per_device = hw.get("gpu_memory_gb") if hw.get("gpus") else hw.get("memory_gb")
    params = model_params(cfg, meta, root) or 0
    method = method_of(cfg, meta)
    shard = sharding(cfg, meta, root)
    where = (
        f" with {shard.kind} over {shard.shards} GPUs ({shard.source})" if shard.shards > 1 else ""
    )
    notes = "".join(f"; {n}" for n in est.notes)
    if per_device and est.total / GiB > float(per_device):
        problems.append(
            Problem(
                "hardware",
                f"{method} training of a {params / 1e9:.2f}B-parameter model{where} needs about "
                f"{est.total / GiB:.0f} GiB per device ({est.describe()}{notes}); the "
                f"{hw.get('name')} profile has {per_device} GiB (use qlora/lora, a larger profile, "
                "ZeRO-3/FSDP across GPUs, a smaller micro_batch_size or sequence_len, or a fused "
                "cross-entropy for large vocabularies)",
            )
        )
    elif hw.get("gpus"):
        problems.append(
            Problem(
                "memory",
                f"{method}{where}: {est.describe()} of {per_device}{notes}",
                "info",
            )
        )
        problems += check_needless_checkpointing(cfg, meta, root, float(per_device))
    return problems


# gradient checkpointing recomputes the forward pass: about a quarter of a step's time
def check_needless_checkpointing(
    cfg: dict, meta: dict, root: Path, per_device: float
) -> list[Problem]:
    """Gradient checkpointing on where the estimate without it fits with a fifth to spare."""
    if not cfg.get("gradient_checkpointing"):
        return []
    without = memory_estimate({**cfg, "gradient_checkpointing": False}, meta, root)
    if without is None or without.total / GiB > 0.8 * per_device:
        return []
    return [
        Problem(
            "memory",
            f"gradient_checkpointing is on, but without it the estimate is "
            f"{without.total / GiB:.0f} GiB of {per_device:g} per device: it costs about a "
            "quarter of the throughput for memory not needed; set `gradient_checkpointing: false`",
            "warning",
        )
    ]


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
    params = model_params(cfg, meta, root) or 0
    selected = params * 2
    total = keep * ckpt + final + selected
    text = (
        f"~{total / GB:,.0f} GB: {keep} checkpoints x {ckpt / GB:,.1f} GB ({what}) + final save "
        f"{final / GB:,.1f} GB + selected model {selected / GB:,.1f} GB"
    )
    return total, text


def check_disk(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    if not int((meta.get("hardware") or {}).get("gpus") or 0):
        return []
    est = disk_estimate(cfg, meta, root)
    return [Problem("disk", est[1], "info")] if est else []


# --------------------------------------------------------------------------- ReLoRA


def tokens_per_step(cfg: dict, meta: dict) -> int:
    gpus = max(int((meta.get("hardware") or {}).get("gpus") or 1), 1)
    return (
        int(cfg.get("micro_batch_size") or 1)
        * int(cfg.get("gradient_accumulation_steps") or 1)
        * int(cfg.get("sequence_len") or 2048)
        * gpus
    )


def data_tokens(cfg: dict, root: Path) -> tuple[int | None, str]:
    """Training tokens from the manifests beside the data files (`tokens` field)."""
    total = 0
    for i, ds in enumerate(cfg.get("datasets") or []):
        path = _local(str((ds or {}).get("path") or ""), root)
        man = manifest_path(path) if path else None
        if man is None or not man.is_file():
            return None, f"datasets[{i}] ({ds.get('path')}) has no manifest with a token count"
        tokens = json.loads(man.read_text()).get("tokens")
        if not isinstance(tokens, int):
            return None, f"the manifest of datasets[{i}] ({ds.get('path')}) counts no tokens"
        total += tokens
    return total, ""


def check_relora(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    """ReLoRA is LoRA plus restarts: without a first warmup the first cycle starts at the
    full learning rate (Axolotl's jagged scheduler warms up only after each restart), and
    a run shorter than one cycle never restarts."""
    if not cfg.get("relora"):
        return []
    problems = []
    restart = int(cfg.get("jagged_restart_steps") or 0)
    if not cfg.get("warmup_steps") and not cfg.get("warmup_ratio"):
        problems.append(
            Problem(
                "relora",
                f"no `warmup_steps`/`warmup_ratio`: the first cycle (steps 0-{restart}) starts at "
                f"the full learning rate {cfg.get('learning_rate')} (Axolotl's jagged scheduler "
                "warms up only after a restart); set a warmup for the first cycle",
            )
        )
    if not restart:
        return problems
    per_step = tokens_per_step(cfg, meta)
    epochs = float(cfg.get("num_epochs") or 1)
    need = restart * per_step / epochs
    if cfg.get("max_steps"):
        steps, how = int(cfg["max_steps"]), "max_steps"
    else:
        tokens, why = data_tokens(cfg, root)
        if tokens is None:
            problems.append(
                Problem(
                    "relora",
                    f"restarts not estimated: {why}; one restart every {restart} steps of "
                    f"{per_step:,} tokens needs more than {need / 1e6:,.1f}M training tokens "
                    f"over {epochs:g} epoch(s)",
                    "info",
                )
            )
            return problems
        steps = math.ceil(tokens * epochs / per_step)
        how = f"{tokens:,} tokens x {epochs:g} epoch(s) / {per_step:,} tokens a step"
    restarts = (steps - 1) // restart if steps else 0
    if restarts < 1:
        problems.append(
            Problem(
                "relora",
                f"about {steps} steps ({how}) but a restart every {restart} steps: no restart "
                f"happens, so this trains plain LoRA; a restart needs more than "
                f"{need / 1e6:,.1f}M tokens, or lower `jagged_restart_steps`",
                "warning",
            )
        )
    else:
        problems.append(
            Problem("relora", f"about {steps} steps ({how}): {restarts} restart(s)", "info")
        )
    return problems


# --------------------------------------------------------------------------- all


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
        problems += check_deprecated(cfg)
    problems += check_tokens(cfg, meta, root)
    problems += check_completion_eos(cfg, meta)
    problems += check_chat_template(cfg, meta, root)
    problems += check_end_of_turn(cfg, meta, root)
    problems += check_files(cfg, meta, root)
    problems += check_checkpoints(cfg)
    problems += check_master_weights(cfg, meta)
    problems += check_relora(cfg, meta, root)
    problems += check_hardware(cfg, meta, root)
    problems += check_disk(cfg, meta, root)
    return problems
