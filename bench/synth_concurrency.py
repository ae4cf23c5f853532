"""Requests per second of the synthetic-Q&A client at concurrency 1, 4 and 16.

It starts local OpenAI-compatible servers one after the other (by default serve and
scripted; add serve-cb with --modes serve,serve-cb,scripted) and
sends the same number of identical chat requests at each concurrency level, through
the same code path `cosmosage data synth` uses (`cosmosage.dataprep.synth.llm.complete` + `run_pool`):

  serve      `transformers serve` on the tiny model, CPU, default settings
  serve-cb   the same with --continuous-batching (requests batched together)
  scripted   tests/helpers/scripted_server.py answering after a fixed delay: a server that always
             keeps up, so what is measured is the client's own concurrency

Throughput is printed as a ratio to concurrency 1. When throughput stays flat while
latency grows with concurrency, the server is the limit, and the table says so.

    .venv/bin/python bench/synth_concurrency.py                 # about 1-1.5 minutes
    .venv/bin/python bench/synth_concurrency.py --modes serve-cb --levels 1,2,4,8,16
    .venv/bin/python bench/synth_concurrency.py --base-url http://127.0.0.1:8000/v1 --model NAME
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosmosage.dataprep.synth.llm import (  # noqa: E402
    Endpoint,
    RetryPolicy,
    Usage,
    complete,
    make_client,
    run_pool,
)
from cosmosage.dataprep.synth.serve import LocalServer, free_port, transformers_serve  # noqa: E402

BIN = Path(sys.executable).parent
PROMPT = [
    {
        "role": "user",
        "content": "Explain in two sentences why the sound horizon is a standard ruler.",
    }
]


def start_server(mode: str, model_dir: Path, cache: Path, scripted_latency: float) -> LocalServer:
    """A started, healthy server for `mode`; the caller stops it."""
    if mode == "scripted":
        port = free_port()
        argv = [sys.executable, "-m", "tests.helpers.scripted_server", "--port", str(port)]
        argv += ["--latency", str(scripted_latency)]
        server = LocalServer(argv, port, "/v1/models", "scripted", cache / "scripted.log")
    else:
        server = transformers_serve(model_dir, cache, continuous_batching=mode == "serve-cb")
    server.start()
    try:
        return server.wait()
    except BaseException:
        server.stop()
        raise


async def measure(endpoint: Endpoint, n: int, concurrency: int, max_tokens: int) -> dict:
    client = make_client(endpoint)
    usage = Usage()
    latencies: list[float] = []
    sampling = {"max_tokens": max_tokens, "temperature": 0.0}

    async def one(_):
        t = time.perf_counter()
        await complete(client, endpoint, PROMPT, sampling, RetryPolicy(retries=2, base=0.2), usage)
        return time.perf_counter() - t

    try:
        t0 = time.perf_counter()
        await run_pool(range(n), one, lambda _, dt: latencies.append(dt), concurrency)
        wall = time.perf_counter() - t0
    finally:
        await client.close()
    return {
        "concurrency": concurrency,
        "rps": n / wall,
        "latency": sum(latencies) / len(latencies),
        "tok_s": usage.completion_tokens / wall,
        "failed": usage.failed,
    }


def run_levels(endpoint: Endpoint, levels: list[int], n: int, max_tokens: int) -> list[dict]:
    asyncio.run(
        measure(endpoint, max(levels), max(levels), max_tokens)
    )  # warm up (and fill batches once)
    return [asyncio.run(measure(endpoint, n, c, max_tokens)) for c in levels]


def client_ceiling(model_dir: Path, cache: Path, args) -> float:
    """Requests per second when the server costs nothing: the client's own limit here."""
    server = start_server("scripted", model_dir, cache, 0.0)
    url, model = server.base_url, server.model
    try:
        top = max(int(x) for x in args.levels.split(","))
        asyncio.run(measure(Endpoint(url, model), top, top, args.max_tokens))
        return asyncio.run(measure(Endpoint(url, model), args.requests * 2, top, args.max_tokens))[
            "rps"
        ]
    finally:
        server.stop()


