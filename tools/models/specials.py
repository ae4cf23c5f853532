"""A tokenizer's special tokens made right for training: which token ends an assistant
turn (found by rendering a probe conversation), a pad token that is not eos, and
config.json / generation_config.json agreeing with the tokenizer. `model import` repairs
what a converted model gets wrong; `specials_problems` says what is still wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cosmosage.dataprep.records import DataError

NO_LIMIT = 10**12


def one_line(exc: BaseException | str) -> str:
    """An exception (or text) as a single line for an error message."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


PROBE_SYSTEM = "cosmosage probe system"
PROBE_USER = "cosmosage probe question"
PROBE_ASSISTANT = "cosmosage probe answer"


def _render(tokenizer: Any, messages: list[dict], **kwargs: Any) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def special_token_ids(tokenizer: Any) -> set[int]:
    """Ids of every special token: added tokens marked special and the named ones."""
    ids = {i for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)}
    ids.update(i for i in tokenizer.all_special_ids if i is not None)
    return ids


def _token(tokenizer: Any, token_id: int | None) -> str:
    if token_id is None:
        return "none"
    return f"{tokenizer.convert_ids_to_tokens(token_id)!r} (id {token_id})"


def end_of_turn_token(tokenizer: Any) -> str:
    """The special token the chat template writes right after an assistant message."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            "the tokenizer has no chat template, so the token that ends an assistant turn "
            "is unknown; import an instruct model that ships one"
        )
    messages = [
        {"role": "user", "content": PROBE_USER},
        {"role": "assistant", "content": PROBE_ASSISTANT},
    ]
    try:
        text = _render(tokenizer, messages)
    except Exception as exc:
        raise DataError(
            f"the chat template cannot render a user/assistant conversation: {one_line(exc)}"
        ) from exc
    at = text.rfind(PROBE_ASSISTANT)
    if at < 0:
        raise DataError("the chat template drops the assistant's message; cannot find its end")
    suffix = text[at + len(PROBE_ASSISTANT) :]
    ids = tokenizer.encode(suffix, add_special_tokens=False)
    specials = special_token_ids(tokenizer)
    first = next((n for n, i in enumerate(ids) if i in specials), None)
    if first is None or tokenizer.decode(ids[:first]).strip():
        raise DataError(
            f"the chat template ends the assistant turn with {suffix[:40]!r}, not with a special "
            "token, so no eos can stop generation at the end of a turn"
        )
    return tokenizer.convert_ids_to_tokens(ids[first])


def chat_token_ids(tokenizer: Any) -> set[int]:
    """Special token ids that appear in rendered conversations (so cannot pad)."""
    conversations = [
        ([{"role": "system", "content": PROBE_SYSTEM}], {}),
        ([{"role": "user", "content": PROBE_USER}], {"add_generation_prompt": True}),
        (
            [
                {"role": "system", "content": PROBE_SYSTEM},
                {"role": "user", "content": PROBE_USER},
                {"role": "assistant", "content": PROBE_ASSISTANT},
                {"role": "user", "content": PROBE_USER},
                {"role": "assistant", "content": PROBE_ASSISTANT},
            ],
            {},
        ),
    ]
    used: set[int] = set()
    for messages, kwargs in conversations:
        try:
            text = _render(tokenizer, messages, **kwargs)
        except Exception:
            continue  # templates that refuse a role (e.g. no system) are probed without it
        used.update(tokenizer.encode(text, add_special_tokens=True))
    return used & special_token_ids(tokenizer)


def choose_pad(tokenizer: Any, avoid: set[int]) -> int | None:
    """An existing special token outside `avoid`: one named for padding, else unk, else an
    end-of-text token, else the lowest id."""
    unk = tokenizer.unk_token_id

    def rank(i: int) -> tuple[int, int]:
        name = re.sub(r"[^a-z]", "", str(tokenizer.convert_ids_to_tokens(i)).lower())
        if "pad" in name:
            return 0, i
        if i == unk:
            return 1, i
        if "endoftext" in name:
            return 2, i
        return 3, i

    candidates = sorted(special_token_ids(tokenizer) - avoid, key=rank)
    return candidates[0] if candidates else None


def _agrees(value: Any, want: int | None) -> bool:
    if isinstance(value, list | tuple):
        return want in value
    return value == want


def _set_ids(obj: Any, label: str, want: dict[str, int | None], repairs: list[str]) -> None:
    for key, value in want.items():
        have = getattr(obj, key, None)
        if not _agrees(have, value):
            setattr(obj, key, value)
            repairs.append(f"{label} {key} {have} -> {value}: follows the tokenizer")


def repair_specials(tokenizer: Any, config: Any, generation_config: Any = None) -> list[str]:
    """Make eos the chat template's end-of-turn token, give pad an unused special token
    that is not eos, and make config and generation config agree with the tokenizer.
    Changes the objects in place; returns one line per repair. DataError if impossible."""
    repairs: list[str] = []
    eot = end_of_turn_token(tokenizer)
    eot_id = tokenizer.convert_tokens_to_ids(eot)
    if tokenizer.eos_token_id != eot_id:
        before = _token(tokenizer, tokenizer.eos_token_id)
        tokenizer.eos_token = eot
        repairs.append(
            f"eos_token {before} -> {_token(tokenizer, eot_id)}: "
            "the chat template ends the assistant turn with it"
        )
    bos_id = tokenizer.bos_token_id
    used = chat_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id
    why = None
    if pad_id is None:
        why = "the tokenizer had none"
    elif pad_id == eot_id:
        why = "it was eos, so padding would mask eos and the model never learn to stop"
    elif pad_id in used:
        why = "the chat template writes it, so it cannot pad"
    if why:
        new = choose_pad(tokenizer, used | {eot_id} | ({bos_id} if bos_id is not None else set()))
        if new is None:
            raise DataError(
                f"no unused special token to pad with (pad_token {_token(tokenizer, pad_id)}: "
                f"{why}); every special token is eos, bos or written by the chat template"
            )
        before = _token(tokenizer, pad_id)
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(new)
        repairs.append(
            f"pad_token {before} -> {_token(tokenizer, new)}: {why}; "
            "this special token is unused in chat and is not eos"
        )
    want = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    _set_ids(config, "config.json", want, repairs)
    if generation_config is not None:
        _set_ids(generation_config, "generation_config.json", want, repairs)
    return repairs


def repair_settings(tokenizer: Any, config: Any) -> list[str]:
    """Tokenizer settings that GGUF conversion leaves at unhelpful defaults."""
    repairs = []
    limit = getattr(config, "max_position_embeddings", None)
    if limit and (tokenizer.model_max_length or 0) >= NO_LIMIT:
        tokenizer.model_max_length = int(limit)
        repairs.append(f"model_max_length no limit -> {limit}: the model's context length")
    if getattr(tokenizer, "clean_up_tokenization_spaces", False):
        tokenizer.clean_up_tokenization_spaces = False
        tokenizer.init_kwargs["clean_up_tokenization_spaces"] = False
        repairs.append(
            "clean_up_tokenization_spaces true -> false: it strips spaces before punctuation "
            "when decoding a BPE tokenizer"
        )
    return repairs


def specials_problems(folder: str | Path) -> list[str]:
    """What is wrong with the special tokens of a saved model folder (empty when right)."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    problems = []
    eot = end_of_turn_token(tok)
    if tok.eos_token != eot:
        problems.append(
            f"eos_token is {tok.eos_token!r}, the chat template ends turns with {eot!r}"
        )
    if tok.pad_token_id is None:
        problems.append("no pad_token")
    elif tok.pad_token_id == tok.eos_token_id:
        problems.append(f"pad_token equals eos ({tok.eos_token!r})")
    want = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    for name in ("config.json", "generation_config.json"):
        path = folder / name
        data = json.loads(path.read_text()) if path.is_file() else {}
        for key, value in want.items():
            if not _agrees(data.get(key), value):
                problems.append(f"{name} {key} is {data.get(key)}, the tokenizer's is {value}")
    return problems
