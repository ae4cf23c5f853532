"""bench/gpu_check.py: --set (a config tried on the device without editing recipes) and
--docs-per-row (rows of several documents, as packed corpora have)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_set_reaches_every_methods_config(tmp_path):
    gpu_check = load_gpu_check()
    args = gpu_check.parse_args(
        ["--device", "cpu", "--set", "torch_compile=true", "--set", "micro_batch_size=8",
         "--set", "fsdp_config.reshard_after_forward=false", "--set", "learning_rate=2e-4"]
    )  # fmt: skip
    cfg = gpu_check.method_config("full", args, tmp_path / "m", tmp_path / "d.jsonl", tmp_path)
    assert cfg["torch_compile"] is True and cfg["micro_batch_size"] == 8
    assert cfg["fsdp_config"] == {"reshard_after_forward": False} and cfg["learning_rate"] == 2e-4
    lora = gpu_check.method_config("lora", args, tmp_path / "m", tmp_path / "d.jsonl", tmp_path)
    assert lora["torch_compile"] is True and lora["adapter"] == "lora"


def test_gpu_check_runs_as_recipe_run_does(tmp_path):
    """The gc.freeze plugin `recipe run` gives every stage, also when --set replaces the
    plugins (the liger and pure-bf16 candidates); one dataset process on the CPU only."""
    from cosmosage.tools.recipe.check import MASTER_WEIGHTS_PLUGIN
    from cosmosage.tools.run.stage import STAGE_PLUGINS

    gpu_check = load_gpu_check()
    where = (tmp_path / "m", tmp_path / "d.jsonl", tmp_path)
    cpu = gpu_check.method_config("full", gpu_check.parse_args(["--device", "cpu"]), *where)
    assert (
        cpu["plugins"] == [*STAGE_PLUGINS, MASTER_WEIGHTS_PLUGIN] and cpu["dataset_num_proc"] == 1
    )
    cuda = gpu_check.parse_args(["--device", "cuda", "--set", "plugins=[]"])
    cfg = gpu_check.method_config("full", cuda, *where)
    assert cfg["plugins"] == list(STAGE_PLUGINS) and "dataset_num_proc" not in cfg


def load_gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    return gpu_check


def test_documents_fill_their_share_of_a_row_exactly(tmp_path, tiny_model, tiny_tokenizer):
    """--docs-per-row N: N documents of seq_len // N - 2 tokens each (BOS and EOS make up
    the rest), never a token over once the text is tokenized again."""
    import json

    gpu_check = load_gpu_check()
    for seq_len, n in ((128, 1), (128, 4), (2048, 4)):
        out = gpu_check.write_rows(tiny_model, tmp_path / f"{seq_len}-{n}.jsonl", seq_len, 5, n)
        texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
        assert len(texts) == 5 * n
        lengths = [len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        size = seq_len // n - 2
        assert max(lengths) == size and min(lengths) >= size - 2, (seq_len, n, lengths)


def test_too_many_documents_for_a_row_is_refused(capsys):
    import pytest

    gpu_check = load_gpu_check()
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--device", "cpu", "--seq-len", "128", "--docs-per-row", "16"])
    assert "--docs-per-row 16" in capsys.readouterr().err
    assert gpu_check.parse_args(["--device", "cpu", "--docs-per-row", "4"]).docs_per_row == 4
