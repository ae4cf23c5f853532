"""bench/gpu_check.py's --set: a config tried on the device without editing recipes."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_set_reaches_every_methods_config(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    args = gpu_check.parse_args(
        ["--device", "cpu", "--set", "torch_compile=true", "--set", "micro_batch_size=8",
         "--set", "fsdp_config.reshard_after_forward=false", "--set", "learning_rate=2e-4"]
    )  # fmt: skip
    cfg = gpu_check.method_config("full", args, tmp_path / "m", tmp_path / "d.jsonl", tmp_path)
    assert cfg["torch_compile"] is True and cfg["micro_batch_size"] == 8
    assert cfg["fsdp_config"] == {"reshard_after_forward": False} and cfg["learning_rate"] == 2e-4
    lora = gpu_check.method_config("lora", args, tmp_path / "m", tmp_path / "d.jsonl", tmp_path)
    assert lora["torch_compile"] is True and lora["adapter"] == "lora"
