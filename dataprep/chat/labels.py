"""How Axolotl labels a chat record, asked of Axolotl itself: its tokenizer loader and its
`chat_template` prompt strategy with the recipe's keys, the tokens Axolotl treats as the
end of a turn, and the rendered text with the characters each token covers.

Two commands use it: `data inspect` (every record of a file, in the file's own shape)
and `recipe check` (one sample conversation in the canonical shape, for each dataset's
end of turn). The key lists say which recipe keys reach Axolotl:

- TOKENIZER_KEYS: config keys that change the tokenizer or the template;
- LABEL_KEYS: dataset keys that change which tokens train;
- SHAPE_KEYS: dataset keys that say where a record keeps its turns (the check renders
  its own sample, so it leaves these out and reads `messages`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from cosmosage.dataprep.env import no_telemetry

no_telemetry()  # it runs Axolotl's loaders in this process

TOKENIZER_KEYS = (
    "special_tokens", "tokens", "added_tokens_overrides", "chat_template",
    "chat_template_jinja", "chat_template_kwargs", "default_system_message", "eot_tokens",
    "tokenizer_use_fast", "tokenizer_legacy", "tokenizer_type", "adapter",
    "lora_modules_to_save", "trust_remote_code", "train_on_inputs", "sequence_len",
)  # fmt: skip
LABEL_KEYS = (
    "roles_to_train", "train_on_eos", "train_on_eot", "chat_template",
    "chat_template_jinja", "drop_system_message",
)  # fmt: skip
SHAPE_KEYS = (
    "field_messages", "message_property_mappings", "message_field_training",
    "message_field_training_detail", "roles",
)  # fmt: skip
IGNORE = -100  # the label of a token that does not train


def _plain(d: dict) -> Any:
    from axolotl.utils.dict import DictDefault

    return DictDefault(json.loads(json.dumps(d, default=str)))


def load_tokenizer(cfg: dict, folder: str | Path) -> Any:
    """The tokenizer as Axolotl's loader builds it for this config (special tokens,
    added tokens, chat template), read from `folder` instead of the Hub."""
    from axolotl.loaders.tokenizer import load_tokenizer as axolotl_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        c = {k: cfg[k] for k in TOKENIZER_KEYS if k in cfg}
        c.update(
            base_model=str(folder),
            base_model_config=str(folder),
            tokenizer_config=str(folder),
            output_dir=tmp,
        )
        return axolotl_tokenizer(_plain(c))


def load_strategy(tokenizer: Any, cfg: dict, ds: dict) -> Any:
    """Axolotl's `chat_template` prompt strategy for dataset entry `ds` of config `cfg`."""
    from axolotl.prompt_strategies import load as load_prompt_strategy

    c = _plain({k: cfg[k] for k in TOKENIZER_KEYS if k in cfg})
    strategy = load_prompt_strategy("chat_template", tokenizer, c, {**ds, "type": "chat_template"})
    if strategy is None:
        raise ValueError("Axolotl could not load its chat_template prompt strategy")
    return strategy


def end_of_turn(
    tokenizer: Any, strategy: Any, with_eos: bool = False
) -> tuple[list[str], set[int]]:
    """The tokens Axolotl trains as the end of a turn (its `eot_tokens`, else eos) and
    their ids (those that are one token; with `with_eos`, eos's id too)."""
    names = list(getattr(strategy, "eot_tokens", None) or []) or [tokenizer.eos_token]
    ids = {tokenizer.eos_token_id} if with_eos else set()
    for token in names:
        enc = tokenizer.encode(token, add_special_tokens=False)
        if len(enc) == 1:
            ids.add(enc[0])
    return names, ids


def rendered(
    tokenizer: Any, strategy: Any, messages: list[dict], input_ids: list[int]
) -> tuple[str, list[tuple[int, int]] | None]:
    """The conversation as the strategy's template writes it, and each token's character
    span in it (None when the text re-tokenizes differently from what Axolotl made)."""
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, chat_template=strategy.prompter.chat_template
    )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) != list(input_ids):
        return text, None
    return text, [tuple(o) for o in enc["offset_mapping"]]
