"""Chat-template check: render chat records through a model's template with Axolotl's
own `chat_template` prompt strategy and see which tokens train.

The labels come from the same code training runs (`axolotl.prompt_strategies.load`
with the recipe's dataset settings, tokenizer loaded by `axolotl.loaders.tokenizer`),
so a label of -100 here is a token training ignores. Independently of Axolotl's own
turn finding, each token is traced back to the message whose content it covers (by
character offsets in the rendered text), and the check fails when:

- an assistant turn has no trained token;
- a user or system token is trained although `train_on_inputs` is false;
- the end-of-turn token (`eot_tokens`, else eos) is never trained after an assistant
  turn, so the model would never learn to stop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmosage.dataprep.chat import labels
from cosmosage.dataprep.chat import messages as chatmod
from cosmosage.dataprep.chat.labels import IGNORE, LABEL_KEYS, SHAPE_KEYS, TOKENIZER_KEYS
from cosmosage.dataprep.io import read_records
from cosmosage.dataprep.records import DataError, Reject
from cosmosage.dataprep.steps import Drops
from cosmosage.dataprep.tokenizer import check_folder

# dataset-entry keys that change how Axolotl's chat_template strategy reads and labels a
# record, and config keys that change the tokenizer or template (dataprep/chat/labels.py)
DS_KEYS = SHAPE_KEYS + LABEL_KEYS
CFG_KEYS = TOKENIZER_KEYS


@dataclass
class TemplateSettings:
    """The recipe keys that decide what trains in a chat_template dataset."""

    cfg: dict = field(
        default_factory=lambda: {
            "chat_template": "tokenizer_default",
            "train_on_inputs": False,
            "sequence_len": 2048,
        }
    )
    ds: dict = field(
        default_factory=lambda: {"type": "chat_template", "field_messages": "messages"}
    )

    @property
    def train_on_inputs(self) -> bool:
        return bool(self.cfg.get("train_on_inputs"))

    @property
    def sequence_len(self) -> int:
        return int(self.cfg.get("sequence_len") or 2048)


def settings_from_config(
    cfg: dict, name: str, dataset_index: int = 0
) -> tuple[TemplateSettings, str]:
    """Settings and base model of a rendered Axolotl config (its chat_template keys and one
    dataset entry); `name` only labels errors. The caller renders the recipe."""
    datasets = cfg.get("datasets") or []
    if dataset_index >= len(datasets):
        raise DataError(f"recipe {name} has {len(datasets)} dataset(s); no index {dataset_index}")
    ds = dict(datasets[dataset_index])
    if ds.get("type") != "chat_template":
        raise DataError(
            f"recipe {name}: datasets[{dataset_index}] is type {ds.get('type')!r}, not chat_template"
        )
    settings = TemplateSettings(
        cfg={k: cfg[k] for k in CFG_KEYS if k in cfg},
        ds={k: ds[k] for k in ("type", *DS_KEYS) if k in ds},
    )
    return settings, str(cfg.get("base_model"))


def resolve_settings(
    cfg: dict | None, name: str | None, dataset_index: int, model: str | None, **opts: Any
) -> tuple[TemplateSettings, str]:
    """What `data inspect` renders with: a rendered recipe's settings (`cfg`, one dataset
    entry) or the defaults, the command line's options over them, and the model (the
    one given, else the recipe's base model)."""
    if cfg is not None:
        settings, base = settings_from_config(cfg, name or "", dataset_index)
        model = model or base
    else:
        settings = TemplateSettings()
    return with_options(settings, **opts), str(model)


def with_options(settings: TemplateSettings, **opts: Any) -> TemplateSettings:
    """Settings with command-line overrides applied (None leaves a key alone)."""
    cfg, ds = dict(settings.cfg), dict(settings.ds)
    for key in (
        "train_on_inputs",
        "sequence_len",
        "chat_template",
        "chat_template_jinja",
        "eot_tokens",
    ):
        if opts.get(key) is not None:
            cfg[key] = opts[key]
    for key in ("roles_to_train", "train_on_eos", "train_on_eot", "field_messages"):
        if opts.get(key) is not None:
            ds[key] = opts[key]
    return TemplateSettings(cfg, ds)


@dataclass
class Loaded:
    tokenizer: Any
    strategy: Any
    settings: TemplateSettings

    @property
    def eot_ids(self) -> set[int]:
        return labels.end_of_turn(self.tokenizer, self.strategy)[1]

    @property
    def eot_names(self) -> list[str]:
        return labels.end_of_turn(self.tokenizer, self.strategy)[0]


