"""Q&A and chat sources -> chat records `{"messages": [{"role", "content"}, ...]}`.

`to_messages` recognises ShareGPT (`conversations` with `from`/`value`, as
SlimOrca-Dedup ships), Alpaca (`instruction`/`input`/`output`), camel-ai style Q&A
(`message_1`/`message_2` with `topic;`/`sub_topic`), records that are already in
`messages` form, and any flat record through a column mapping. It raises `ValueError`
with the field at fault; callers turn that into a reject naming file and line.

A system prompt can be fixed or chosen per record by `SystemRule`s, e.g. a short-answer
prompt for answers under 300 characters and a detailed one otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cosmosage.dataprep.records import DataError

SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
}
ROLES = {"system", "user", "assistant"}
FORMATS = ("auto", "messages", "sharegpt", "alpaca", "camel", "columns")


def detect_format(record: dict) -> str:
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "message_1" in record and "message_2" in record:
        return "camel"
    if "instruction" in record and "output" in record:
        return "alpaca"
    raise ValueError(
        f"unrecognised record with fields {sorted(record)[:8]}: expected 'messages', "
        "'conversations' (ShareGPT), 'message_1'/'message_2' (camel-ai) or "
        "'instruction'/'output' (Alpaca); give a column mapping for other layouts"
    )


def from_sharegpt(record: dict) -> list[dict]:
    turns = record["conversations"]
    if not isinstance(turns, list):
        raise ValueError("field 'conversations' is not a list")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ValueError(f"conversations[{i}] is not an object")
        role = SHAREGPT_ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise ValueError(f"conversations[{i}].from: unknown role {turn.get('from')!r}")
        out.append({"role": role, "content": turn.get("value")})
    return out


def from_alpaca(record: dict) -> list[dict]:
    for key in ("instruction", "input"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise ValueError(f"{key}: expected text, got {type(record[key]).__name__}")
    prompt = (record.get("instruction") or "").strip()
    extra = (record.get("input") or "").strip()
    if extra:
        prompt = f"{prompt}\n\n{extra}"
    return [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": record.get("output")},
    ]


def from_camel(record: dict) -> list[dict]:
    """camel-ai physics/chemistry/biology: `message_1` asks, `message_2` answers."""
    return [
        {"role": "user", "content": record.get("message_1")},
        {"role": "assistant", "content": record.get("message_2")},
    ]


def camel_topic(record: dict) -> str | None:
    """The topic of a camel-ai record (its field is spelled `topic;` in the releases)."""
    for key in ("topic;", "topic", "sub_topic"):
        if record.get(key):
            return str(record[key])
    return None


_FIELD = re.compile(r"\{([^{}]+)\}")


def _column_value(record: Mapping, spec: str, role: str) -> str:
    """A column name, or a pattern such as `{question}\\n\\n{context}` over columns."""
    if "{" not in spec:
        if spec not in record:
            raise ValueError(
                f"column {spec!r} (for {role}) missing; columns are {sorted(record)[:12]}"
            )
        value = record[spec]
        return "" if value is None else str(value)
    missing = [name for name in _FIELD.findall(spec) if name not in record]
    if missing:
        raise ValueError(
            f"column {missing[0]!r} (for {role}) missing; columns are {sorted(record)[:12]}"
        )
    return _FIELD.sub(lambda m: "" if record[m.group(1)] is None else str(record[m.group(1)]), spec)


def from_columns(record: Mapping, mapping: Mapping[str, str]) -> list[dict]:
    """A flat row (CSV or JSONL) -> one exchange, by a mapping role -> column or pattern.

    `mapping` needs `user` and `assistant`; `system` is optional (an empty value adds
    no system turn).
    """
    for role in ("user", "assistant"):
        if role not in mapping:
            raise DataError(f"column mapping has no {role!r} entry (got {sorted(mapping)})")
    unknown = set(mapping) - ROLES
    if unknown:
        raise DataError(
            f"column mapping: unknown role(s) {sorted(unknown)}; use system, user, assistant"
        )
    msgs = []
    if mapping.get("system"):
        system = _column_value(record, mapping["system"], "system").strip()
        if system:
            msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": _column_value(record, mapping["user"], "user")})
    msgs.append(
        {"role": "assistant", "content": _column_value(record, mapping["assistant"], "assistant")}
    )
    return msgs


def parse_mapping(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`["user=question", "assistant=answer"]` -> `{"user": "question", "assistant": "answer"}`."""
    out = {}
    for item in items:
        role, sep, column = item.partition("=")
        if not sep or not role.strip() or not column:
            raise DataError(f"column mapping {item!r}: expected ROLE=COLUMN, e.g. user=question")
        if ("{" in column or "}" in column) and (
            not _FIELD.search(column)
            or "{" in _FIELD.sub("", column)
            or "}" in _FIELD.sub("", column)
        ):
            raise DataError(
                f"column mapping {item!r}: a pattern names columns in braces, each closed, "
                "e.g. 'user={question}\\n\\n{context}'"
            )
        out[role.strip()] = column
    return out


