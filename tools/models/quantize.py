"""GGUF files of a model for llama.cpp and Ollama, made with llama.cpp's own tools.

    model folder --convert_hf_to_gguf.py--> NAME-f16.gguf --llama_model_quantize--> NAME-q8_0.gguf, ...

The converter (convert_hf_to_gguf.py with its `conversion` package and gguf-py) is the
one vendored in the source distribution of the installed llama-cpp-python, so converter
and quantizer are the same llama.cpp version; it is unpacked once into the cache
(`~/.cache/cosmosage`, or COSMOSAGE_CACHE). The quantizer and the check that every file
loads and generates are llama-cpp-python's bindings of llama.cpp. Beside the files go an
Ollama Modelfile (the model's chat template as an Ollama template, its end-of-turn token
as the stop) and quantize.json. Needs the `gguf` extra: pip install -e '.[gguf]'
(llama-cpp-python compiles llama.cpp on install, ~5 minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cosmosage.dataprep.env import child_env
from cosmosage.dataprep.records import DataError

# name -> llama_ftype constant in llama_cpp (f16 comes straight from the converter)
GGUF_TYPES = {
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "bf16": "LLAMA_FTYPE_MOSTLY_BF16",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
}
CONVERTER_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
SMOKE_PROMPT = "The universe is"

Echo = Callable[[str], None]


class QuantizeError(DataError):
    """A conversion, quantization or load failed; the message says which and where the log is."""


def parse_types(spec: str) -> list[str]:
    """`f16,q8_0,q4_K_M` -> the names, checked (case as llama.cpp writes them)."""
    names = [t.strip() for t in spec.split(",") if t.strip()]
    lookup = {k.lower(): k for k in GGUF_TYPES}
    out = []
    for n in names:
        if n.lower() not in lookup:
            raise QuantizeError(f"--gguf {n!r}: choose from {', '.join(GGUF_TYPES)}")
        out.append(lookup[n.lower()])
    if not out:
        raise QuantizeError("--gguf: name at least one type, e.g. f16,q8_0,q4_K_M")
    return out


def llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise QuantizeError(
            "llama-cpp-python is not installed: pip install -e '.[gguf]' (it compiles llama.cpp)"
        ) from exc
    return llama_cpp


def cache_dir() -> Path:
    return Path(os.environ.get("COSMOSAGE_CACHE") or Path.home() / ".cache" / "cosmosage")


def converter(echo: Echo = print) -> Path:
    """convert_hf_to_gguf.py of the installed llama-cpp-python's own llama.cpp, unpacked from
    its source distribution (downloaded once with pip; COSMOSAGE_LLAMA_CPP_SDIST may name
    the .tar.gz instead)."""
    version = llama_cpp().__version__
    dst = cache_dir() / f"llama.cpp-{version}"
    script = dst / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    sdist = os.environ.get("COSMOSAGE_LLAMA_CPP_SDIST")
    with tempfile.TemporaryDirectory() as tmp:
        if not sdist:
            echo(f"fetch  llama-cpp-python=={version} source (for llama.cpp's converter)")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            got = subprocess.run(
                [*cmd, f"llama-cpp-python=={version}", "-d", tmp], capture_output=True, text=True
            )
            found = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
            if got.returncode != 0 or not found:
                raise QuantizeError(
                    f"could not download llama-cpp-python=={version}'s source: "
                    f"{(got.stderr or got.stdout).strip().splitlines()[-1:]}"
                )
            sdist = str(found[0])
        dst.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dst.parent, prefix=".unpack-"))
        with tarfile.open(sdist) as tar:
            for m in tar.getmembers():
                parts = m.name.split("/", 1)
                rel = parts[1] if len(parts) > 1 else ""
                if not rel.startswith("vendor/llama.cpp/"):
                    continue
                inner = rel.removeprefix("vendor/llama.cpp/")
                if not any(inner == p or inner.startswith(p) for p in CONVERTER_MEMBERS):
                    continue
                if not (m.isfile() or m.isdir()):
                    continue
                m.name = inner
                tar.extract(m, staging, filter="data")
    if not (staging / "convert_hf_to_gguf.py").is_file():
        shutil.rmtree(staging, ignore_errors=True)
        raise QuantizeError(f"{sdist}: no vendor/llama.cpp/convert_hf_to_gguf.py inside")
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(staging, dst)
    return script


def _byte_level(node: dict | None) -> bool:
    if not node:
        return False
    if node.get("type") == "ByteLevel":
        return True
    return any(_byte_level(n) for n in node.get("pretokenizers") or node.get("decoders") or [])


def byte_level_repair(tokenizer: dict) -> dict | None:
    """A byte-level BPE (GPT-2 style pre-tokenizer) whose tokenizer.json also claims
    SentencePiece's byte fallback - as transformers' GGUF import writes SmolLM2's - makes
    llama.cpp's converter take it for a Llama SentencePiece vocabulary, and the GGUF then
    aborts on tokenizing. The same tokenizer as plain byte-level BPE (no byte fallback,
    ByteLevel decoder; it never needed the fallback, every byte being a token) converts
    as GPT-2 BPE with its pre-tokenizer recognised. None when nothing needs repairing."""
    model = tokenizer.get("model") or {}
    if not (
        model.get("type") == "BPE"
        and model.get("byte_fallback")
        and _byte_level(tokenizer.get("pre_tokenizer"))
    ):
        return None
    fixed = dict(tokenizer)
    fixed["model"] = {**model, "byte_fallback": False}
    fixed["decoder"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": True,
        "use_regex": True,
    }
    return fixed


def converter_input(model_dir: Path, staging: Path) -> tuple[Path, list[str]]:
    """The folder the converter reads: the model folder itself, or a view of it (links)
    with a repaired tokenizer.json; and the repairs made."""
    tok_file = model_dir / "tokenizer.json"
    fixed = byte_level_repair(json.loads(tok_file.read_text())) if tok_file.is_file() else None
    if fixed is None:
        return model_dir, []
    staging.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():
        if f.is_file() and f.name != "tokenizer.json":
            (staging / f.name).symlink_to(f.resolve())
    (staging / "tokenizer.json").write_text(json.dumps(fixed, ensure_ascii=False))
    return staging, [
        "tokenizer.json: byte-level BPE marked byte_fallback -> plain byte-level BPE for the "
        "converter (same token ids)"
    ]


def convert(model_dir: Path, out: Path, outtype: str, echo: Echo = print) -> list[str]:
    """HF model folder -> GGUF (f16, bf16 or f32) with llama.cpp's converter; returns the
    repairs made to its input."""
    script = converter(echo)
    with tempfile.TemporaryDirectory() as tmp:
        source, repairs = converter_input(model_dir, Path(tmp) / "model")
        for r in repairs:
            echo(f"repair {r}")
        _run_converter(script, source, out, outtype)
    return repairs


def _run_converter(script: Path, model_dir: Path, out: Path, outtype: str) -> Path:
    log = out.with_suffix(".log")
    argv = [sys.executable, str(script), str(model_dir), "--outfile", str(out)]
    argv += ["--outtype", outtype]
    env = child_env(local=True)
    env.pop("NO_LOCAL_GGUF", None)  # the converter uses its own gguf-py, matched to it
    with open(log, "wb") as fh:
        fh.write(f"$ {' '.join(argv)}\n".encode())
        fh.flush()
        rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0 or not out.is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-12:])
        raise QuantizeError(
            f"convert_hf_to_gguf.py failed (exit {rc}); last lines of {log}:\n{tail}"
        )
    log.unlink()
    return out


def quantize_file(src: Path, dst: Path, kind: str) -> Path:
    """llama.cpp's quantizer (llama_model_quantize) from an f16 GGUF."""
    import ctypes

    lc = llama_cpp()
    params = lc.llama_model_quantize_default_params()
    params.ftype = getattr(lc, GGUF_TYPES[kind])
    tmp = dst.with_name(dst.name + ".tmp")
    rc = lc.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise QuantizeError(f"llama_model_quantize {src} -> {kind} failed (code {rc})")
    os.replace(tmp, dst)
    return dst


