"""Q&A and chat sources -> chat records `{"messages": [{"role", "content"}, ...]}`.

`to_messages` recognises ShareGPT (`conversations` with `from`/`value`, as
SlimOrca-Dedup ships), Alpaca (`instruction`/`input`/`output`) and records that are
already in `messages` form. It raises `ValueError` with the field at fault; callers turn
that into a reject naming file and line.
"""

from __future__ import annotations

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


def detect_format(record: dict) -> str:
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    raise ValueError(
        f"unrecognised record with fields {sorted(record)[:8]}: expected 'messages', "
        "'conversations' (ShareGPT) or 'instruction'/'output' (Alpaca)"
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
    prompt = str(record.get("instruction") or "").strip()
    extra = str(record.get("input") or "").strip()
    if extra:
        prompt = f"{prompt}\n\n{extra}"
    return [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": record.get("output")},
    ]


def validate_messages(messages: list[dict]) -> list[dict]:
    """Check roles, non-empty contents and user/assistant alternation."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: empty or not a list")
    expected = "user"
    for i, msg in enumerate(messages):
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role: unknown role {role!r}")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"messages[{i}].content: empty")
        if role == "system":
            if i != 0:
                raise ValueError(f"messages[{i}]: system message not first")
            continue
        if role != expected:
            raise ValueError(f"messages[{i}].role: expected {expected}, got {role} (turns must alternate)")
        expected = "assistant" if role == "user" else "user"
    if messages[-1]["role"] != "assistant":
        raise ValueError("messages: last turn is not from the assistant")
    return [{"role": m["role"], "content": m["content"].strip()} for m in messages]


def to_messages(record: dict, system_prompt: str | None = None) -> list[dict]:
    fmt = detect_format(record)
    if fmt == "sharegpt":
        msgs = from_sharegpt(record)
    elif fmt == "alpaca":
        msgs = from_alpaca(record)
    else:
        msgs = record["messages"]
    msgs = validate_messages(msgs)
    if system_prompt and msgs[0]["role"] != "system":
        msgs = [{"role": "system", "content": system_prompt}, *msgs]
    return msgs
