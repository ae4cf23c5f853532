"""Real tokenizers of the Mistral and Llama families, obtained offline from packages.

- llama.cpp keeps vocabulary-only GGUF files in its sources (no weights), each with
  reference tokenizations (`.inp` texts, `.out` token ids), and the sdist of the
  `llama-cpp-python` package vendors llama.cpp. `pip download` fetches the pinned sdist
  (through pip's cache) and these are taken out of it:
  `ggml-vocab-llama-bpe.gguf` (Llama-3's 128,256-token byte-level BPE with `<|eot_id|>`
  and the reserved specials; Llama-3.0's names, so the `<|finetune_right_pad_id|>` of
  3.1/3.2 is `<|reserved_special_token_2|>` there) and `ggml-vocab-llama-spm.gguf`
  (Llama-2's 32,000-token SentencePiece BPE: the `<unk>`/`<s>`/`</s>` layout, byte
  fallback and `▁` spaces that Mistral-7B-v0.1 shares).
- `mistral-common`, which Axolotl depends on, ships Mistral-7B-v0.1's own SentencePiece
  model as `mistral_common/data/tokenizer.model.v1` (its exact 32,000 pieces).

Each becomes a Hugging Face tokenizer folder in build/tokenizers/<name>/: the same
`tokenizers` pipeline the models publish (Llama-3: its pre-tokenizer regex, byte-level
BPE that ignores merges for whole-vocabulary words, bos added; SentencePiece: `▁`
normalizer, byte fallback, merges ranked by piece score, bos added), plus a config.json
of the model's published dimensions so Axolotl's loaders accept the folder as a model.
transformers' own GGUF loader (`from_pretrained(dir, gguf_file=...)`) is not used: it
takes minutes on a 128k vocabulary, gives these files eos equal to bos, and its Llama-3
pre-tokenizer differs from Llama-3's (11 of llama.cpp's 47 reference texts come out
differently). tests/tools/recipe/test_gpu_defects.py checks every folder against the
reference tokenizations (Mistral's against sentencepiece itself). Folders are cached; a
stamp records the source's sha256 and this converter's version.

    python -m tests.helpers.vocab [OUT_DIR]      # what `make tokenizers` runs
"""

from __future__ import annotations

import array
import hashlib
import json
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.tokenizers import LLAMA3_SPLIT

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "build" / "tokenizers"
CONVERTER_VERSION = 1
STAMP = "cosmosage_vocab.json"

LLAMA_CPP_SDIST = "llama-cpp-python==0.3.36"
LLAMA_CPP_MODELS = "vendor/llama.cpp/models/"
MISTRAL_COMMON_MODEL = "data/tokenizer.model.v1"

# Llama-3's pre-tokenizer: contractions, letters, 1-3 digits, punctuation runs, newlines.
# GGUF token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


class VocabUnavailable(Exception):
    """A source package cannot be had here; the message says which and why."""


@dataclass(frozen=True)
class Vocab:
    name: str  # folder under build/tokenizers/
    family: str  # what it is, for messages
    source: str  # where it comes from, for messages
    gguf: str | None  # file in llama.cpp's models/ folder, or None (mistral-common)


VOCABS = {
    "llama-3": Vocab(
        "llama-3",
        "Llama-3 (128k byte-level BPE)",
        f"{LLAMA_CPP_SDIST}: ggml-vocab-llama-bpe.gguf",
        "ggml-vocab-llama-bpe.gguf",
    ),
    "llama-2": Vocab(
        "llama-2",
        "Llama-2 (32k SentencePiece BPE)",
        f"{LLAMA_CPP_SDIST}: ggml-vocab-llama-spm.gguf",
        "ggml-vocab-llama-spm.gguf",
    ),
    "mistral-7b-v0.1": Vocab(
        "mistral-7b-v0.1",
        "Mistral-7B-v0.1 (32k SentencePiece BPE)",
        f"mistral-common: mistral_common/{MISTRAL_COMMON_MODEL}",
        None,
    ),
}
# Mistral-7B-v0.1's published dimensions, in the GGUF field names the others carry.
MISTRAL_7B_FIELDS = {
    "llama.embedding_length": 4096,
    "llama.feed_forward_length": 14336,
    "llama.block_count": 32,
    "llama.attention.head_count": 32,
    "llama.attention.head_count_kv": 8,
    "llama.context_length": 32768,
    "llama.rope.freq_base": 10000.0,
    "llama.attention.layer_norm_rms_epsilon": 1e-5,
}


