"""Peak memory of the corpus pipeline against corpus size, measured in one run.

    .venv/bin/python bench/corpus_memory.py              # 16 MB and 64 MB, ~2 minutes on 2 cores
    .venv/bin/python bench/corpus_memory.py --mb 50 --factor 6

Writes a generated paper-like corpus (one markdown file per document, the same generator
as corpus_bench.py) at two sizes, runs `cosmosage data corpus` on each in its own
process (clean, filter, dedup, chunk, decontaminate, write), and prints each run's peak
resident memory (the process and, with --workers, its largest worker) beside the smaller
run's: the baseline. Target: flat in corpus size, i.e. the larger corpus needs at most
1.25x the memory of the smaller one. What does grow, by design, is the dedup index: one
hash and one signature per kept document (about 1 KB each).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bench_main(doc: str, sequence_len: int = 128) -> argparse.ArgumentParser | None:
    """The start of a corpus bench's main: None when this process is the measured child
    (`--child ARGV...`: the CLI has run and reported), else the bench's argument parser
    with the options every corpus bench has (--tokenizer, --sequence-len)."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return None
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tokenizer", default=str(ROOT / "build/models/tiny-llama"))
    ap.add_argument("--sequence-len", type=int, default=sequence_len)
    return ap


def ensure_tokenizer(path: str) -> None:
    """The tiny tokenizer the corpus benches measure with, built from samples/ if absent."""
    if not Path(path).exists():
        from cosmosage.tools.models.tiny import build_tiny_model

        build_tiny_model([str(ROOT / "samples")], path)


def child(argv: list[str]) -> None:
    """Run the CLI in this process, then report peak memory on the last line."""
    from cosmosage.tools.cli.main import main

    code = 0
    try:
        main(argv, standalone_mode=False)
    except SystemExit as e:  # click exits on errors even without standalone mode
        code = int(e.code or 0)
    from cosmosage.dataprep.env import peak_memory_mb

    own = peak_memory_mb()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"peak_mb": own, "worker_peak_mb": kids, "code": code}))


def write_corpus(folder: Path, mb: float, seed: int) -> tuple[int, float]:
    from bench.corpus_bench import generate, mbytes

    docs = generate(mb, seed=seed)
    folder.mkdir(parents=True)
    for i, text in enumerate(docs):
        (folder / f"paper{i:06d}.md").write_text(text)
    return len(docs), mbytes(docs)


def measure(
    folder: Path,
    out: Path,
    tokenizer: str,
    seq: int,
    workers: int,
    script: str = __file__,
    extra: tuple[str, ...] | list[str] = (),
) -> dict:
    """`data corpus` in a child process (`script --child ...`): peak memory, wall time,
    CPU time (the child and every process it waited for), records and the manifest."""
    argv = [
        "data",
        "corpus",
        str(folder),
        "--tokenizer",
        tokenizer,
        "--sequence-len",
        str(seq),
        "--out",
        str(out),
        "--workers",
        str(workers),
        *extra,
    ]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", "HF_HUB_OFFLINE": "1"}
    t0, used0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, script, "--child", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    wall, used = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = used.ru_utime + used.ru_stime - used0.ru_utime - used0.ru_stime
    if proc.returncode != 0:
        sys.exit(f"pipeline run failed:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if report["code"]:
        sys.exit(f"pipeline run failed (exit {report['code']}):\n{proc.stderr[-3000:]}")
    from cosmosage.dataprep.io import manifest_path

    manifest = json.loads(manifest_path(out).read_text())
    return {**report, "wall": wall, "cpu": cpu, "records": manifest["kept"], "manifest": manifest}


def main() -> None:
    if (ap := bench_main(__doc__)) is None:
        return
    ap.add_argument("--mb", type=float, default=16, help="Smaller corpus, MB (default 16).")
    ap.add_argument("--factor", type=float, default=4, help="Larger corpus = factor x --mb.")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    ensure_tokenizer(args.tokenizer)

    rows = []
    with tempfile.TemporaryDirectory(prefix="cosmosage-mem-") as tmp:
        for k, mb in enumerate((args.mb, args.mb * args.factor)):
            folder = Path(tmp) / f"corpus{k}"
            n_docs, size = write_corpus(folder, mb, seed=k)
            res = measure(
                folder, Path(tmp) / f"out{k}.jsonl", args.tokenizer, args.sequence_len, args.workers
            )
            rows.append((n_docs, size, res))
            print(
                f"{size:7.1f} MB, {n_docs:6d} documents: peak {res['peak_mb']:.0f} MB "
                f"(largest worker {res['worker_peak_mb']:.0f} MB), {res['records']} records, "
                f"{res['wall']:.1f} s ({size / res['wall']:.2f} MB/s)"
            )
    (_, s0, r0), (_, s1, r1) = rows
    ratio = r1["peak_mb"] / r0["peak_mb"]
    wratio = r1["worker_peak_mb"] / r0["worker_peak_mb"] if r0["worker_peak_mb"] else 1.0
    ok = ratio <= 1.25 and wratio <= 1.25
    print(
        f"\ncorpus {s1 / s0:.1f}x larger -> peak memory {ratio:.2f}x "
        f"(workers {wratio:.2f}x); target <= 1.25x: {'yes' if ok else 'NO'}"
    )


if __name__ == "__main__":
    main()
