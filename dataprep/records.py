"""Records and the parsers that open no file: the error a bad input raises, a dropped
record (`Reject`), one JSONL line parsed or refused, YAML text loaded with its expansion
limit, and the reason a manifest counts a reject under. dataprep/io.py opens the files
and hands their bytes here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DataError(Exception):
    """Bad input that stops a step; the message names file, line and field."""


@dataclass
class Reject:
    """A record that was dropped, with where it came from and why."""

    source: str
    line: int | None
    reason: str
    record: Any = None

    def to_json(self) -> dict:
        out = {"source": self.source, "line": self.line, "reason": self.reason}
        if self.record is not None:
            out["record"] = self.record
        return out


def where(source: str | Path, line: int | None) -> str:
    return f"{source}:{line}" if line is not None else str(source)


# a UTF-16 half without its pair: JSON's \ud800 escape gives one, no encoder takes it
_SURROGATE = re.compile("[\ud800-\udfff]")


class _NotJSON(ValueError):
    pass


def _no_constant(name: str) -> Any:
    """NaN and Infinity are Python's extension, not JSON: refused, so nothing downstream
    writes them back out."""
    raise _NotJSON(f"not JSON: {name} is not a JSON number")


def record_strings(obj: Any) -> Iterator[str]:
    """Every string inside a record (values of mappings and items of lists, nested), for
    checks that a text occurs nowhere in a training file."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from record_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from record_strings(v)


def reason_group(reason: str) -> str:
    """What a manifest counts a reject under: the reason before its first colon, list
    indexes generalised ("messages[3].content: empty" -> "messages[].content"), so the
    dropped counts of any two commands can be compared and summed."""
    return re.sub(r"\[\d+\]", "[]", reason.split(":", 1)[0].strip())


# the most nodes a YAML document may expand to once its aliases are followed: far above
# any real recipe, suite or fact table, far below what a nest of anchors (a "billion
# laughs" document of a few hundred bytes) would build in memory
YAML_MAX_NODES = 1_000_000


def expanded_nodes(node: Any, limit: int = YAML_MAX_NODES) -> int:
    """How many nodes a composed YAML document stands for with every alias expanded,
    counted without expanding anything (an alias is the same node object); stops
    counting past `limit`."""
    import yaml

    sizes: dict[int, int] = {}
    order: list[Any] = []
    stack, seen = [node], set()
    while stack:  # children before parents, without recursion
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        order.append(n)
        if isinstance(n, yaml.SequenceNode):
            stack += n.value
        elif isinstance(n, yaml.MappingNode):
            stack += [x for pair in n.value for x in pair]
    for n in reversed(order):
        if isinstance(n, yaml.SequenceNode):
            kids = n.value
        elif isinstance(n, yaml.MappingNode):
            kids = [x for pair in n.value for x in pair]
        else:
            kids = []
        sizes[id(n)] = min(limit + 1, 1 + sum(sizes.get(id(k), 1) for k in kids))
    return sizes[id(node)]


