"""What a tokenizer lets the chunker do, read from its JSON description and checked
against the offsets it reports for a probe text.

`probe` sums it up as a `TokenizerProfile`: a per-token character table (lets candidates
be encoded without offsets), and the tables of the word-local or the word-start method
where the tokenizer is of that kind; the profile names the method the chunker uses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from cosmosage.dataprep.records import DataError

METHODS = ("auto", "word-local", "word-start", "candidates")

_PROBE = "Hubble's H_0 = 67.4 km/s/Mpc; Ω_m ≈ 0.315 (Planck 2018)\n\n$x^2$ and so on."
_PROBE_BYTE_LEVEL = (
    "Hubble's H_0 = 67.4 km/s/Mpc; Ω_m ≈ 0.315 (Planck 2018)\n\n  $x^2$ and so on. 宇宙 é"
)

# The Llama-2 / Mistral-7B-v0.1 normalizer: prepend `▁`, turn spaces into `▁`.
_METASPACE = {
    "type": "Sequence",
    "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
    ],
}


def backend_tokenizer(tokenizer: Any) -> Any:
    """A private `tokenizers.Tokenizer` (no truncation or padding) from a HF fast
    tokenizer, a `tokenizers.Tokenizer`, or a path to a model folder / tokenizer.json."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        tok = Tokenizer.from_str(tokenizer.to_str())
    elif hasattr(tokenizer, "backend_tokenizer"):
        tok = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    else:
        p = Path(str(tokenizer))
        if p.is_dir() and (p / "tokenizer.json").exists():
            tok = _from_file(p / "tokenizer.json")
        elif p.is_file():
            tok = _from_file(p)
        else:
            from cosmosage.dataprep.tokenizer import load_tokenizer

            hf = load_tokenizer(str(tokenizer))
            if not hasattr(hf, "backend_tokenizer"):
                raise DataError(
                    f"{tokenizer}: a fast (tokenizers) tokenizer is needed for chunking"
                )
            tok = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok


def _from_file(path: Path) -> Any:
    """A `tokenizers.Tokenizer` from its JSON file; any other file is a one-line error."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception
        raise DataError(
            f"--tokenizer {path}: not a tokenizer.json file ({str(exc)[:200]}); give a model "
            "folder with its tokenizer files, its tokenizer.json, or a Hub id ORG/NAME"
        ) from exc


def plain_bpe(tok: Any) -> dict | None:
    """The tokenizer's JSON description when its model is BPE without dropout, subword
    prefix or word suffix (so a piece's characters are the text's), else None."""
    spec = json.loads(tok.to_str())
    model = spec.get("model", {})
    if (
        model.get("type") != "BPE"
        or model.get("dropout")
        or model.get("continuing_subword_prefix")
        or model.get("end_of_word_suffix")
    ):
        return None
    return spec


class CharTable(NamedTuple):
    """How many characters of the text each token id covers (a byte-fallback token covers
    its character when it is the character's first byte, else none), and how many
    characters the normalizer adds in front of a text."""

    lens: list[int]
    prefix: int


def char_table(tok: Any) -> CharTable | None:
    """The tokenizer's `CharTable`; None when it does not fit (not BPE, or the table
    disagrees with the offsets the tokenizer reports for a probe text). Lets candidates be
    encoded without offsets, which is the costlier part of encoding for short texts."""
    import numpy as np

    spec = plain_bpe(tok)
    if spec is None:
        return None
    model = spec["model"]
    lens = np.ones(tok.get_vocab_size(with_added_tokens=True), dtype=np.int64)
    byte = re.compile(r"<0x([0-9A-Fa-f]{2})>")
    for piece, i in tok.get_vocab(with_added_tokens=True).items():
        m = byte.fullmatch(piece) if model.get("byte_fallback") else None
        if m:
            lens[i] = 0 if int(m.group(1), 16) & 0xC0 == 0x80 else 1
        else:
            lens[i] = len(piece)
    enc = tok.encode(_PROBE, add_special_tokens=False)
    ends = np.cumsum(lens[enc.ids])
    prefix = int(ends[-1]) - len(_PROBE)
    for j, (a, _) in enumerate(enc.offsets):
        start = int(ends[j - 1]) - prefix if j else 0
        if j and lens[enc.ids[j]] and max(start, 0) != a:
            return None
    return CharTable(lens.tolist(), prefix)


class WordLocalTable(NamedTuple):
    """Per token id, for the word-local method: characters covered, whether it opens with
    `▁` (a word start), whether it is an added token; and whether a text starting with a
    space still gets a `▁` prepended."""

    lens: list[int]
    word_start: list[bool]
    special: list[bool]
    lead_space: bool


def word_local_table(tok: Any, chars: CharTable | None) -> WordLocalTable | None:
    """The word-local tables when that method is exact for this tokenizer, else None: BPE
    without dropout or ignore_merges, spaces made `▁` and one prepended by the
    Llama/Mistral normalizer (or a non-splitting Metaspace pre-tokenizer), and no piece
    with a `▁` after another character (so each word start is a boundary in every
    encoding)."""
    if chars is None or chars.prefix != 1:
        return None
    spec = plain_bpe(tok)
    if spec is None or spec["model"].get("ignore_merges"):
        return None
    pre = spec.get("pre_tokenizer")
    if pre is None and spec.get("normalizer") == _METASPACE:
        lead_space = True  # the Llama-2 / Mistral-7B-v0.1 form: "▁" is always prepended
    elif (
        _no_normalizer(spec)
        and isinstance(pre, dict)
        and pre.get("type") == "Metaspace"
        and pre.get("replacement") == "\u2581"
        and pre.get("split") is False
        and pre.get("prepend_scheme") in ("first", "always")
    ):
        lead_space = False  # the newer form: no "▁" prepended to a text starting with a space
    else:
        return None
    vocab = tok.get_vocab(with_added_tokens=True)
    if "\u2581" not in vocab:
        return None
    size = len(chars.lens)
    starts = [False] * size
    special = [False] * size
    for piece, i in vocab.items():
        if "\u2581" in piece[1:] and any(
            c == "\u2581" and piece[j] != "\u2581" for j, c in enumerate(piece[1:])
        ):
            return None
        starts[i] = piece.startswith("\u2581")
    for added in spec.get("added_tokens", []):
        special[added["id"]] = True
    return WordLocalTable(chars.lens, starts, special, lead_space)


def _byte_chars() -> dict[str, int]:
    """The byte-level alphabet: the printable character that stands for each byte value
    (printable Latin-1 bytes stand for themselves, the other 68 take code points from 256
    on, in byte order)."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = iter(range(256, 512))
    return {chr(b if b in keep else next(extra)): b for b in range(256)}


