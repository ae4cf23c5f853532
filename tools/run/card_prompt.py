"""The model card's prompt format: the chat template and special tokens of the model
folder as they will be published, and one example conversation rendered through them,
so a reader sees the exact string the model expects."""

from __future__ import annotations

import json
from pathlib import Path


def chat_template(model_dir: str | Path | None) -> str | None:
    """The model's chat template: chat_template.jinja, else tokenizer_config.json's."""
    if model_dir is None:
        return None
    folder = Path(model_dir)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        tpl = json.loads(cfg.read_text()).get("chat_template")
        return tpl if isinstance(tpl, str) else None
    return None


def special_tokens(model_dir: str | Path | None) -> dict[str, str]:
    """bos / eos / pad token strings from tokenizer_config.json."""
    cfg = Path(model_dir or "") / "tokenizer_config.json"
    if model_dir is None or not cfg.is_file():
        return {}
    data = json.loads(cfg.read_text())
    out = {}
    for key in ("bos_token", "eos_token", "pad_token"):
        tok = data.get(key)
        tok = tok.get("content") if isinstance(tok, dict) else tok
        if isinstance(tok, str):
            out[key] = tok
    return out


EXAMPLE_MESSAGES = [{"role": "user", "content": "What is the cosmic microwave background?"}]


def render_prompt(template: str, tokens: dict[str, str]) -> str | None:
    """The template applied to one user question, as the model sees it."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    try:
        return env.from_string(template).render(
            messages=EXAMPLE_MESSAGES,
            add_generation_prompt=True,
            bos_token=tokens.get("bos_token", ""),
            eos_token=tokens.get("eos_token", ""),
        )
    except TemplateError:
        return None


def prompt_lines(model_dir: str | Path | None) -> list[str]:
    template = chat_template(model_dir)
    if not template:
        return [
            "## How to prompt it",
            "",
            "The model has no chat template: give it plain text to continue.",
            "",
        ]
    tokens = special_tokens(model_dir)
    lines = [
        "## How to prompt it",
        "",
        "Use the chat template shipped with the tokenizer (`chat_template.jinja`); with",
        "transformers, `tokenizer.apply_chat_template(messages, add_generation_prompt=True)`.",
    ]
    if tokens.get("eos_token"):
        lines.append(f"Generation ends at `{tokens['eos_token']}` (the end-of-turn token).")
    example = render_prompt(template, tokens)
    if example is not None:
        lines += ["", "A question as the model sees it:", "", "```text", example, "```"]
    lines += [
        "",
        "<details><summary>Chat template</summary>",
        "",
        "```jinja",
        template.rstrip("\n"),
        "```",
        "",
        "</details>",
        "",
    ]
    return lines