def load(model: str | Path, settings: TemplateSettings) -> Loaded:
    """Axolotl's tokenizer loader and chat_template strategy for `model`."""
    check_folder(model, "--model")
    try:
        tokenizer = labels.load_tokenizer(settings.cfg, model)
    except (OSError, ValueError) as exc:  # a Hub id not cached, a folder without one
        why = " ".join(str(exc).split())[:300]
        raise DataError(f"--model {model}: no tokenizer could be loaded ({why})") from exc
    try:
        strategy = labels.load_strategy(tokenizer, settings.cfg, dict(settings.ds))
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    return Loaded(tokenizer, strategy, settings)


# --------------------------------------------------------------------------- one record


@dataclass
class Inspected:
    source: str
    line: int | None
    messages: list[dict]
    input_ids: list[int]
    labels: list[int]
    pieces: list[str]
    roles: list[str | None]  # the role whose content each token covers; None = template
    turn_of: list[int | None]  # the message index each token covers
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    eot_trained: int = 0
    eot_total: int = 0

    @property
    def trained(self) -> int:
        return sum(1 for lab in self.labels if lab != IGNORE)


def _content_spans(text: str, messages: list[dict]) -> list[tuple[int, int] | None]:
    """Where each message's content sits in the rendered text, in order."""
    spans, cursor = [], 0
    for msg in messages:
        content = msg["content"]
        pos = text.find(content, cursor)
        if pos < 0:
            content = content.strip()
            pos = text.find(content, cursor) if content else -1
        if pos < 0:
            spans.append(None)
            continue
        spans.append((pos, pos + len(content)))
        cursor = pos + len(content)
    return spans


def _offsets(
    loaded: Loaded, messages: list[dict], input_ids: list[int]
) -> tuple[str, list[tuple[int, int]]] | None:
    text, offsets = labels.rendered(loaded.tokenizer, loaded.strategy, messages, input_ids)
    return None if offsets is None else (text, offsets)


def inspect_record(
    loaded: Loaded, messages: list[dict], source: str = "", line: int | None = None
) -> Inspected:
    """Tokenize one conversation as Axolotl does; attribute tokens to turns; check labels."""
    field_messages = loaded.settings.ds.get("field_messages", "messages")
    out = loaded.strategy.tokenize_prompt({field_messages: [dict(m) for m in messages]})
    ids, labels = list(out["input_ids"]), list(out["labels"])
    tok = loaded.tokenizer
    located = _offsets(loaded, messages, ids)
    roles: list[str | None] = [None] * len(ids)
    turn_of: list[int | None] = [None] * len(ids)
    inside: list[bool] = [False] * len(ids)
    if located is None:
        pieces = [tok.convert_ids_to_tokens(i) for i in ids]
        rec = Inspected(source, line, messages, ids, labels, pieces, roles, turn_of)
        rec.warnings.append(
            "could not map tokens to turns (rendered text re-tokenizes differently); labels shown as is"
        )
        return rec
    text, offsets = located
    # tokens that share their characters with another (a prepended "▁") show as
    # themselves; the rest show the text they cover
    shared = Counter(o for o in offsets)
    pieces = [
        text[a:b]
        if b > a and shared[(a, b)] == 1
        else tok.convert_ids_to_tokens(i).replace("\u2581", " ")
        for i, (a, b) in zip(ids, offsets, strict=True)
    ]
    spans = _content_spans(text, messages)
    for k, (a, b) in enumerate(offsets):
        for m, span in enumerate(spans):
            if span is None or b <= span[0] or a >= span[1]:
                continue
            roles[k], turn_of[k] = messages[m]["role"], m
            inside[k] = a >= span[0] and b <= span[1]
            break
    rec = Inspected(source, line, messages, ids, labels, pieces, roles, turn_of)
    check_record(rec, loaded, spans, inside)
    return rec