def _no_normalizer(spec: dict) -> bool:
    """No normalizer, or one that does nothing: a Sequence of none (SmolLM2's)."""
    norm = spec.get("normalizer")
    return norm is None or (norm.get("type") == "Sequence" and not norm.get("normalizers"))


def _regex_pre_tokenizer(pre: Any) -> bool:
    """A byte-level pre-tokenizer whose regex has no look-behind (GPT-2's, or a Split with
    its own regex such as Llama-3's), adding no prefix space."""
    if not isinstance(pre, dict):
        return False
    if pre.get("type") == "ByteLevel":
        return pre.get("use_regex", True) and not pre.get("add_prefix_space")
    if pre.get("type") != "Sequence" or len(pre.get("pretokenizers", [])) != 2:
        return False
    split, byte_level = pre["pretokenizers"]
    regex = (split.get("pattern") or {}).get("Regex")
    return (
        split.get("type") == "Split"
        and isinstance(regex, str)
        and "(?<" not in regex
        and split.get("behavior") == "Isolated"
        and not split.get("invert")
        and byte_level.get("type") == "ByteLevel"
        and not byte_level.get("use_regex", True)
        and not byte_level.get("add_prefix_space")
    )


class WordStartTable(NamedTuple):
    """Per token id, for the word-start method: characters covered (its bytes that start
    a character), whether it opens with a space and then a non-space character (a word
    start), whether it is an added token, and whether its first byte starts a character."""

    lens: list[int]
    starts: list[bool]
    special: list[bool]
    boundary: list[bool]


def word_start_table(tok: Any) -> WordStartTable | None:
    """The word-start tables for byte-level BPE with a regex pre-tokenizer (GPT-2,
    Llama-3 style), else None (also when a probe disagrees with the tokenizer's offsets).
    With these regexes a space before a non-space always begins a pre-token, and a regex
    without look-behind, started there, splits the rest as the whole text's scan did; so a
    chunk cut before a word start encodes on its own to exactly its document's tokens."""
    spec = plain_bpe(tok)
    if (
        spec is None
        or not _no_normalizer(spec)
        or not _regex_pre_tokenizer(spec.get("pre_tokenizer"))
    ):
        return None
    byte_of = _byte_chars()
    size = tok.get_vocab_size(with_added_tokens=True)
    lens, starts, special = [1] * size, [False] * size, [False] * size
    boundary = [True] * size
    added = {a["id"]: a["content"] for a in spec.get("added_tokens", [])}
    for piece, i in tok.get_vocab(with_added_tokens=True).items():
        if i in added:
            lens[i], special[i] = len(added[i]), True
            continue
        try:
            raw = bytes(byte_of[c] for c in piece)
        except KeyError:
            return None
        lens[i] = sum(1 for b in raw if b & 0xC0 != 0x80)
        boundary[i] = not raw or raw[0] & 0xC0 != 0x80
        starts[i] = raw[:1] == b" " and len(raw) > 1 and not raw[1:2].isspace()
    enc = tok.encode(_PROBE_BYTE_LEVEL, add_special_tokens=False)
    end = 0
    for i, (a, _) in zip(enc.ids, enc.offsets, strict=True):
        if starts[i] and a != end:
            return None
        end += lens[i]
    if end != len(_PROBE_BYTE_LEVEL):
        return None
    return WordStartTable(lens, starts, special, boundary)


@dataclass(frozen=True)
class TokenizerProfile:
    """What a tokenizer allows: the character table (None: candidates need offsets) and
    the tables of the word method that fits it (at most one)."""

    chars: CharTable | None
    word_local: WordLocalTable | None
    word_start: WordStartTable | None

    @property
    def method(self) -> str:
        if self.word_local:
            return "word-local"
        return "word-start" if self.word_start else "candidates"


def probe(tok: Any, method: str = "auto", paragraph: bool = False) -> TokenizerProfile:
    """The profile of `tok` for the requested method ("auto": the first that fits of
    word-local, word-start, candidates). Paragraph alignment needs offsets, so it gets the
    candidate method without the character table. Raises `DataError` for an unknown
    method or one that does not fit."""
    chars = None if paragraph else char_table(tok)
    if method not in METHODS:
        raise DataError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    local = start = None
    if method in ("auto", "word-local"):
        local = word_local_table(tok, chars)
    if method in ("auto", "word-start") and not paragraph and local is None:
        start = word_start_table(tok)
    found = TokenizerProfile(chars, local, start)
    if method != "auto" and method != found.method:
        raise DataError(
            f"the {method} method does not fit this tokenizer"
            + (" with paragraph alignment" if paragraph else "")
            + " (word-local: Llama-2/Mistral-style BPE; word-start: byte-level BPE with"
            " a regex pre-tokenizer); use method auto or candidates"
        )
    return found
