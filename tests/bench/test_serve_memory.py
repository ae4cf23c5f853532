"""bench/serve_memory.py: its baseline is the same server without the fixed cache, and it
runs end to end on the tiny model."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("sm", ROOT / "bench" / "serve_memory.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_baseline_is_the_same_server_without_the_fixed_cache(tiny_model, tmp_path):
    from cosmosage.dataprep.synth.serve import transformers_serve

    bench = load_bench()
    fixed = transformers_serve(tiny_model, tmp_path, continuous_batching=True)
    base = bench.transformers_sizing(fixed)
    assert "--cb-num-blocks" in fixed.argv and "--cb-max-batch-tokens" in fixed.argv
    assert base.argv == [a for i, a in enumerate(fixed.argv) if not _fixed_arg(fixed.argv, i)]
    assert base.port == fixed.port and "--continuous-batching" in base.argv


def _fixed_arg(argv: list[str], i: int) -> bool:
    flags = ("--cb-num-blocks", "--cb-max-batch-tokens")
    return argv[i] in flags or (i > 0 and argv[i - 1] in flags)


@pytest.mark.server
def test_bench_runs_both_forms_and_prints_the_ratios(tiny_model):
    args = ["--model-dir", str(tiny_model), "--requests", "2", "--concurrency", "2"]
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "serve_memory.py"), *args, "--max-tokens", "4"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    out = run.stdout
    assert "transformers' sizing (baseline)" in out and "fixed cache (--serve)" in out
    assert out.count("failed 0") == 2
    assert "x the baseline; throughput" in out.splitlines()[-1]
