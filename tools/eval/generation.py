"""Answers from a local model folder: named generation presets, grids over them, and
batched generation through the model's chat template (left-padded, on the CPU or GPU).

Presets (`--preset NAME`, or `key=value` overrides on top of one):

| preset   | sampling                                   | for                                  |
|----------|--------------------------------------------|--------------------------------------|
| greedy   | none                                       | scoring: the model's single best answer |
| sample   | temperature 0.7, top_p 0.9                 | everyday use                          |
| creative | temperature 1.0, top_p 0.95, top_k 50      | the findings under looser sampling    |
| strict   | none, repetition_penalty 1.3               | small models that loop                |
| consistency | temperature 0.8, top_p 0.95             | self-consistency samples (tools/eval/consistency.py) |
| ancestral | temperature 1.0, no top_p or top_k       | draws from the model's own distribution (`data replay`) |

All presets give at most `max_new_tokens` 48 unless overridden.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from cosmosage.dataprep.records import DataError
from cosmosage.dataprep.synth.llm import Progress

PRESETS: dict[str, dict] = {
    "greedy": {"do_sample": False},
    "sample": {"do_sample": True, "temperature": 0.7, "top_p": 0.9},
    "creative": {"do_sample": True, "temperature": 1.0, "top_p": 0.95, "top_k": 50},
    "strict": {"do_sample": False, "repetition_penalty": 1.3},
    "consistency": {"do_sample": True, "temperature": 0.8, "top_p": 0.95},
    # top_k 0 and top_p 1.0 switch off the truncation a model's generation_config may set
    "ancestral": {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0},
}
GENERATION_KEYS = {
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "max_new_tokens",
}
DEFAULT_MAX_NEW_TOKENS = 48
# each setting's type and least value (top_k 0 and top_p 1.0 switch truncation off)
SETTING_TYPES = {
    "temperature": (float, 0.0),
    "top_p": (float, 0.0),
    "repetition_penalty": (float, 0.0),
    "top_k": (int, 0),
    "max_new_tokens": (int, 1),
}


def setting(key: str, value):
    """A generation setting as its type, or a DataError naming the key and the value."""
    if key == "do_sample":
        if isinstance(value, bool):
            return value
        raise DataError(f"generation setting do_sample={value!r}: expected true or false")
    if key not in SETTING_TYPES:
        return value
    kind, least = SETTING_TYPES[key]
    try:
        if isinstance(value, bool) or (kind is int and float(value) != int(float(value))):
            raise ValueError
        number = kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise DataError(
            f"generation setting {key}={value!r}: expected {'an integer' if kind is int else 'a number'}"
        ) from None
    if number < least:
        raise DataError(f"generation setting {key}={value!r}: must be at least {least}")
    return number


def preset(spec: str | dict | None = None, **overrides) -> dict:
    """A preset by name (or a mapping with `preset:` and keys) with overrides applied."""
    if isinstance(spec, dict):
        spec = dict(spec)
        base = preset(spec.pop("preset", "greedy"))
        overrides = {**spec, **overrides}
    else:
        name = spec or "greedy"
        if name not in PRESETS:
            raise DataError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        base = {"name": name, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS, **PRESETS[name]}
    for key, value in overrides.items():
        if key not in GENERATION_KEYS and key != "name":
            raise DataError(
                f"unknown generation setting {key!r}; use {', '.join(sorted(GENERATION_KEYS))}"
            )
        base[key] = setting(key, value)
    if "temperature" in overrides and base["temperature"] > 0:
        base["do_sample"] = True
    return base


def grid(base: dict, axes: list[str]) -> list[dict]:
    """Every combination of `key=v1,v2,...` axes on top of preset `base`, each named."""
    import yaml

    parsed = []
    for axis in axes:
        key, sep, values = axis.partition("=")
        if not sep or not values:
            raise DataError(f"--grid {axis!r}: expected key=v1,v2")
        parsed.append([(key.strip(), yaml.safe_load(v)) for v in values.split(",")])
    out = []
    for combo in itertools.product(*parsed) if parsed else [()]:
        p = preset(base, **dict(combo))
        p["name"] = base.get("name", "greedy") + "".join(f",{k}={v}" for k, v in combo)
        out.append(p)
    return out


def chat_ids(tok, prompt: dict) -> list[int]:
    """Token ids of one prompt as the model is asked it: its chat template when it has one
    (with the prompt's `system` message and earlier turns), else the plain text (the
    earlier turns' text before it)."""
    if getattr(tok, "chat_template", None):
        msgs = [{"role": "system", "content": prompt["system"]}] if prompt.get("system") else []
        msgs += [{"role": t["role"], "content": t["content"]} for t in prompt.get("history") or []]
        msgs.append({"role": "user", "content": prompt["prompt"]})
        return list(
            tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True)["input_ids"]
        )
    earlier = "".join(f"{t['content']}\n\n" for t in prompt.get("history") or [])
    return tok(earlier + prompt["prompt"])["input_ids"]


