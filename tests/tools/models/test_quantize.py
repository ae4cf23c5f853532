"""GGUF files through llama.cpp's own converter and quantizer (the `gguf` extra): each
file loads and generates; the Ollama Modelfile carries the chat template and stop token."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cosmosage.tools.models import quantize

ROOT = Path(__file__).resolve().parents[3]

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_a_chat_template_becomes_an_ollama_template():
    assert quantize.ollama_template(CHATML, "<|im_end|>") == (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n<|im_start|>user\n"
        "{{ else }}<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\n{{ end }}"
        "{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_the_modelfile_names_the_file_template_and_stop(tiny_model):
    text = quantize.modelfile("tiny-q8_0.gguf", tiny_model)
    lines = text.splitlines()
    assert lines[0] == "FROM ./tiny-q8_0.gguf"
    assert lines[1].startswith('TEMPLATE """{{ if .System }}[INST] {{ .System }}')
    assert text.rstrip().endswith('PARAMETER stop "</s>"')


def test_types_are_checked_before_anything_runs():
    assert quantize.parse_types("F16, q8_0,q4_k_m") == ["f16", "q8_0", "q4_K_M"]
    with pytest.raises(quantize.QuantizeError, match="--gguf 'q3': choose from f16"):
        quantize.parse_types("f16,q3")


def test_without_the_extra_or_the_folder_nothing_is_printed_or_written(
    tiny_model, tmp_path, monkeypatch
):
    import sys

    from cosmosage.tools.cli.main import main

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # the `gguf` extra not installed
    out = tmp_path / "gguf"
    res = CliRunner().invoke(
        main, ["model", "quantize", str(tiny_model), "--gguf", "f16,q8_0", "--out", str(out)]
    )
    assert res.exit_code == 1
    assert res.output.splitlines() == [
        "Error: llama-cpp-python is not installed: pip install -e '.[gguf]' (it compiles llama.cpp)"
    ]
    assert not out.exists()
    with pytest.raises(quantize.QuantizeError, match="llama-cpp-python is not installed"):
        quantize.quantize_model(tiny_model, out, ["f16"], "tiny", echo=print)
    assert not out.exists()

    nope = tmp_path / "runs" / "nope"
    res = CliRunner().invoke(
        main, ["model", "quantize", str(nope), "--runs-dir", str(tmp_path / "runs")]
    )
    assert res.exit_code == 1
    assert res.output.splitlines() == [f"Error: {nope}: no such run or folder"]
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def llama_cpp():
    return pytest.importorskip(
        "llama_cpp", reason="the `gguf` extra (llama-cpp-python) is not installed"
    )


@pytest.mark.gguf
def test_the_tiny_model_is_converted_quantized_and_generates(llama_cpp, tiny_model, tmp_path):
    out = tmp_path / "gguf"
    said: list[str] = []
    info = quantize.quantize_model(tiny_model, out, ["q8_0"], "tiny", echo=said.append)

    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "quantize.json", "tiny-q8_0.gguf"]
    assert info["files"]["q8_0"]["smoke"].strip()
    assert (out / "tiny-q8_0.gguf").read_bytes()[:4] == b"GGUF"
    assert said[0] == f"convert {tiny_model} -> tiny-f16.gguf"
    assert (out / "Modelfile").read_text().startswith("FROM ./tiny-q8_0.gguf\n")
    gen = quantize.GgufGenerator(out / "tiny-q8_0.gguf", tiny_model)
    answers = gen.answers([{"prompt": "The universe"}], {"max_new_tokens": 4}, n=2)
    assert len(answers) == 1 and len(answers[0]) == 2


@pytest.mark.gguf
@pytest.mark.real_model
def test_a_model_is_quantized_loaded_generating_and_scored(llama_cpp, smollm2, tmp_path):
    from cosmosage.tools.cli.main import main

    suite = tmp_path / "suite.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "prompts": [
                    {"id": "paris", "prompt": "What is the capital of France?"}
                    | {"expect": ["Paris"], "kind": "general"},
                    {"id": "h2o", "prompt": "What is the chemical formula of water?"}
                    | {"expect": ["H2O"], "kind": "general"},
                ]
            }
        )
    )
    out = tmp_path / "gguf"
    res = CliRunner().invoke(
        main,
        ["model", "quantize", str(smollm2), "--gguf", "f16,q8_0", "--out", str(out)]
        + ["--suite", str(suite)],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    info = json.loads((out / "quantize.json").read_text())
    f16, q8 = (out / info["files"][k]["file"] for k in ("f16", "q8_0"))
    assert f16.name == f"{Path(smollm2).name}-f16.gguf" and f16.read_bytes()[:4] == b"GGUF"
    assert q8.stat().st_size < 0.6 * f16.stat().st_size
    assert all(f["smoke"].strip() for f in info["files"].values())
    # the f16 file answers the everyday questions as the transformers model does
    assert info["eval"]["scores"]["f16"]["general"] == 1.0
    modelfile = (out / "Modelfile").read_text()
    assert (
        modelfile.startswith(f"FROM ./{q8.name}\n") and 'PARAMETER stop "<|im_end|>"' in modelfile
    )


def test_a_byte_level_bpe_marked_byte_fallback_is_repaired_for_the_converter(tmp_path):
    tok = {
        "model": {"type": "BPE", "byte_fallback": True, "vocab": {}, "merges": []},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
        "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}]},
    }
    fixed = quantize.byte_level_repair(tok)
    assert fixed["model"]["byte_fallback"] is False and fixed["decoder"]["type"] == "ByteLevel"
    assert tok["model"]["byte_fallback"] is True, "the model folder's own file is left alone"

    sentencepiece = {**tok, "pre_tokenizer": {"type": "Metaspace"}}
    assert quantize.byte_level_repair(sentencepiece) is None

    model = tmp_path / "model"
    model.mkdir()
    (model / "tokenizer.json").write_text(json.dumps(tok))
    (model / "config.json").write_text("{}")
    view, repairs = quantize.converter_input(model, tmp_path / "view")
    assert view == tmp_path / "view" and len(repairs) == 1
    assert (view / "config.json").resolve() == (model / "config.json").resolve()
    assert json.loads((view / "tokenizer.json").read_text()) == fixed


def test_make_test_gguf_builds_the_pinned_llama_cpp_portable():
    """The gguf extra's pin and the wheel `make test-gguf` builds are one version, and that
    build is not -march=native (which dies with SIGILL where the CPU lists AMX that the
    kernel does not grant), nor a native build that pip's wheel cache kept."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pin = extras["optional-dependencies"]["gguf"][0]
    out = subprocess.run(
        ["make", "-n", "-B", "test-gguf"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    build = out.index("pip wheel")
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in out[out.rindex("\n", 0, build) : build]
    assert "--no-cache-dir" in out[build:] and f"'{pin}'" in out[build:]
    install = out.index("--force-reinstall")
    assert build < install < out.index("-m pytest -m gguf")