def load(path: Path, n_ctx: int = 1024):
    lc = llama_cpp()
    try:
        return lc.Llama(model_path=str(path), n_ctx=n_ctx, verbose=False, seed=0)
    except (ValueError, RuntimeError) as exc:
        raise QuantizeError(f"llama.cpp could not load {path}: {exc}") from exc


def smoke(path: Path, max_tokens: int = 8) -> str:
    """Load with llama.cpp and generate greedily: the text, which must not be empty."""
    llm = load(path, n_ctx=256)
    out = llm.create_completion(SMOKE_PROMPT, max_tokens=max_tokens, temperature=0.0)
    text = out["choices"][0]["text"]
    del llm
    if not text.strip():
        raise QuantizeError(f"{path}: llama.cpp loaded it but generated nothing")
    return text


class GgufGenerator:
    """Answers from a GGUF file through llama.cpp, prompted with exactly the token ids the
    Hugging Face model gets (its tokenizer's chat template), greedy only; the same
    `answers` interface as the evaluation's Generator."""

    def __init__(self, gguf: str | Path, tokenizer_dir: str | Path):
        from transformers import AutoTokenizer

        self.path = Path(gguf)
        self.tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self.llm = load(self.path)

    def ids(self, prompt: dict) -> list[int]:
        if getattr(self.tok, "chat_template", None):
            msgs = [{"role": "system", "content": prompt["system"]}] if prompt.get("system") else []
            msgs.append({"role": "user", "content": prompt["prompt"]})
            got = self.tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True)
            return list(got["input_ids"])
        return list(self.tok(prompt["prompt"])["input_ids"])

    def answers(
        self, prompts: list[dict], settings: dict, n: int = 1, seed: int = 0, desc: str = ""
    ) -> list[list[str]]:
        max_new = int(settings.get("max_new_tokens", 48))
        out = []
        for p in prompts:
            self.llm.reset()
            tokens = []
            for tok in self.llm.generate(self.ids(p), top_k=1, temp=0.0, reset=True):
                if tok == self.llm.token_eos() or len(tokens) >= max_new:
                    break
                tokens.append(tok)
            text = self.tok.decode(tokens, skip_special_tokens=True).strip()
            out.append([text] * n)
        return out


