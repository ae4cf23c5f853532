"""Memory of the local server `--serve MODEL_DIR` starts, with transformers' own KV-cache
sizing against the fixed cache `cosmosage.dataprep.synth.serve.transformers_serve` asks
for, in one run.

On the CPU, `transformers serve --continuous-batching` sizes its paged KV cache from the
machine's whole memory (80-90% of it, less its own size, whatever else is running).
`transformers_serve` passes `--cb-num-blocks` for a cache of `COSMOSAGE_SERVE_KV_GIB`
(default 2 GiB) instead. For each form this starts the server on the model, sends the
same concurrent chat requests through the client `data synth` uses, samples the server's
resident memory every 0.1 s and prints its peak and throughput, then the ratios.

    .venv/bin/python bench/serve_memory.py          # SmolLM2 from `make recipe NAME=quickstart`
    .venv/bin/python bench/serve_memory.py --model-dir build/models/tiny-llama --requests 32
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosmosage.dataprep.synth.llm import Endpoint  # noqa: E402
from cosmosage.dataprep.synth.serve import LocalServer, transformers_serve  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from synth_concurrency import measure  # noqa: E402


def transformers_sizing(server: LocalServer) -> LocalServer:
    """The same server without the fixed cache: transformers sizes it from the machine."""
    argv = list(server.argv)
    for flag in ("--cb-num-blocks", "--cb-max-batch-tokens"):
        if flag in argv:
            i = argv.index(flag)
            del argv[i : i + 2]
    return LocalServer(argv, server.port, "/health", server.model, server.log_path, server.env)


class PeakRSS:
    """The largest resident memory of a process and its children, sampled every 0.1 s."""

    def __init__(self, pid: int):
        self.proc, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            time.sleep(0.1)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def one_form(name: str, server: LocalServer, args) -> dict:
    server.start()
    try:
        with PeakRSS(server.proc.pid) as rss:
            server.wait(timeout=300)
            endpoint = Endpoint(server.base_url, server.model)
            ready = rss.peak
            row = asyncio.run(measure(endpoint, args.requests, args.concurrency, args.max_tokens))
    finally:
        server.stop()
    return {"form": name, "ready_gb": ready / 1e9, "peak_gb": rss.peak / 1e9, **row}


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--model-dir", default=str(ROOT / "build/models/smollm2-135m-instruct"))
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    model = Path(args.model_dir)
    if not (model / "config.json").is_file():
        sys.exit(f"{model}: no model folder (run `make recipe NAME=quickstart` to import it)")
    total = psutil.virtual_memory().total / 1e9
    print(
        f"{model.name}: {args.requests} requests, {args.concurrency} at once, "
        f"{args.max_tokens} new tokens each; this machine has {total:.1f} GB"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="serve-memory-") as tmp:
        fixed = transformers_serve(model, Path(tmp) / "hf", continuous_batching=True)
        forms = [("transformers' sizing (baseline)", transformers_sizing(fixed)),
                 ("fixed cache (--serve)", fixed)]  # fmt: skip
        for name, server in forms:
            rows.append(one_form(name, server, args))
            r = rows[-1]
            print(f"  {name:<32} ready {r['ready_gb']:5.2f} GB  peak {r['peak_gb']:5.2f} GB  "
                  f"{r['rps']:.2f} req/s  {r['tok_s']:.1f} tok/s  failed {r['failed']}")  # fmt: skip
    base, new = rows
    print(f"peak memory {new['peak_gb'] / base['peak_gb']:.2f}x the baseline; "
          f"throughput {new['rps'] / base['rps']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