class Generator:
    """One loaded model answering batches of prompts."""

    def __init__(self, model_path: str | Path, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = Path(model_path)
        try:
            self.tok = AutoTokenizer.from_pretrained(model_path)
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(
                f"{model_path}: no tokenizer could be loaded from it "
                f"({str(exc).splitlines()[0][:200]}); a model folder needs its tokenizer files "
                "(tokenizer.json, tokenizer_config.json)"
            ) from exc
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device)
        self.model.eval()
        self.device = device
        pad = self.tok.pad_token_id
        self.pad_id = pad if pad is not None else self.tok.eos_token_id

    def answers(
        self,
        prompts: list[dict],
        settings: dict,
        n: int = 1,
        seed: int = 0,
        batch_size: int = 16,
        desc: str | None = None,
        finished: list[bool] | None = None,
        progress: bool = True,
    ) -> list[list[str]]:
        """`n` answers per prompt with generation `settings` (a preset). With `finished`,
        a list, it gets one flag per prompt (its first answer): whether the model ended
        the answer itself rather than the token limit cutting it off."""
        import torch

        kwargs = {k: v for k, v in settings.items() if k in GENERATION_KEYS}
        kwargs.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        if not kwargs.get("do_sample"):
            kwargs = {k: v for k, v in kwargs.items() if k not in ("temperature", "top_p", "top_k")}
            n_gen = 1
        else:
            n_gen = n
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]["prompt"]))
        results: dict[int, list[str]] = {}
        ended: dict[int, bool] = {}
        stops = self.stop_ids()
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        label = desc or f"ask {self.path.name}"
        bar = Progress(len(prompts), label, unit="prompt") if progress else None
        for b, batch in enumerate(batches):
            ids = [chat_ids(self.tok, prompts[i]) for i in batch]
            width = max(map(len, ids))
            input_ids = torch.tensor([[self.pad_id] * (width - len(x)) + x for x in ids])
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
            torch.manual_seed(seed + b)
            with torch.no_grad():
                gen = self.model.generate(
                    input_ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    num_return_sequences=n_gen,
                    pad_token_id=self.pad_id,
                    **kwargs,
                )
            texts = self.tok.batch_decode(gen[:, width:], skip_special_tokens=True)
            for j, i in enumerate(batch):
                got = [t.strip() for t in texts[j * n_gen : (j + 1) * n_gen]]
                results[i] = got if n_gen == n else got * n
                ended[i] = bool(stops & set(gen[j * n_gen, width:].tolist()))
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        if finished is not None:
            finished[:] = [ended[i] for i in range(len(prompts))]
        return [results[i] for i in range(len(prompts))]

    def stop_ids(self) -> set[int]:
        """The tokens that end an answer: the generation config's and the tokenizer's."""
        ids = {self.tok.eos_token_id}
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids |= set(eos) if isinstance(eos, list) else {eos}
        return {i for i in ids if i is not None}
