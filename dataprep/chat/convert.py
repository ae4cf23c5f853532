"""Readers and steps that turn Q&A sources into chat records, and the `data convert` job.

Steps are generators over `(line, record)` pairs or records; anything dropped comes out
as a `Reject` naming the file, the line and the reason, so a caller writes it to the
rejects file and nothing else is lost.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cosmosage.dataprep.chat import messages as chatmod
from cosmosage.dataprep.io import (
    Manifest,
    check_outputs,
    read_records,
    write_jsonl,
)
from cosmosage.dataprep.records import DataError, Reject
from cosmosage.dataprep.shard import Shard, in_shard, record_key, reject_key
from cosmosage.dataprep.steps import Drops, numbered, refuse_nothing_kept, step


@dataclass
class ConvertOptions:
    """How source records become messages: format, column mapping, system prompts."""

    fmt: str = "auto"
    mapping: Mapping[str, str] | None = None
    system_prompt: str | None = None
    system_rules: list[chatmod.SystemRule] = field(default_factory=list)
    replace_system: bool = False

    def __post_init__(self) -> None:
        if self.fmt not in chatmod.FORMATS:
            raise DataError(
                f"unknown format {self.fmt!r}; choose from {', '.join(chatmod.FORMATS)}"
            )
        if self.mapping:
            missing = [r for r in ("user", "assistant") if r not in self.mapping]
            unknown = sorted(set(self.mapping) - chatmod.ROLES)
            if missing or unknown:
                raise DataError(
                    f"column mapping {dict(self.mapping)}: "
                    + (
                        f"needs {' and '.join(missing)}"
                        if missing
                        else f"unknown role(s) {unknown}"
                    )
                    + "; roles are system, user, assistant"
                )
        if self.fmt == "columns" and not self.mapping:
            raise DataError(
                "format 'columns' needs a column mapping, e.g. --map user=question --map assistant=answer"
            )


def convert(
    items: Iterable[tuple[int, dict | Reject]], source: str, opts: ConvertOptions
) -> Iterator[dict | Reject]:
    """(line, source record) pairs -> chat records `{"messages", "source"}` or Rejects."""
    return _to_chat(numbered(items), source, opts)


@step
def _to_chat(item: tuple[int, dict], source: str, opts: ConvertOptions) -> dict | Reject:
    lineno, rec = item
    try:
        msgs = chatmod.to_messages(
            rec,
            system_prompt=opts.system_prompt,
            fmt=opts.fmt,
            mapping=opts.mapping,
            system_rules=opts.system_rules,
            replace_system=opts.replace_system,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        return Reject(source, lineno, str(exc), rec)
    out = {"messages": msgs, "source": f"{Path(source).name}:{lineno}", "_path": source}
    topic = chatmod.camel_topic(rec) if "message_1" in rec else None
    if topic:
        out["topic"] = topic
    return out


class TokenCounter:
    """Tokens in a conversation as training sees it: rendered through the tokenizer's
    chat template when there is one. Without a tokenizer, words and punctuation marks
    are counted instead (an approximation, said so in manifests)."""

    _WORDS = re.compile(r"\w+|[^\w\s]")

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer
        self.templated = bool(tokenizer is not None and getattr(tokenizer, "chat_template", None))

    @property
    def unit(self) -> str:
        if self.tokenizer is None:
            return "words (no tokenizer given)"
        return "tokens (chat template)" if self.templated else "tokens (contents only)"

    def count_text(self, text: str) -> int:
        """Tokens of a completion text as training sees it: its tokens and an eos."""
        if self.tokenizer is None:
            return len(self._WORDS.findall(text))
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1

    def count(self, messages: list[dict]) -> int:
        if self.tokenizer is None:
            return sum(len(self._WORDS.findall(m["content"])) for m in messages)
        if self.templated:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False)
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return sum(
            len(self.tokenizer(m["content"], add_special_tokens=False)["input_ids"])
            for m in messages
        )


@step
def measure(rec: dict, counter: TokenCounter, sequence_len: int | None = None) -> dict | Reject:
    """Attach `_tokens` to each record; reject conversations longer than sequence_len."""
    n = counter.count(rec["messages"])
    if sequence_len and n > sequence_len:
        src, _, line = rec.get("source", "?:").rpartition(":")
        return Reject(
            rec.get("_path", src),
            int(line) if line.isdigit() else None,
            f"too long: {n} tokens > sequence_len {sequence_len}",
            {k: v for k, v in rec.items() if not k.startswith("_")},
        )
    rec["_tokens"] = n
    return rec


def row_key(row: dict | Reject) -> str:
    """The shard key of an input row: its content, or where it is when it was unreadable."""
    return reject_key(row) if isinstance(row, Reject) else record_key(row)


def public(rec: dict) -> dict:
    """A record without the bookkeeping fields (those starting with `_`)."""
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def build_convert(
    inputs: list[str],
    out: str | Path,
    opts: ConvertOptions,
    tokenizer: str | None = None,
    sequence_len: int | None = None,
    shard: Shard | None = None,
) -> dict:
    """Q&A files (JSONL or CSV) -> chat JSONL + rejects + manifest, in input order.

    With a `shard`, only the rows of that shard (by content, see dataprep/shard.py) are
    converted, so n jobs (a Slurm array, say) split the work."""
    check_outputs(inputs, {"--out": out})
    from cosmosage.dataprep.tokenizer import load_tokenizer

    if sequence_len and not tokenizer:
        raise DataError("--sequence-len needs --tokenizer to measure conversations")
    counter = TokenCounter(load_tokenizer(tokenizer) if tokenizer else None)
    manifest = Manifest(
        str(out),
        extra={"format": opts.fmt, "mapping": dict(opts.mapping or {}), "token_unit": counter.unit},
    )
    if sequence_len:
        manifest.extra["sequence_len"] = sequence_len
    if shard:
        manifest.extra["shard"] = str(shard)
    drops = Drops()
    per_input: Counter = Counter()
    tokens = 0
    rule_fields = {r.field for r in opts.system_rules if r.field}  # seen in no row yet

    def records() -> Iterator[dict]:
        nonlocal tokens
        for path in inputs:
            manifest.add_input(path)
            rows = read_records(path)
            if shard:
                rows = (r for r in rows if in_shard(row_key(r[1]), shard))
            if rule_fields:
                rows = _noting_fields(rows, rule_fields)
            for rec in drops.keep(measure(convert(rows, str(path), opts), counter, sequence_len)):
                per_input[str(path)] += 1
                tokens += rec["_tokens"]
                yield public(rec)

    manifest.kept = write_jsonl(out, records(), empty_ok=False)
    refuse_nothing_kept(out, manifest.kept, drops.rejects)
    manifest.tokens = tokens
    manifest.dropped.update(drops.counts)
    manifest.extra["kept_per_input"] = dict(per_input)
    drops.write(out)
    manifest.write()
    result = {
        "output": str(out),
        "records": manifest.kept,
        "rejected": len(drops),
        "tokens": tokens,
    }
    if rule_fields:  # a `field:` rule on a field no row has gives no record its text
        result["rule_fields_in_no_row"] = sorted(rule_fields)
    return result


def _noting_fields(rows: Iterable, fields: set[str]) -> Iterator:
    """`rows` as they are; each field of `fields` a row has is taken out of `fields`."""
    for row in rows:
        if fields and isinstance(row[1], dict):
            fields.difference_update(row[1])
        yield row
