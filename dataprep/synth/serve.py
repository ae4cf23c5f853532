"""A local OpenAI-compatible server process: start, wait until healthy, stop.

`transformers_serve(model_dir)` serves a local model folder with `transformers serve`
(the `serve` extra) on 127.0.0.1, so the model-driven data commands (`--serve MODEL_DIR`)
and the tests can talk to a real server without any network. `LocalServer` runs any
such command.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from cosmosage.dataprep.env import child_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """A server process on 127.0.0.1 with a health URL; output goes to `log_path`."""

    def __init__(
        self,
        argv: list[str],
        port: int,
        health_path: str,
        model: str,
        log_path: Path,
        env: dict | None = None,
    ):
        self.argv, self.port, self.model, self.log_path = argv, port, model, Path(log_path)
        self.health_url = f"http://127.0.0.1:{port}{health_path}"
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> LocalServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        return self

    def wait(self, timeout: float = 180) -> LocalServer:
        """Block until the health URL answers; a dead process raises with its log tail."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"server exited with {self.proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(self.health_url, timeout=2):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no answer from {self.health_url} in {timeout:.0f} s (log: {self.log_path})"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> LocalServer:
        # SIGTERM (`timeout`, a batch scheduler) ends the block like Ctrl-C does, so the
        # server is stopped instead of left running on its own
        self._term = None
        if threading.current_thread() is threading.main_thread():
            self._term = signal.signal(signal.SIGTERM, _exit_on_term)
        self.start()
        try:
            return self.wait()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            if self._term is not None:
                signal.signal(signal.SIGTERM, self._term)
                self._term = None


def _exit_on_term(signum, frame) -> None:
    raise SystemExit(128 + signum)


KV_BLOCK_TOKENS = 256  # transformers' default block size for continuous batching
KV_CACHE_GIB = 2.0  # the KV cache a CPU server keeps (COSMOSAGE_SERVE_KV_GIB to change)
# and at most this many tokens (8 requests of 8,192): a tiny model's 2 GiB would be
# millions of tokens, and transformers' bookkeeping per block then took 18 GB
KV_MAX_TOKENS = 65_536
BATCH_TOKENS = 2048  # tokens one forward pass of a CPU server takes at most


def kv_cache_blocks(model_dir: str | Path, gib: float, block_tokens: int = KV_BLOCK_TOKENS) -> int:
    """How many KV-cache blocks of `block_tokens` fit in `gib` for the model's config,
    counted at 4 bytes a value (float32, the CPU's dtype; fewer bytes only shrink it),
    and at most KV_MAX_TOKENS tokens' worth.

    On the CPU, `transformers serve --continuous-batching` sizes its cache from the
    machine's whole memory (80-90% of it, less its own size, whatever else runs), so a
    135M model's server held 10 GB; a fixed number of blocks keeps it to `gib`."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    kv_heads = cfg.get("num_key_value_heads") or heads
    per_block = 2 * cfg["num_hidden_layers"] * block_tokens * head_dim * kv_heads * 4
    return max(1, min(int(gib * 2**30 // per_block), KV_MAX_TOKENS // block_tokens))


def transformers_serve(
    model_dir: str | Path,
    cache_dir: str | Path,
    port: int | None = None,
    continuous_batching: bool = False,
) -> LocalServer:
    """`transformers serve` for a local model folder on the CPU (or the GPU it finds).

    `cache_dir` becomes HF_HUB_CACHE: the server's /v1/models needs an existing folder.
    """
    port = port or free_port()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).parent / "transformers"
    argv = [
        str(exe) if exe.exists() else "transformers",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    device = os.environ.get("COSMOSAGE_SERVE_DEVICE", "cpu")
    argv += ["--device", device]
    if continuous_batching:
        argv += ["--continuous-batching"]
        if device == "cpu":
            gib = float(os.environ.get("COSMOSAGE_SERVE_KV_GIB", KV_CACHE_GIB))
            argv += ["--cb-num-blocks", str(kv_cache_blocks(model_dir, gib))]
            argv += ["--cb-max-batch-tokens", str(BATCH_TOKENS)]
    argv.append(str(model_dir))
    env = child_env(local=True, HF_HUB_CACHE=str(cache_dir))
    return LocalServer(argv, port, "/health", str(model_dir), cache_dir / "serve.log", env)
