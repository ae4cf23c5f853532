"""`data corpus` on datatrove's local executor against the single-process path, measured
in one run on the same generated corpus.

    .venv/bin/python bench/corpus_executor.py                 # 8 MB and 32 MB, ~4 minutes on 2 cores
    .venv/bin/python bench/corpus_executor.py --mb 20 --factor 5 --docs-per-task 500

For each of two corpus sizes (the paper-like generator of corpus_bench.py) it runs the
baseline, `data corpus --workers 1` (one process), then `--executor local` with one task
per --docs-per-task documents, 2 at a time. It prints wall time, throughput per core used
(the baseline uses one, the executor --workers), the ratio (target: the executor within
1.5x of the baseline per core, i.e. ratio >= 0.67), the peak memory of the largest shard
task (from datatrove's task stats; target: flat in corpus size, the task size being
fixed) and of the merge (a task of its own, which holds what it needs of the clustered
documents only), and checks that both paths keep the same documents.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.corpus_memory import bench_main, ensure_tokenizer, measure, write_corpus  # noqa: E402


def doc_ids(out: Path) -> set[str]:
    ids = set()
    for path in (out, out.with_name(out.stem + ".val.jsonl")):
        if path.exists():
            ids |= {json.loads(x)["doc_id"] for x in path.read_text().splitlines()}
    return ids


def stage_peak_mb(out: Path, stage: str = "shards") -> float:
    """The largest peak memory a task of `stage` reported (its stats.json)."""
    stats = json.loads(
        out.with_name(out.stem + ".datatrove").joinpath(f"{stage}/stats.json").read_text()
    )
    peaks = [s["stats"]["peak_rss_mb"] for s in stats if "peak_rss_mb" in s["stats"]]
    return max(p.get("max", p.get("mean", 0)) if isinstance(p, dict) else p for p in peaks)


def main() -> None:
    if (ap := bench_main(__doc__)) is None:
        return
    ap.add_argument("--mb", type=float, default=8, help="Smaller corpus, MB (default 8).")
    ap.add_argument("--factor", type=float, default=4, help="Larger corpus = factor x --mb.")
    ap.add_argument("--docs-per-task", type=int, default=150)
    ap.add_argument("--workers", type=int, default=2, help="Executor tasks at once.")
    args = ap.parse_args()
    ensure_tokenizer(args.tokenizer)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cosmosage-exec-") as tmp:
        for k, mb in enumerate((args.mb, args.mb * args.factor)):
            folder = Path(tmp) / f"corpus{k}"
            n_docs, size = write_corpus(folder, mb, seed=k)
            tasks = max(2, round(n_docs / args.docs_per_task))
            one = Path(tmp) / f"one{k}" / "c.jsonl"
            many = Path(tmp) / f"many{k}" / "c.jsonl"
            base = measure(folder, one, args.tokenizer, args.sequence_len, 1, script=__file__)
            ex = measure(folder, many, args.tokenizer, args.sequence_len, args.workers, script=__file__,
                         extra=["--executor", "local", "--tasks", str(tasks)])  # fmt: skip
            per_core = base["cpu"] / ex["cpu"]  # MB per CPU-second, executor / baseline
            same = doc_ids(one) == doc_ids(many)
            task_mb, merge_mb = stage_peak_mb(many), stage_peak_mb(many, "merge")
            rows.append((n_docs, task_mb, merge_mb))
            print(
                f"{size:6.1f} MB, {n_docs:5d} documents, {tasks} tasks: one process {base['wall']:.1f} s "
                f"wall, {base['cpu']:.1f} s CPU ({size / base['wall']:.2f} MB/s, peak "
                f"{base['peak_mb']:.0f} MB); executor {ex['wall']:.1f} s wall, {ex['cpu']:.1f} s CPU "
                f"on {args.workers} at once ({size / ex['wall']:.2f} MB/s, {base['wall'] / ex['wall']:.2f}x "
                f"wall); MB per CPU-second {per_core:.2f}x the baseline's "
                f"(target >= 0.67: {'yes' if per_core >= 0.67 else 'NO'}); "
                f"largest shard task {task_mb:.0f} MB, merge {merge_mb:.0f} MB; "
                f"same documents kept: {'yes' if same else 'NO'}"
            )
    (n0, t0, m0), (n1, t1, m1) = rows
    print(
        f"\ncorpus {n1 / n0:.1f}x larger -> largest shard task {t1 / t0:.2f}x "
        f"(target <= 1.25x: {'yes' if t1 / t0 <= 1.25 else 'NO'}), merge {m1 / m0:.2f}x"
    )


if __name__ == "__main__":
    main()