def check_record(rec: Inspected, loaded: Loaded, spans: list, inside: list[bool]) -> None:
    eot_ids = loaded.eot_ids
    train_inputs = loaded.settings.train_on_inputs
    for m, msg in enumerate(rec.messages):
        if spans[m] is None:
            rec.warnings.append(
                f"messages[{m}] ({msg['role']}): content not found in the rendered text"
            )
            continue
        idx = [k for k, t in enumerate(rec.turn_of) if t == m]
        trained = [k for k in idx if rec.labels[k] != IGNORE]
        if msg["role"] == "assistant":
            if not trained:
                rec.problems.append(
                    f"messages[{m}] (assistant): none of its {len(idx)} tokens is trained"
                )
            elif len(trained) < len(idx):
                rec.warnings.append(
                    f"messages[{m}] (assistant): {len(idx) - len(trained)} of {len(idx)} tokens not trained"
                )
            # the end-of-turn token: the first one after the content
            end = max(idx) + 1 if idx else None
            eot = (
                next(
                    (k for k in range(end, len(rec.input_ids)) if rec.input_ids[k] in eot_ids), None
                )
                if end is not None
                else None
            )
            nxt = next((j for j in range(m + 1, len(rec.messages)) if spans[j]), None)
            if eot is not None and nxt is not None:
                first_next = next(
                    (k for k, t in enumerate(rec.turn_of) if t == nxt), len(rec.input_ids)
                )
                if eot > first_next:
                    eot = None
            rec.eot_total += 1
            if eot is None:
                rec.warnings.append(
                    f"messages[{m}] (assistant): the template puts no end-of-turn token {loaded.eot_names} after it"
                )
            elif rec.labels[eot] != IGNORE:
                rec.eot_trained += 1
        elif not train_inputs:
            leaked = [k for k in idx if inside[k] and rec.labels[k] != IGNORE]
            if leaked:
                rec.problems.append(
                    f"messages[{m}] ({msg['role']}): {len(leaked)} of {len(idx)} tokens trained although train_on_inputs is false"
                )
    if len(rec.input_ids) > loaded.settings.sequence_len:
        rec.warnings.append(
            f"{len(rec.input_ids)} tokens > sequence_len {loaded.settings.sequence_len}: Axolotl drops this conversation"
        )


# --------------------------------------------------------------------------- files


def read_conversations(
    paths: Iterable[str | Path], limit: int | None = None
) -> Iterator[tuple[str, int, list[dict]] | Reject]:
    """(file, line, messages) for each record of JSONL/CSV chat files in any known format."""
    n = 0
    for path in paths:
        for lineno, rec in read_records(path):
            if isinstance(rec, Reject):
                yield rec
                continue
            try:
                msgs = chatmod.to_messages(rec)
            except ValueError as exc:
                yield Reject(str(path), lineno, str(exc))
                continue
            yield str(path), lineno, msgs
            n += 1
            if limit and n >= limit:
                return


@dataclass
class Summary:
    records: list[Inspected]
    rejects: list[Reject]
    eot_names: list[str]

    @property
    def eot_trained(self) -> int:
        return sum(r.eot_trained for r in self.records)

    @property
    def eot_total(self) -> int:
        return sum(r.eot_total for r in self.records)

    def failures(self) -> list[str]:
        out = [f"{r.source}:{r.line}: {p}" for r in self.records for p in r.problems]
        if self.records and self.eot_total and self.eot_trained == 0:
            out.append(
                f"end-of-turn token {self.eot_names} is never trained after an assistant turn "
                f"(0 of {self.eot_total}): the model would never learn to stop. "
                "Check train_on_eos / train_on_eot and eot_tokens."
            )
        elif self.records and not self.eot_total:
            out.append("no assistant turns found to check")
        return out

    def warnings(self) -> list[str]:
        return [f"{r.source}:{r.line}: {w}" for r in self.records for w in r.warnings]

    @property
    def ok(self) -> bool:
        return not self.failures()


def inspect_files(loaded: Loaded, paths: Iterable[str | Path], limit: int | None = None) -> Summary:
    drops = Drops()
    records = [
        inspect_record(loaded, msgs, source, line)
        for source, line, msgs in drops.keep(read_conversations(paths, limit))
    ]
    return Summary(records, drops.rejects, loaded.eot_names)


def render_tokens(rec: Inspected, style=None) -> str:
    """The conversation as tokens: trained ones highlighted (`style` colours a piece;
    without it, trained runs are wrapped in « »)."""
    parts, run_trained = [], False
    for piece, lab in zip(rec.pieces, rec.labels, strict=True):
        trained = lab != IGNORE
        shown = piece.replace("\n", "\u21b5\n")
        if style is not None:
            parts.append(style(shown, trained))
            continue
        if trained and not run_trained:
            parts.append("«")
        if not trained and run_trained:
            parts.append("»")
        parts.append(shown)
        run_trained = trained
    if style is None and run_trained:
        parts.append("»")
    return "".join(parts)
