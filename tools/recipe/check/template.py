"""The tokenizer's special tokens, the chat template, and whether each answer's
end-of-turn token trains (asked of Axolotl's own tokenization)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmosage.dataprep.chat import labels
from cosmosage.dataprep.chat.labels import IGNORE, LABEL_KEYS
from cosmosage.tools.recipe.check.base import Problem, _one_line, _quiet
from cosmosage.tools.recipe.check.files import _local

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
            "docker image, or run with `--set attn_implementation=sdpa` (with packing on "
            "CUDA in bf16 and torch >= 2.10, Axolotl runs packed sdpa rows through "
            "PyTorch's variable-length flash kernel, its `sdpa_varlen`)",
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


def template_choice(cfg: dict, ds: dict) -> tuple[str, str | None, bool]:
    """(template, its jinja, whether one was set) that Axolotl renders dataset `ds` with:
    the dataset's own `chat_template` (with its `chat_template_jinja`), else the config's,
    else the tokenizer's own (`tokenizer_default`)."""
    src = ds if ds.get("chat_template") else cfg
    choice = src.get("chat_template")
    return choice or "tokenizer_default", src.get("chat_template_jinja"), bool(choice)


def check_chat_template(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    """Each chat dataset's template must load: `jinja` needs its `chat_template_jinja`, and
    the tokenizer's own (`tokenizer_default`, or nothing set) needs a tokenizer that has
    one."""
    problems, info = [], None
    fix = (
        "set `chat_template:` to a named template (e.g. chatml, mistral_v1) or `jinja` with "
        "`chat_template_jinja`, on the config or the dataset"
    )
    for i, ds in _chat_datasets(cfg):
        choice, jinja, chosen = template_choice(cfg, ds)
        if choice == "jinja" and not jinja:
            problems.append(Problem(
                "chat-template", f"datasets[{i}]: `chat_template: jinja` without `chat_template_jinja`"
            ))  # fmt: skip
        if choice != "tokenizer_default":
            continue
        info = info if info is not None else (tokenizer_specials(cfg, meta, root) or {})
        if info.get("chat_template"):
            continue
        why = (
            "`chat_template: tokenizer_default`" if chosen
            else "chat data (`type: chat_template`) and no `chat_template` set, so the tokenizer's own"
        )  # fmt: skip
        has = "the tokenizer has none" if info else "no tokenizer on disk says it has one"
        problems.append(Problem("chat-template", f"datasets[{i}]: {why}, but {has}; {fix}"))
    return problems


# --------------------------------------------------------------------------- end of turn

# Config keys that Axolotl's tokenizer loader and chat_template strategy read.
# One conversation in the canonical shape, rendered through the recipe's template.
CHAT_SAMPLE = [
    {"role": "system", "content": "You answer questions about cosmology."},
    {"role": "user", "content": "What is the cosmic microwave background?"},
    {"role": "assistant", "content": "Relic radiation from the epoch of recombination."},
    {"role": "user", "content": "How hot is it today?"},
    {"role": "assistant", "content": "About 2.725 K."},
]
AXOLOTL_EOT_WINDOW = 3  # Axolotl looks this many tokens past a turn for its terminator


def load_axolotl_tokenizer(cfg: dict, folder: Path) -> Any:
    """The tokenizer as Axolotl's loader builds it for this config, read from `folder`."""
    with _quiet():
        return labels.load_tokenizer(cfg, folder)


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
    c = {**cfg, "sequence_len": cfg.get("sequence_len") or 4096}
    ds_cfg = {k: ds[k] for k in LABEL_KEYS if k in ds}
    ds_cfg.update(field_messages="messages")  # the sample's own shape, not the dataset's
    with _quiet():
        strategy = labels.load_strategy(tokenizer, c, ds_cfg)
        messages = [dict(m) for m in CHAT_SAMPLE]
        try:
            out = strategy.tokenize_prompt({"messages": messages})
        except Exception:  # a template without a system role
            messages = [dict(m) for m in CHAT_SAMPLE if m["role"] != "system"]
            out = strategy.tokenize_prompt({"messages": messages})
        ids, labels_ = list(out["input_ids"]), list(out["labels"])
        text, offsets = labels.rendered(tokenizer, strategy, messages, ids)
    # what Axolotl looks for after a turn: its eot_tokens that are one token, and eos
    names, eot_ids = labels.end_of_turn(tokenizer, strategy, with_eos=True)
    name = template_choice(cfg, ds)[0]
    offsets = offsets or []

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
        result.trained.append(hit is not None and labels_[hit] != IGNORE)
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


def unchecked_end_of_turn(p: Problem) -> bool:
    """`recipe check` may pass a chat stage whose tokenizer is not on disk with a warning;
    a run must not train without knowing that each answer's end-of-turn token trains, so
    for `recipe run` it stops the run (the message says how to make the check possible)."""
    return p.check == "end-of-turn" and p.message.startswith("no tokenizer of")
