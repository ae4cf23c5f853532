"""A local OpenAI-compatible server process: start, wait until healthy, stop.

`transformers_serve(model_dir)` serves a local model folder with `transformers serve`
(the `serve` extra) on 127.0.0.1, so the model-driven data commands (`--serve MODEL_DIR`)
and the tests can talk to a real server without any network. `LocalServer` runs any
such command.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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
        self.start()
        try:
            return self.wait()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


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
    argv += ["--device", os.environ.get("COSMOSAGE_SERVE_DEVICE", "cpu")]
    argv += ["--continuous-batching"] if continuous_batching else []
    argv.append(str(model_dir))
    env = child_env(local=True, HF_HUB_CACHE=str(cache_dir))
    return LocalServer(argv, port, "/health", str(model_dir), cache_dir / "serve.log", env)
