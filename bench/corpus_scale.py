"""`data corpus --executor local` at growing corpus sizes on the dedup benchmark's
generator: memory per task, throughput and near-duplicate precision and recall.

    .venv/bin/python bench/corpus_scale.py                       # 10k, 20k, 40k documents, ~10 minutes on 2 cores
    .venv/bin/python bench/corpus_scale.py --docs 50000 100000 200000

Each size is a fresh corpus from bench/dedup_bench.py's generator (paper-like documents of
a few hundred to about 2,000 words, a quarter of them copied as revision chains of
--chain versions, each version from the one before) written as one markdown file per
document. The baseline, today's single-process `data corpus`, runs on the smallest size
in the same run (its throughput per CPU-second is the reference); every size then runs
with `--executor local` and one task per --docs-per-task documents, --workers at once.
Printed per size: wall and CPU time, MB per CPU-second against the baseline's (target >=
0.67), the peak memory of the largest task of each stage (the input plan, shards, bands,
clusters, merge: each task reports its own in datatrove's stats), and precision and recall of the
documents dropped as duplicates (a drop is right when the document it names is of the
same family; recall counts the copies: target P >= 0.99, R >= 0.95). Quality filters are
off (`--no-filter`: the generator's made-up words are not English), so dedup is what drops.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.corpus_executor import stage_peak_mb  # noqa: E402
from bench.corpus_memory import bench_main, ensure_tokenizer, measure  # noqa: E402
from bench.dedup_bench import generate  # noqa: E402

# every stage's tasks report their own peak (each a process of its own but the bands')
STAGES = ("inputs", "shards", "buckets", "clusters", "chunks", "merge")
_NAMED = re.compile(r"(?:near|exact) duplicate: of \S*?doc(\d+)\.md")
_DOC = re.compile(r"doc(\d+)\.md")


def write(folder: Path, texts: list[str]) -> float:
    folder.mkdir(parents=True)
    for i, text in enumerate(texts):
        (folder / f"doc{i:06d}.md").write_text(text)
    return sum(len(t.encode()) for t in texts) / 1e6


def dedup_score(out: Path, family: list[int], copies: int) -> tuple[float, float, int]:
    rejects = out.with_name(out.stem + ".rejects.jsonl")
    flagged = right = 0
    for line in rejects.read_text().splitlines():
        rec = json.loads(line)
        named = _NAMED.match(rec["reason"])
        if not named:
            continue
        flagged += 1
        doc = int(_DOC.search(rec["record"]["doc_id"]).group(1))
        right += family[doc] == family[int(named.group(1))]
    return (right / flagged if flagged else 1.0), min(1.0, right / copies), flagged


def chunks_by_doc(out: Path) -> dict[str, list[str]]:
    """Every chunk's text (train and val) under its document's id, in file order."""
    found: dict[str, list[str]] = {}
    for path in (out, out.with_name(out.stem + ".val.jsonl")):
        if path.exists():
            for line in path.read_text().splitlines():
                rec = json.loads(line)
                found.setdefault(rec["doc_id"], []).append(rec["text"])
    return found


def compare_with_one_process(one: Path, many: Path, family: list[int]) -> str:
    """What the executor kept against the one-process run on the same corpus: the same
    documents, or for each difference whether it is the other member of the same family
    (the first copy in shard order kept instead of the first in input order); and whether
    a document both kept has the same chunks."""
    a, b = chunks_by_doc(one), chunks_by_doc(many)
    fam = {d: family[int(_DOC.search(d).group(1))] for d in a.keys() | b.keys()}
    only_a, only_b = a.keys() - b.keys(), b.keys() - a.keys()
    swapped = {fam[d] for d in only_a} & {fam[d] for d in only_b}
    unexplained = [d for d in only_a | only_b if fam[d] not in swapped]
    same_chunks = sum(a[d] == b[d] for d in a.keys() & b.keys())
    return (
        f"against one process: {len(a)} and {len(b)} documents kept, {len(a.keys() & b.keys())} "
        f"the same; {len(only_a)} differ only in which member of a family is kept (the first "
        f"in shard order, not input order), {len(unexplained)} otherwise; chunks identical for "
        f"{same_chunks} of {len(a.keys() & b.keys())} documents kept by both"
    )


def main() -> None:
    if (ap := bench_main(__doc__, sequence_len=512)) is None:
        return
    ap.add_argument("--docs", type=int, nargs="+", default=[10_000, 20_000, 40_000])
    ap.add_argument("--docs-per-task", type=int, default=5_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chain", type=int, default=2)
    args = ap.parse_args()
    ensure_tokenizer(args.tokenizer)
    base_rate, rows = None, []
    for k, n in enumerate(args.docs):
        with tempfile.TemporaryDirectory(prefix="cosmosage-scale-") as tmp:
            corpus = generate(docs=round(n / (1 + 0.25 * args.chain)), seed=k, chain=args.chain)
            size = write(Path(tmp) / "docs", corpus.texts)
            common = (Path(tmp) / "docs", args.tokenizer, args.sequence_len)
            one = None
            if base_rate is None:
                one = Path(tmp) / "one" / "c.jsonl"
                base = measure(*common[:1], one, *common[1:], 1,
                               script=__file__, extra=["--no-filter"])  # fmt: skip
                base_rate = size / base["cpu"]
                print(f"baseline, one process, {len(corpus.texts)} documents, {size:.0f} MB: "
                      f"{base['wall']:.0f} s wall, {base['cpu']:.0f} s CPU, "
                      f"{base_rate:.2f} MB per CPU-second, peak {base['peak_mb']:.0f} MB")  # fmt: skip
            tasks = max(2, round(len(corpus.texts) / args.docs_per_task))
            out = Path(tmp) / "many" / "c.jsonl"
            ex = measure(*common[:1], out, *common[1:], args.workers, script=__file__,
                         extra=["--no-filter", "--executor", "local", "--tasks", str(tasks)])  # fmt: skip
            p, r, flagged = dedup_score(out, corpus.family, corpus.copies)
            if one is not None:
                print(compare_with_one_process(one, out, corpus.family))
            peaks = {stage: stage_peak_mb(out, stage) for stage in STAGES}
            rows.append((len(corpus.texts), peaks))
            rate = size / ex["cpu"]
            print(
                f"{len(corpus.texts):7d} documents, {size:5.0f} MB, {tasks} shard tasks: "
                f"{ex['wall']:.0f} s wall, {ex['cpu']:.0f} s CPU, {rate:.2f} MB per CPU-second "
                f"({rate / base_rate:.2f}x the baseline's; target >= 0.67); peak of the "
                f"largest task: {', '.join(f'{k} {v:.0f} MB' for k, v in peaks.items())} (the "
                f"command's own process {ex['peak_mb']:.0f} MB); duplicates "
                f"dropped {flagged} of {corpus.copies} copies: P {p:.3f} R {r:.3f}"
            )
    (n0, p0), (n1, p1) = rows[0], rows[-1]
    ratios = {k: p1[k] / p0[k] for k in STAGES}
    print(
        f"\ncorpus {n1 / n0:.1f}x larger -> peak of the largest task: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
        + f"; any task {max(p1.values()) / max(p0.values()):.2f}x (flat: <= 1.25x)"
    )


if __name__ == "__main__":
    main()