# --------------------------------------------------------------------------- GGUF

_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?"}
_SCALAR |= {10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def read_gguf(path: Path, arrays: bool = True) -> dict[str, Any]:
    """The metadata of a GGUF file (header key/values; tensors are not read). Arrays come
    back as lists, or are skipped with `arrays=False`."""
    data = Path(path).read_bytes()
    if data[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    (n_kv,) = struct.unpack_from("<Q", data, 16)
    pos = 24  # magic, version, tensor count, key/value count

    def string(at: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", data, at)
        return data[at + 8 : at + 8 + n].decode("utf-8", "replace"), at + 8 + n

    def value(kind: int, at: int, keep: bool) -> tuple[Any, int]:
        if kind == _STRING:
            return string(at)
        if kind == _ARRAY:
            item, count = struct.unpack_from("<IQ", data, at)
            at += 12
            if item in _SCALAR:
                size = struct.calcsize(_SCALAR[item])
                if not keep:
                    return None, at + count * size
                values = array.array(_SCALAR[item].replace("?", "B"))
                values.frombytes(data[at : at + count * size])
                return values.tolist(), at + count * size
            out = []
            for _ in range(count):
                got, at = value(item, at, keep)
                out.append(got)
            return (out if keep else None), at
        fmt = "<" + _SCALAR[kind]
        return struct.unpack_from(fmt, data, at)[0], at + struct.calcsize(fmt)

    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key, pos = string(pos)
        (kind,) = struct.unpack_from("<I", data, pos)
        got, pos = value(kind, pos + 4, arrays)
        if got is not None:
            meta[key] = got
    return meta


# --------------------------------------------------------------------------- sources


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def llama_cpp_files() -> list[str]:
    """What is taken out of the sdist: each vocabulary and its reference tokenizations."""
    names = [v.gguf for v in VOCABS.values() if v.gguf]
    return [f + ext for f in names for ext in ("", ".inp", ".out")]


def fetch_llama_cpp_vocabs(dest: Path) -> dict[str, Path]:
    """llama.cpp's vocabulary GGUFs (and their .inp/.out), from the pinned sdist."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {f: dest / f for f in llama_cpp_files()}
    if all(p.is_file() for p in wanted.values()):
        return wanted
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
            + ["--no-deps", "--no-binary", ":all:", LLAMA_CPP_SDIST, "-d", tmp],
            capture_output=True,
            text=True,
        )
        sdists = sorted(Path(tmp).glob("*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            why = (lines or [f"exit {proc.returncode}"])[-1].strip()
            raise VocabUnavailable(f"pip cannot download the {LLAMA_CPP_SDIST} sdist: {why}")
        with tarfile.open(sdists[0], "r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if base not in wanted or not member.name.endswith(LLAMA_CPP_MODELS + base):
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                part = wanted[base].with_name(base + ".part")
                with open(part, "wb") as out:
                    shutil.copyfileobj(src, out)
                part.replace(wanted[base])
    missing = [name for name, p in wanted.items() if not p.is_file()]
    if missing:
        raise VocabUnavailable(f"the {LLAMA_CPP_SDIST} sdist has no {', '.join(missing)}")
    return wanted


def mistral_sentencepiece_model() -> Path:
    """Mistral-7B-v0.1's SentencePiece model as the mistral-common package ships it."""
    try:
        import mistral_common
    except ImportError as exc:
        raise VocabUnavailable(f"the mistral-common package is not installed ({exc})") from exc
    path = Path(mistral_common.__file__).parent / MISTRAL_COMMON_MODEL
    if not path.is_file():
        raise VocabUnavailable(f"mistral-common has no {MISTRAL_COMMON_MODEL}")
    return path


def sentencepiece_fields(model: Path) -> dict[str, Any]:
    """A SentencePiece model in the GGUF field names: pieces, scores, types, specials."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(model))
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            types.append(UNKNOWN)
        elif sp.is_control(i):
            types.append(CONTROL)
        elif sp.is_byte(i):
            types.append(BYTE)
        elif sp.is_unused(i):
            types.append(UNUSED)
        else:
            types.append(NORMAL)
    return {
        **MISTRAL_7B_FIELDS,
        "llama.vocab_size": len(tokens),
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": sp.bos_id(),
        "tokenizer.ggml.eos_token_id": sp.eos_id(),
        "tokenizer.ggml.unknown_token_id": sp.unk_id(),
        "tokenizer.ggml.add_bos_token": True,
    }


# --------------------------------------------------------------------------- tokenizers


def sentencepiece_merges(
    tokens: list[str], scores: list[float], types: list[int]
) -> list[tuple[str, str]]:
    """The BPE merges a SentencePiece BPE model implies: every ordinary piece that splits
    into two pieces of the vocabulary, ranked by the merged piece's score (higher first),
    then by the ids of its halves."""
    ids = {t: i for i, t in enumerate(tokens)}
    found = []
    for piece, pid in ids.items():
        if types[pid] not in (NORMAL, USER_DEFINED):
            continue
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in ids and right in ids:
                found.append((-scores[pid], ids[left], ids[right], left, right))
    found.sort()
    return [(left, right) for *_, left, right in found]


def _specials(fields: dict[str, Any]) -> dict[str, str | None]:
    tokens = fields["tokenizer.ggml.tokens"]

    def tok(key: str) -> str | None:
        i = fields.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(i)] if i is not None else None

    return {"bos_token": tok("bos"), "eos_token": tok("eos"), "unk_token": tok("unknown")}


def build_tokenizer(fields: dict[str, Any]) -> Any:
    """A `tokenizers.Tokenizer` for a Llama-3 (gpt2-style) or SentencePiece (llama) vocabulary."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    tokens = fields["tokenizer.ggml.tokens"]
    types = fields["tokenizer.ggml.token_type"]
    vocab = {t: i for i, t in enumerate(tokens)}
    specials = _specials(fields)
    bos = specials["bos_token"]
    kind = fields["tokenizer.ggml.model"]
    if kind == "gpt2":
        merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
        tk = Tokenizer(models.BPE(vocab, merges, ignore_merges=True, byte_fallback=False))
        tk.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tk.decoder = decoders.ByteLevel()
        byte_level = processors.ByteLevel(trim_offsets=False)
    elif kind == "llama":
        merges = sentencepiece_merges(tokens, fields["tokenizer.ggml.scores"], types)
        unk = specials["unk_token"]
        tk = Tokenizer(models.BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
        tk.normalizer = normalizers.Sequence(
            [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
        )
        tk.decoder = decoders.Sequence(
            [
                decoders.Replace("\u2581", " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(" ", 1, 0),
            ]
        )
        byte_level = None
    else:
        raise ValueError(f"no builder for tokenizer model {kind!r}")
    tk.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, ty in zip(tokens, types, strict=True)
            if ty in (CONTROL, UNKNOWN)
        ]
    )
    steps = [byte_level] if byte_level else []
    if bos and fields.get("tokenizer.ggml.add_bos_token", kind == "gpt2"):
        steps.append(
            processors.TemplateProcessing(
                single=f"{bos}:0 $A:0",
                pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                special_tokens=[(bos, vocab[bos])],
            )
        )
    if steps:
        tk.post_processor = steps[0] if len(steps) == 1 else processors.Sequence(steps)
    return tk


def model_config(fields: dict[str, Any], model_type: str) -> dict[str, Any]:
    """config.json of the model a vocabulary belongs to, from the `llama.*` fields."""
    import transformers

    hidden = int(fields["llama.embedding_length"])
    heads = int(fields["llama.attention.head_count"])
    cfg = {
        "architectures": ["MistralForCausalLM" if model_type == "mistral" else "LlamaForCausalLM"],
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": int(fields["llama.feed_forward_length"]),
        "num_hidden_layers": int(fields["llama.block_count"]),
        "num_attention_heads": heads,
        "num_key_value_heads": int(fields.get("llama.attention.head_count_kv", heads)),
        "head_dim": hidden // heads,
        "vocab_size": len(fields["tokenizer.ggml.tokens"]),
        "max_position_embeddings": int(fields["llama.context_length"]),
        "rms_norm_eps": float(fields.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(fields.get("llama.rope.freq_base", 10000.0)),
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": int(fields["tokenizer.ggml.bos_token_id"]),
        "eos_token_id": int(fields["tokenizer.ggml.eos_token_id"]),
        "torch_dtype": "bfloat16",
        "transformers_version": transformers.__version__,
    }
    if model_type == "mistral":
        cfg["sliding_window"] = 4096
    return cfg


def write_folder(fields: dict[str, Any], out: Path, model_type: str) -> Path:
    """A Hugging Face tokenizer folder plus config.json, written atomically."""
    from transformers import PreTrainedTokenizerFast

    specials = {k: v for k, v in _specials(fields).items() if v}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(fields),
        clean_up_tokenization_spaces=False,
        model_max_length=int(fields["llama.context_length"]),
        **specials,
    )
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(str(tmp))
    config = model_config(fields, model_type)
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


# --------------------------------------------------------------------------- folders


def _stamp_record(source: Path) -> dict[str, Any]:
    return {"sha256": sha256(source), "converter": CONVERTER_VERSION}


def tokenizer_folder(name: str, out_dir: Path = DEFAULT_OUT) -> Path:
    """build/tokenizers/<name>/, made on first use. Raises VocabUnavailable when the
    package that ships the vocabulary cannot be had."""
    if name not in VOCABS:
        raise KeyError(f"unknown vocabulary {name!r}; known: {', '.join(VOCABS)}")
    vocab = VOCABS[name]
    out = out_dir / name
    if vocab.gguf:
        source = fetch_llama_cpp_vocabs(out_dir)[vocab.gguf]
    else:
        source = mistral_sentencepiece_model()
    stamp = out / STAMP
    if (
        stamp.is_file()
        and (out / "tokenizer.json").is_file()
        and json.loads(stamp.read_text()) == _stamp_record(source)
    ):
        return out
    if vocab.gguf:
        fields, model_type = read_gguf(source), "llama"
    else:
        fields, model_type = sentencepiece_fields(source), "mistral"
    write_folder(fields, out, model_type)
    stamp.write_text(json.dumps(_stamp_record(source)) + "\n")
    return out


def reference_tokenizations(name: str, out_dir: Path = DEFAULT_OUT) -> list[tuple[str, list[int]]]:
    """llama.cpp's reference (text, token ids) pairs for a llama.cpp vocabulary."""
    vocab = VOCABS[name]
    if not vocab.gguf:
        return []
    files = fetch_llama_cpp_vocabs(out_dir)
    texts = files[vocab.gguf + ".inp"].read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    ids = files[vocab.gguf + ".out"].read_text(encoding="utf-8").split("\n")
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, ids, strict=False)]


def build_all(out_dir: Path = DEFAULT_OUT, echo: Callable[[str], None] = print) -> dict[str, Path]:
    made = {}
    for name, vocab in VOCABS.items():
        try:
            made[name] = tokenizer_folder(name, out_dir)
        except VocabUnavailable as exc:
            echo(f"skip   {name}: {exc}")
            continue
        echo(f"ok     {made[name]}  {vocab.family}, from {vocab.source}")
    return made


if __name__ == "__main__":
    build_all(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