def verdict(rows: list[dict]) -> str:
    base, top = rows[0], rows[-1]
    ratio = top["rps"] / base["rps"]
    growth = top["latency"] / base["latency"]
    if ratio >= 0.5 * top["concurrency"]:
        return f"scales: {ratio:.1f}x at concurrency {top['concurrency']} (latency x{growth:.1f})"
    if ratio < 1.5:
        return f"server-limited: throughput x{ratio:.1f} while each request waits x{growth:.1f} longer; the server answers one request at a time"
    return f"partly server-limited: {ratio:.1f}x at concurrency {top['concurrency']} while each request waits x{growth:.1f} longer"


def table(name: str, rows: list[dict]) -> list[str]:
    base = rows[0]["rps"]
    out = [
        f"{name}",
        f"  {'conc':>4}  {'req/s':>7}  {'x c=1':>6}  {'latency':>8}  {'tok/s':>7}  failed",
    ]
    for r in rows:
        out.append(
            f"  {r['concurrency']:>4}  {r['rps']:>7.2f}  {r['rps'] / base:>6.2f}  {r['latency']:>7.2f}s  {r['tok_s']:>7.1f}  {r['failed']}"
        )
    out.append(f"  -> {verdict(rows)}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--base-url", help="Measure this server only (no local servers are started).")
    ap.add_argument("--model", help="Model name for --base-url.")
    ap.add_argument("--api-key-env", default="OPENAI_API_KEY")
    ap.add_argument(
        "--modes",
        default="serve,scripted",
        help="Local servers to measure, from serve, serve-cb, scripted.",
    )
    ap.add_argument("--model-dir", default=str(ROOT / "build" / "models" / "tiny-llama"))
    ap.add_argument(
        "--requests",
        type=int,
        default=32,
        help="Requests per concurrency level (the same at each level).",
    )
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument(
        "--scripted-latency",
        type=float,
        default=1.0,
        help="Seconds the stand-in server takes per answer (like a large model's generation time).",
    )
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    lines = [
        f"# {args.requests} requests per level, max_tokens {args.max_tokens}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
    ]
    t0 = time.monotonic()
    if args.base_url:
        if not args.model:
            ap.error("--model is needed with --base-url")
        rows = run_levels(
            Endpoint(args.base_url, args.model, args.api_key_env, 300),
            levels,
            args.requests,
            args.max_tokens,
        )
        lines += table(args.base_url, rows)
    else:
        model_dir = Path(args.model_dir)
        if not (model_dir / "config.json").is_file():
            from cosmosage.tools.models.tiny import build_tiny_model

            build_tiny_model([str(ROOT / "samples")], model_dir)
        names = {
            "serve": "transformers serve, tiny model, CPU",
            "serve-cb": "transformers serve --continuous-batching, tiny model, CPU",
            "scripted": f"stand-in server answering in {args.scripted_latency:g} s (tests/helpers/scripted_server.py)",
        }
        with tempfile.TemporaryDirectory() as cache:
            for mode in args.modes.split(","):
                server = start_server(mode, model_dir, Path(cache), args.scripted_latency)
                try:
                    rows = run_levels(
                        Endpoint(server.base_url, server.model, timeout=300),
                        levels,
                        args.requests,
                        args.max_tokens,
                    )
                finally:
                    server.stop()
                lines += table(names[mode], rows)
                if mode == "scripted":
                    lines.append(
                        f"  client ceiling on this machine: {client_ceiling(model_dir, Path(cache), args):.1f} req/s (stand-in answering at once, concurrency {max(levels)})"
                    )
                print("\n".join(lines[-len(rows) - 4 :]), flush=True)
    lines.append(f"# {time.monotonic() - t0:.0f} s in all")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