def load_yaml_text(text: str, source: str | Path, lines: bool = False) -> Any:
    """Parse YAML text from `source`: syntax errors and documents that would expand past
    YAML_MAX_NODES become a DataError naming the source and line.

    With `lines`, every mapping gets a `__line__` key: the line it starts on, so later
    checks can point at it."""
    import yaml

    class LineLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            mapping = super().construct_mapping(node, deep=deep)
            mapping["__line__"] = node.start_mark.line + 1
            return mapping

    try:  # the loader checks the characters as it is made: a binary file fails here
        loader = (LineLoader if lines else yaml.SafeLoader)(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise DataError(
            f"{where(source, line)}: not a YAML text file: character U+{exc.character:04X} "
            f"(YAML allows printable characters only)"
        ) from exc
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if expanded_nodes(node) > YAML_MAX_NODES:
            raise DataError(
                f"{where(source, node.start_mark.line + 1)}: the YAML expands to more than "
                f"{YAML_MAX_NODES:,} values through its anchors and aliases; refused"
            )
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise DataError(
            f"{where(source, line)}: invalid YAML: {exc.problem or exc.context}"
        ) from exc
    except yaml.YAMLError as exc:
        raise DataError(f"{source}: invalid YAML: {exc}") from exc
    finally:
        loader.dispose()


def yaml_item_lines(source: str | Path) -> dict[tuple, int]:
    """The line of every list item of YAML file `source`, by its path of keys and indexes:
    `("facts", 3)`, `("kinds", "recall", 0)`, `(2,)` in a top-level list. A plain value
    carries no `__line__` once loaded; this finds its line, for a reject to name."""
    import yaml

    try:
        root = yaml.compose(Path(source).read_text("utf-8", errors="replace"), yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return {}
    lines: dict[tuple, int] = {}
    stack, seen = [((), root)], set()
    while stack:
        at, node = stack.pop()
        if id(node) in seen:  # an alias: its items were given the anchor's path
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack += [((*at, k.value), v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*at, i)] = item.start_mark.line + 1
                stack.append(((*at, i), item))
    return lines


def entry_lines(items: list, source: str | Path, key: str) -> list[int | None]:
    """The line each entry of the top-level `key:` list of YAML file `source` starts on:
    a mapping's `__line__` (`load_yaml_text(lines=True)`), else `yaml_item_lines`'."""
    lines = [row.get("__line__") if isinstance(row, dict) else None for row in items]
    if None in lines:
        found = yaml_item_lines(source)
        lines = [n or found.get((key, i)) for i, n in enumerate(lines)]
    return lines


def parse_json_line(raw: bytes, source: str, lineno: int) -> dict | Reject:
    """One JSONL line: the JSON object it holds, or a Reject saying why it is none (not
    UTF-8, a NUL byte, not JSON, NaN or Infinity, not an object, a lone surrogate)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Reject(source, lineno, f"not UTF-8: {exc.reason} at byte {exc.start}")
    if "\x00" in text:
        return Reject(source, lineno, "NUL byte in line")
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except _NotJSON as exc:
        return Reject(source, lineno, str(exc), text[:500])
    except json.JSONDecodeError as exc:
        return Reject(source, lineno, f"invalid JSON: {exc.msg} (column {exc.colno})", text[:500])
    if not isinstance(obj, dict):
        return Reject(source, lineno, f"expected a JSON object, got {type(obj).__name__}", obj)
    bad = next((t for t in record_strings(obj) if _SURROGATE.search(t)), None)
    if bad is not None:
        code = f"\\u{ord(_SURROGATE.search(bad).group()):04x}"
        return Reject(
            source,
            lineno,
            f"text holds a lone surrogate ({code}), which is not a character",
            text[:500],
        )
    return obj


class NotText(DataError):
    """A file that is binary or mostly not UTF-8: where (`source`, `line`) and why."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        super().__init__(f"{source}:{line}: {reason}")
        self.source, self.line, self.reason = source, line, reason


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text; a few bad bytes are replaced, a file that is mostly not UTF-8 (or
    binary, with NUL bytes) raises DataError naming the first bad line. A byte-order
    mark at the start is not text."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    if b"\x00" in data:
        nul = data.count(b"\x00")
        if nul > max(8, len(data) // 100):
            line = data[: data.index(b"\x00")].count(b"\n") + 1
            raise NotText(source, line, f"binary or UTF-16 file ({nul} NUL bytes)")
        data = data.replace(b"\x00", b"")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8", errors="replace")
        bad = text.count("\ufffd")
        if bad > max(8, len(text) // 100):
            line = data[: exc.start].count(b"\n") + 1
            raise NotText(
                source, line, f"not UTF-8 ({bad} undecodable bytes, first at byte {exc.start})"
            ) from exc
        return text


def undecodable_bytes(data: bytes) -> int:
    """How many bytes of `data` `decode_text` replaced with U+FFFD (0 for UTF-8 text)."""
    data = data.removeprefix(b"\xef\xbb\xbf").replace(b"\x00", b"")
    try:
        data.decode("utf-8")
        return 0
    except UnicodeDecodeError:
        replaced = data.decode("utf-8", errors="replace").count("\ufffd")
        return replaced - data.count("\ufffd".encode())  # less the ones written as text