# ----------------------------------------------------------------------------- Ollama


def _render(template: str, messages: list[dict], tokens: dict[str, str]) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=True, bos_token="", eos_token=tokens["eos"]
    )


def ollama_template(template: str, eos: str) -> str:
    """The chat template as an Ollama (Go) template over .System and .Prompt: rendered with
    marker messages, then the text around the markers kept."""
    user, system = "\x00USER\x00", "\x00SYSTEM\x00"
    alone = _render(template, [{"role": "user", "content": user}], {"eos": eos})
    with_sys = _render(
        template,
        [{"role": "system", "content": system}, {"role": "user", "content": user}],
        {"eos": eos},
    )
    pre, _, post = alone.partition(user)
    if user not in alone:
        raise QuantizeError("the chat template does not show the user's message")
    if system in with_sys:
        a, _, rest = with_sys.partition(system)
        b, _, _ = rest.partition(user)
        head = f"{{{{ if .System }}}}{a}{{{{ .System }}}}{b}{{{{ else }}}}{pre}{{{{ end }}}}"
    else:
        head = pre
    return f"{head}{{{{ .Prompt }}}}{post}"


def modelfile(gguf_name: str, model_dir: Path) -> str:
    """An Ollama Modelfile for the GGUF: template from the model's chat template, stop at
    its end-of-turn (eos) token."""
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    eos = cfg.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    tpl_file = model_dir / "chat_template.jinja"
    template = tpl_file.read_text() if tpl_file.is_file() else cfg.get("chat_template")
    lines = [f"FROM ./{gguf_name}"]
    if template and eos:
        body = ollama_template(template, eos)
        lines.append(f'TEMPLATE """{body}"""')
    if eos:
        lines.append(f'PARAMETER stop "{eos}"')
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the whole


def quantize_model(
    model_dir: str | Path, out_dir: str | Path, kinds: list[str], name: str, echo: Echo = print
) -> dict:
    """Every requested GGUF of `model_dir` in `out_dir`, each loaded by llama.cpp and
    generating, with the Modelfile (for the last kind) and quantize.json."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").is_file():
        raise QuantizeError(f"{model_dir}: no model (config.json) to quantize")
    llama_cpp()  # the `gguf` extra, before anything is printed or written
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    f16 = out_dir / f"{name}-f16.gguf"
    echo(f"convert {model_dir} -> {f16.name}")
    repairs = convert(model_dir, f16, "f16", echo)
    files: dict[str, dict] = {}
    for kind in kinds:
        path = f16 if kind == "f16" else out_dir / f"{name}-{kind}.gguf"
        if kind != "f16":
            if kind == "bf16":
                convert(model_dir, path, "bf16", echo)
            else:
                echo(f"quantize {f16.name} -> {path.name}")
                quantize_file(f16, path, kind)
        files[kind] = {"file": path.name, "bytes": path.stat().st_size, "smoke": smoke(path)}
    if "f16" not in kinds:
        f16.unlink()
    last = files[kinds[-1]]["file"]
    (out_dir / "Modelfile").write_text(modelfile(last, model_dir))
    info = {
        "model": str(model_dir),
        "llama_cpp_python": llama_cpp().__version__,
        "repairs": repairs,
        "files": files,
        "modelfile": "Modelfile",
        "seconds": round(time.time() - t0, 1),
    }
    (out_dir / "quantize.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