def validate_messages(messages: list[dict]) -> list[dict]:
    """Check roles, non-empty contents and user/assistant alternation.

    An empty system turn at the start means "no system prompt" (OpenOrca and
    SlimOrca use one as one of their system messages) and is dropped, not rejected."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: empty or not a list")
    first = messages[0]
    if (
        isinstance(first, dict)
        and first.get("role") == "system"
        and isinstance(first.get("content"), str | None)
        and not (first.get("content") or "").strip()
        and len(messages) > 1
    ):
        messages = messages[1:]
    expected = "user"
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise ValueError(f"messages[{i}]: not an object")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role: unknown role {role!r}")
        if content is not None and not isinstance(content, str):
            raise ValueError(
                f"messages[{i}].content: expected text, got {type(content).__name__} "
                f"({json.dumps(content, default=str)[:60]})"
            )
        if not content or not content.strip():
            raise ValueError(f"messages[{i}].content: empty {role} turn")
        if role == "system":
            if i != 0:
                raise ValueError(f"messages[{i}]: system message not first")
            continue
        if role != expected:
            raise ValueError(
                f"messages[{i}].role: expected {expected}, got {role} (turns must alternate)"
            )
        expected = "assistant" if role == "user" else "user"
    if messages[-1]["role"] != "assistant":
        raise ValueError("messages: last turn is not from the assistant")
    return [{"role": m["role"], "content": m["content"].strip()} for m in messages]


# --------------------------------------------------------------------------- system prompts

_COND = re.compile(r"^(answer_chars|answer_words|question_chars|turns)\s*(<=|>=|<|>|==)\s*(\d+)$")
_FIELD_COND = re.compile(r"^field:([^=]+)=(.*)$")
# a numeric condition and its text: the operator may itself hold '=' (>=, <=, ==)
_COND_RULE = re.compile(
    r"^\s*((?:answer_chars|answer_words|question_chars|turns)\s*(?:<=|>=|<|>|==)\s*\d+)\s*=(.*)$",
    re.S,
)


@dataclass(frozen=True)
class SystemRule:
    """`condition=text`: the first rule whose condition holds gives the system prompt.

    Conditions: `default` (always), `answer_chars<N`, `answer_words>=N`,
    `question_chars>N`, `turns==N` (user+assistant turns) and `field:NAME=VALUE` (a
    field of the source record, e.g. `field:topic;=Cosmology`).
    """

    condition: str
    text: str

    @classmethod
    def parse(cls, spec: str) -> SystemRule:
        numeric = _COND_RULE.match(spec)
        if numeric:
            cond, sep, text = numeric.group(1), "=", numeric.group(2)
        else:
            cond, sep, text = spec.partition("=")
        if cond.startswith("field:"):
            # field:NAME=VALUE=text: the text follows the second '='
            value, sep2, text = text.partition("=")
            cond, sep = f"{cond}={value}", sep2
        cond = cond.strip()
        if not sep or not text.strip():
            raise ValueError(
                f"system rule {spec!r}: expected CONDITION=TEXT, e.g. 'answer_chars<300=Answer briefly.'"
            )
        if cond not in ("default", "*") and not _COND.match(cond) and not _FIELD_COND.match(cond):
            raise ValueError(
                f"system rule {spec!r}: unknown condition {cond!r}; use default, answer_chars<N, "
                "answer_words>=N, question_chars>N, turns==N or field:NAME=VALUE"
            )
        return cls(cond, text.strip())

    @property
    def field(self) -> str | None:
        """The source field a `field:NAME=VALUE` rule reads (None for other rules)."""
        m = _FIELD_COND.match(self.condition)
        return m.group(1) if m else None

    def matches(self, messages: list[dict], record: Mapping | None = None) -> bool:
        if self.condition in ("default", "*"):
            return True
        field = _FIELD_COND.match(self.condition)
        if field:
            return record is not None and str(record.get(field.group(1), "")) == field.group(2)
        name, op, num = _COND.match(self.condition).groups()
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        questions = [m["content"] for m in messages if m["role"] == "user"]
        value = {
            "answer_chars": sum(len(a) for a in answers),
            "answer_words": sum(len(a.split()) for a in answers),
            "question_chars": sum(len(q) for q in questions),
            "turns": len(answers) + len(questions),
        }[name]
        n = int(num)
        return {
            "<": value < n,
            "<=": value <= n,
            ">": value > n,
            ">=": value >= n,
            "==": value == n,
        }[op]


def choose_system(
    rules: list[SystemRule], messages: list[dict], record: Mapping | None = None
) -> str | None:
    for rule in rules:
        if rule.matches(messages, record):
            return rule.text
    return None


def to_messages(
    record: dict,
    system_prompt: str | None = None,
    fmt: str = "auto",
    mapping: Mapping[str, str] | None = None,
    system_rules: list[SystemRule] | None = None,
    replace_system: bool = False,
) -> list[dict]:
    """One source record -> validated messages, with a system prompt where asked for.

    A record's own system turn is kept unless `replace_system` is set.
    """
    if fmt == "auto":
        fmt = "columns" if mapping else detect_format(record)
    if fmt == "sharegpt":
        msgs = from_sharegpt(record)
    elif fmt == "alpaca":
        msgs = from_alpaca(record)
    elif fmt == "camel":
        msgs = from_camel(record)
    elif fmt == "columns":
        if not mapping:
            raise DataError("format 'columns' needs a column mapping (user=COL assistant=COL)")
        msgs = from_columns(record, mapping)
    elif fmt == "messages":
        msgs = record.get("messages")
    else:
        raise DataError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    msgs = validate_messages(msgs)
    system = choose_system(system_rules, msgs, record) if system_rules else None
    system = system or system_prompt
    if system:
        if msgs[0]["role"] == "system" and replace_system:
            msgs = msgs[1:]
        if msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": system}, *msgs]
    return msgs
