"""The local server's command line: on the CPU, continuous batching gets a fixed KV cache
and batch size instead of transformers' sizing from the whole machine's memory (10 GB
for SmolLM2-135M; bench/serve_memory.py)."""

from __future__ import annotations

import json

from cosmosage.dataprep.synth.serve import (
    BATCH_TOKENS,
    KV_BLOCK_TOKENS,
    KV_MAX_TOKENS,
    kv_cache_blocks,
    transformers_serve,
)

SMOLLM2_CONFIG = {  # the shape that matters: 30 layers, 9 heads of 64, 3 KV heads
    "num_hidden_layers": 30,
    "hidden_size": 576,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
}


def test_kv_cache_blocks_fit_the_budget_for_the_models_shape(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    per_block = 2 * 30 * KV_BLOCK_TOKENS * 64 * 3 * 4  # K and V, float32
    blocks = kv_cache_blocks(tmp_path, 2.0)
    assert blocks == 2 * 2**30 // per_block == 182
    assert blocks * per_block <= 2 * 2**30 < (blocks + 1) * per_block
    nested = {"text_config": {**SMOLLM2_CONFIG, "head_dim": 128}}  # a multimodal config
    (tmp_path / "config.json").write_text(json.dumps(nested))
    assert kv_cache_blocks(tmp_path, 2.0) == 91
    # a tiny model's 2 GiB would be millions of tokens: capped at KV_MAX_TOKENS
    tiny = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4}
    (tmp_path / "config.json").write_text(json.dumps(tiny))
    assert kv_cache_blocks(tmp_path, 2.0) == KV_MAX_TOKENS // KV_BLOCK_TOKENS == 256


def test_cpu_continuous_batching_asks_for_the_fixed_cache(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    monkeypatch.delenv("COSMOSAGE_SERVE_DEVICE", raising=False)
    monkeypatch.setenv("COSMOSAGE_SERVE_KV_GIB", "1")
    argv = transformers_serve(tmp_path, tmp_path / "cache", continuous_batching=True).argv
    assert argv[argv.index("--cb-num-blocks") + 1] == str(kv_cache_blocks(tmp_path, 1.0))
    assert argv[argv.index("--cb-max-batch-tokens") + 1] == str(BATCH_TOKENS)
    plain = transformers_serve(tmp_path, tmp_path / "cache").argv
    assert "--continuous-batching" not in plain and "--cb-num-blocks" not in plain
    monkeypatch.setenv("COSMOSAGE_SERVE_DEVICE", "cuda")  # a GPU sizes its own cache
    gpu = transformers_serve(tmp_path, tmp_path / "cache", continuous_batching=True).argv
    assert "--continuous-batching" in gpu and "--cb-num-blocks" not in gpu


def test_sigterm_stops_the_server_a_with_block_started(tmp_path):
    """`timeout` or a scheduler sends SIGTERM to the command only: the server it started
    must not be left running."""
    import signal
    import subprocess
    import sys
    import time

    pidfile = tmp_path / "server.pid"
    code = (
        "import sys, time\n"
        "from cosmosage.dataprep.synth.serve import LocalServer, free_port\n"
        "port = free_port()\n"
        "argv = [sys.executable, '-m', 'tests.helpers.scripted_server', '--port', str(port)]\n"
        f"with LocalServer(argv, port, '/v1/models', 'm', {str(tmp_path / 'log')!r}) as s:\n"
        f"    open({str(pidfile)!r}, 'w').write(str(s.proc.pid))\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    server = int(pidfile.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.5)
    gone = subprocess.run(["ps", "-o", "stat=", "-p", str(server)], capture_output=True, text=True)
    assert gone.stdout.strip() in ("", "Z"), f"server {server} still running"
