"""Chat tokens whose rows the base model never trained, and adapters that keep them frozen.

A model fragment lists them as `recipe.untrained_tokens` (Llama-3.x base: the llama3
template's header and end-of-turn tokens). A full fine-tune trains every row; an adapter
leaves the embedding and output layers frozen, so the end-of-turn token keeps a logit the
model can hardly raise and its answers run on. PEFT trains just those rows when they are
named in `peft_trainable_token_indices` (Axolotl passes it to LoraConfig)."""

from __future__ import annotations

from pathlib import Path

from cosmosage.tools.recipe.check.base import Problem
from cosmosage.tools.recipe.check.memory import method_of, model_architecture
from cosmosage.tools.recipe.check.template import (
    _chat_datasets,
    load_axolotl_tokenizer,
    tokenizer_folder,
)

ADAPTER_METHODS = ("lora", "qlora", "relora")


def frozen_rows(cfg: dict, layers: list[str], ids: list[int]) -> dict[str, list[int]]:
    """Per layer, the ids whose rows stay frozen: not in `peft_trainable_token_indices` (a
    plain list is the input embedding's, as PEFT reads it) and the layer not saved whole
    (`lora_modules_to_save`)."""
    given = cfg.get("peft_trainable_token_indices") or {}
    if not isinstance(given, dict):
        given = {"embed_tokens": given if isinstance(given, list | tuple) else [given]}
    saved = set(cfg.get("lora_modules_to_save") or [])
    frozen = {
        layer: [i for i in ids if i not in {int(x) for x in given.get(layer) or []}]
        for layer in layers
        if layer not in saved
    }
    return {layer: rows for layer, rows in frozen.items() if rows}


def check_untrained_tokens(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    names = list(meta.get("untrained_tokens") or [])
    method = method_of(cfg, meta)
    if not names or method not in ADAPTER_METHODS or not _chat_datasets(cfg):
        return []
    folder, _ = tokenizer_folder(cfg, meta, root)
    if folder is None:
        return []  # the end-of-turn check says what to fetch, and `recipe run` stops there
    try:
        tokenizer = load_axolotl_tokenizer(cfg, folder)
    except Exception:  # the end-of-turn check reports the loader's refusal
        return []
    ids = [int(tokenizer.convert_tokens_to_ids(n)) for n in names]
    tied = bool((model_architecture(cfg, meta, root) or {}).get("tie_word_embeddings"))
    layers = ["embed_tokens"] if tied else ["embed_tokens", "lm_head"]
    frozen = frozen_rows(cfg, layers, ids)
    if not frozen:
        return [
            Problem(
                "untrained-tokens",
                f"{', '.join(names)} (never trained in the base) train in "
                f"{' and '.join(layers)}{' (tied to lm_head)' if tied else ''} beside the adapter",
                "info",
            )
        ]
    fix = str(ids) if tied else "{" + ", ".join(f"{layer}: {ids}" for layer in layers) + "}"
    where = " and ".join(f"{layer} rows {frozen[layer]}" for layer in frozen)
    return [
        Problem(
            "untrained-tokens",
            f"the base model never trained {', '.join(names)} (ids {ids}), which the chat "
            f"template writes, and {method} leaves them frozen ({where}): the end-of-turn "
            "token keeps a logit the adapter can hardly raise, so answers run on past their "
            f"end; add `peft_trainable_token_indices: {fix}` (PEFT trains just those rows"
            + ("" if not tied else "; the output layer is tied to the embedding")
            + ", and the merge writes them into the model)",
        )
    ]
