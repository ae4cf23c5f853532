"""`data corpus --executor local|slurm|ray`: datatrove runs the shards, its exact and
MinHash stages and the merge; the outputs equal `--shard i/N` runs joined by
`merge-shards`, a revision chain or exact copies over shards keep one version, a rerun
after a stop runs only the unfinished tasks, the Slurm jobs (submitted to a stand-in
sbatch, then run here as Slurm would run them) and a Ray instance started here write the
same corpus."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.dataprep.corpus.test_pipeline import cli, lines

OUTPUTS = ("c.jsonl", "c.val.jsonl", "c.rejects.jsonl", "c.docs.jsonl")


def corpus(folder: Path, tiny_model: Path, source: Path, *extra: str) -> list[str]:
    return [
        "corpus",
        str(source),
        "--tokenizer",
        str(tiny_model),
        "--sequence-len",
        "64",
        "--val-fraction",
        "0.3",
        "--out",
        str(folder / "c.jsonl"),
        "--val-out",
        str(folder / "c.val.jsonl"),
        *extra,
    ]


def written(folder: Path) -> dict[str, object]:
    """Every output's bytes, and the manifests without the command line (the folder
    name read as DIR)."""
    got = {n: (folder / n).read_text().replace(str(folder), "DIR") for n in OUTPUTS}
    for n in ("c.manifest.json", "c.val.manifest.json"):
        m = json.loads((folder / n).read_text().replace(str(folder), "DIR"))
        m.pop("command")
        got[n] = m
    return got


def by_hand(tmp_path: Path, tiny_model: Path, source: Path, n: int, *extra: str) -> dict:
    folder = tmp_path / "by-hand"
    for i in range(n):
        cli(*corpus(folder, tiny_model, source, "--shard", f"{i}/{n}", *extra))
    cli("merge-shards", "--out", str(folder / "c.jsonl"), "--val-out", str(folder / "c.val.jsonl"))
    return written(folder)


def test_the_local_executor_writes_what_shards_and_merge_write(tmp_path, tiny_model, corpus_dir):
    folder = tmp_path / "executor"
    # parts an earlier run of another shard count left under the same name are not joined
    folder.mkdir()
    for name in ("c.shard-00000-of-00016.jsonl", "c.val.shard-00000-of-00016.jsonl"):
        (folder / name).write_text('{"text": "an old part", "doc_id": "old", "chunk": 0}\n')
    res = cli(*corpus(folder, tiny_model, corpus_dir, "--executor", "local", "--tasks", "3",
                      "--workers", "2"))  # fmt: skip
    assert "an old part" not in (folder / "c.jsonl").read_text()
    assert (folder / "c.datatrove" / "shards" / "completions" / "00002").exists()
    assert (folder / "c.datatrove" / "merge" / "completions" / "00000").exists()
    assert written(folder) == by_hand(tmp_path, tiny_model, corpus_dir, 3)
    # the near copy is in another shard than its original: datatrove's stages found it
    across = [r for r in lines(folder / "c.rejects.jsonl") if "(across shards)" in r["reason"]]
    pair = {"docs/doc05.md", "docs/dup_near.md"}
    assert [
        r for r in across if r["reason"].startswith("near duplicate: of docs/") and
        {r["record"]["doc_id"], r["reason"].split()[3]} == pair
    ], across  # fmt: skip
    assert list((folder / "c.datatrove" / "minhash" / "clusters").glob("*.clusters"))
    assert res["records"] == len((folder / "c.jsonl").read_text().splitlines()) > 0
    assert res["dropped"]  # the duplicates, the German and the short document


def test_a_local_run_shows_its_stages_not_datatroves_task_logs(tmp_path, tiny_model, corpus_dir):
    """The terminal gets a line per stage (and the tasks' count); datatrove's pipeline
    listings and statistics stay in the task logs under OUT.datatrove/."""
    folder = tmp_path / "executor"
    args = ["data", *corpus(folder, tiny_model, corpus_dir, "--executor", "local", "--tasks", "2")]
    run = subprocess.run([sys.executable, "-m", "cosmosage.tools.cli.main", *args],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    for stage in ("shards", "buckets", "clusters", "chunks", "merge"):
        assert re.search(rf"^stage {stage}: \d+ task\(s\) done at [\d.]+ s$", run.stderr, re.M), (
            run.stderr
        )
    assert "PIPELINE" not in run.stderr and "Stats:" not in run.stderr
    assert "Initializing pq" not in run.stderr and "Remember to also set" not in run.stderr
    assert len(run.stderr.splitlines()) < 60, run.stderr
    assert "PIPELINE" in (folder / "c.datatrove/shards/logs/task_00000.log").read_text()


def test_a_copy_dropped_across_shards_is_never_tokenized(tmp_path, tiny_model, corpus_dir):
    """Each shard's second pass tokenizes only what the cross-shard verdicts leave: the
    near copy of doc05, in another shard, has no chunk in any shard's output, and an
    evaluation passage leaked into both is reported once, for the version kept.
    `merge-shards` joins shards that tokenized every document, so it also reports the
    copy's leaked chunks before dropping the copy: that is the one difference, and the
    corpus, its sidecar and every other reject are the same."""
    pair = {"docs/doc05.md", "docs/dup_near.md"}
    prompts = tmp_path / "eval.jsonl"
    leaked = " ".join((corpus_dir / "doc05.md").read_text().split()[60:100])
    prompts.write_text(json.dumps({"prompt": leaked}) + "\n")
    extra = ("--decontaminate", str(prompts))
    folder = tmp_path / "executor"
    cli(*corpus(folder, tiny_model, corpus_dir, "--executor", "local", "--tasks", "3", *extra))
    got = written(folder)
    rejects = lines(folder / "c.rejects.jsonl")
    (copy,) = [r["record"]["doc_id"] for r in rejects
               if "(across shards)" in r["reason"] and r["record"]["doc_id"] in pair]  # fmt: skip
    shard_chunks = [r for f in folder.glob("c*.shard-*-of-00003.jsonl") for r in lines(f)]
    assert shard_chunks and copy not in {r["doc_id"] for r in shard_chunks}
    overlap = [r["record"]["doc_id"] for r in rejects if r["reason"].startswith("eval overlap")]
    assert overlap and set(overlap) == pair - {copy}, overlap

    hand = by_hand(tmp_path, tiny_model, corpus_dir, 3, *extra)
    hand_rejects = [json.loads(x) for x in hand["c.rejects.jsonl"].splitlines()]
    copy_leaks = [r for r in hand_rejects
                  if r["reason"].startswith("eval overlap") and r["record"]["doc_id"] == copy]  # fmt: skip
    assert copy_leaks
    assert [r for r in hand_rejects if r not in copy_leaks] == rejects
    for name in ("c.jsonl", "c.val.jsonl", "c.docs.jsonl"):
        assert got[name] == hand[name], name
    dropped, hand_dropped = got["c.manifest.json"]["dropped"], hand["c.manifest.json"]["dropped"]
    assert hand_dropped.pop("eval overlap") - dropped.pop("eval overlap") == len(copy_leaks)
    assert dropped == hand_dropped


def test_a_rerun_runs_only_the_tasks_that_did_not_finish(tmp_path, tiny_model, corpus_dir):
    """Shard 1's second pass stops before its outputs are written (a folder stands where
    its document sidecar goes), as a kill would stop it: the command fails and nothing is
    merged; the same command run again runs only the tasks without a completion marker
    and writes what a run that never stopped writes."""
    folder = tmp_path / "executor"
    args = corpus(folder, tiny_model, corpus_dir, "--executor", "local", "--tasks", "3")
    blocker = folder / "c.shard-00001-of-00003.docs.jsonl"
    blocker.mkdir(parents=True)
    dead = folder / ".c.shard-00001-of-00003.jsonl.killed.tmp"
    dead.write_text('{"text": "half')
    os.utime(dead, (1, 1))
    from cosmosage.tools.cli.main import main

    res = CliRunner().invoke(main, ["data", *args])
    assert res.exit_code != 0 and "task 1 stopped" in res.output, res.output
    # the task's own error is in the command's, not only in its log
    assert "Is a directory" in res.output.split("task 1 stopped", 1)[1], res.output
    logs = folder / "c.datatrove"
    assert (logs / "chunks" / "completions" / "00000").exists()
    assert not (logs / "chunks" / "completions" / "00001").exists()
    assert not (folder / "c.jsonl").exists() and not (logs / "merge" / "completions").exists()
    kept = [folder / "c.shard-00000-of-00003.jsonl", logs / "prepared" / "00001.docs.jsonl"]
    stamps = [f.stat().st_mtime_ns for f in kept]
    blocker.rmdir()
    cli(*args)
    assert [f.stat().st_mtime_ns for f in kept] == stamps, "a finished task is not run again"
    assert (folder / "c.shard-00001-of-00003.jsonl").exists() and not dead.exists()
    assert not list((logs / "prepared").glob("*.text.pkl")), "the merge removes the texts"
    assert written(folder) == by_hand(tmp_path, tiny_model, corpus_dir, 3)


STEP = """import os


def record(data, rank, world_size, folder):
    if rank == 1 and os.environ.get("FAIL_TASK_1"):
        raise RuntimeError("task 1 fails")
    with open(f"{folder}/{rank}", "w") as f:
        f.write(str(os.getpid()))
"""


def test_each_local_task_runs_in_a_process_of_its_own(tmp_path, monkeypatch):
    """A worker that ran earlier tasks keeps some of their memory; a fresh process per
    task makes each task's peak its own (and a failing task names its log)."""
    import functools

    from cosmosage.dataprep.corpus.executors import TaskPerProcessExecutor
    from cosmosage.dataprep.records import DataError

    (tmp_path / "pid_step.py").write_text(STEP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    import pid_step

    pids = tmp_path / "pids"
    pids.mkdir()
    step = functools.partial(pid_step.record, folder=str(pids))
    logs = tmp_path / "logs"
    TaskPerProcessExecutor([step], tasks=3, workers=1, logging_dir=str(logs)).run()
    seen = [int((pids / str(r)).read_text()) for r in range(3)]
    assert len(set(seen)) == 3 and os.getpid() not in seen, seen
    assert sorted(p.name for p in (logs / "completions").iterdir()) == ["00000", "00001", "00002"]
    assert (logs / "logs" / "task_00002.log").read_text(), "each task writes its own log"

    # the local executor gives every task its own interpreter (the single tasks of the
    # input plan, the clusters and the merge would otherwise share this process's
    # memory) but the small, many band tasks
    from cosmosage.dataprep.corpus.executors import QuietLocalExecutor, corpus_executor

    stage = corpus_executor("local", tmp_path / "c.jsonl", None, print, 3, 2, inputs=[tmp_path])
    kinds = {}
    while stage is not None:
        kinds[Path(str(stage.logging_dir.path)).name] = type(stage)
        stage = stage.depends
    assert kinds.pop("buckets") is QuietLocalExecutor  # datatrove's, with its pool's logs quiet
    stages = ["merge", "chunks", "clusters", "shards", "inputs"]
    assert kinds == dict.fromkeys(stages, TaskPerProcessExecutor)

    monkeypatch.setenv("FAIL_TASK_1", "1")
    again = TaskPerProcessExecutor([step], tasks=3, workers=1, logging_dir=str(tmp_path / "logs2"))
    with pytest.raises(DataError, match=r"task_00001\.log: task 1 stopped"):
        again.run()


STAND_IN_SBATCH = """#!/bin/sh
# records each submission (its arguments, then the script) and answers like sbatch
n=$(ls "$SBATCH_LOG" | wc -l)
n=$((n + 1))
{ echo "$@"; cat "$(eval echo \\${$#})"; } > "$SBATCH_LOG/$n.sh"
echo "Submitted batch job $n"
"""


def test_slurm_jobs_are_submitted_and_write_the_same_corpus(
    tmp_path, tiny_model, corpus_dir, monkeypatch
):
    bin_dir, log = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    log.mkdir()
    (bin_dir / "sbatch").write_text(STAND_IN_SBATCH)
    # what a job asks Slurm for its nodes (`scontrol show hostnames $SLURM_NODELIST`)
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    for tool in ("sbatch", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_LOG", str(log))
    folder = tmp_path / "slurm"
    args = corpus(folder, tiny_model, corpus_dir, "--executor", "slurm", "--tasks", "2",
                  "--partition", "astro", "--time", "02:00:00", "--merge-mem-gb", "24")  # fmt: skip
    from cosmosage.tools.cli.main import main

    res = CliRunner().invoke(main, ["data", *args])
    assert res.exit_code == 0, res.output
    scripts = {p.stem: p.read_text() for p in log.iterdir()}
    job = {  # stage -> (job id, its sbatch arguments and script)
        stage: next((k, s) for k, s in scripts.items() if f"{stage}/executor.pik" in s)
        for stage in ("inputs", "shards", "buckets", "clusters", "chunks", "merge")
    }
    shards, merge = job["shards"][1], job["merge"][1]
    assert "#SBATCH --array=0-1" in shards and "#SBATCH --partition=astro" in shards
    assert "#SBATCH --time=02:00:00" in shards and "#SBATCH --array=0-21" in job["buckets"][1]
    stages = ["inputs", "shards", "buckets", "clusters", "chunks", "merge"]
    for before, after in itertools.pairwise(stages):
        arguments = job[after][1].splitlines()[0]
        assert f"--dependency=afterok:{job[before][0]}" in arguments, (before, after, arguments)
    assert "#SBATCH --mem-per-cpu=24G" in merge and "#SBATCH --mem-per-cpu=4G" in shards
    assert not (folder / "c.jsonl").exists(), "nothing runs until Slurm starts the jobs"

    # run the jobs here as Slurm would, each after the one it depends on: the input
    # plan, every shard's first pass, every MinHash band (and exact-hash range), the
    # clusters (and the verdicts), every shard's second pass, the merge
    launch = Path(sys.executable).with_name("launch_pickled_pipeline")
    logs = folder / "c.datatrove"
    for stage, tasks in (
        ("inputs", 1),
        ("shards", 2),
        ("buckets", 22),
        ("clusters", 1),
        ("chunks", 2),
        ("merge", 1),
    ):
        for i in range(tasks):
            env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(i), "SLURM_NODELIST": "localhost"}
            subprocess.run([str(launch), str(logs / stage / "executor.pik")], env=env,
                           check=True, capture_output=True)  # fmt: skip
    assert written(folder) == by_hand(tmp_path, tiny_model, corpus_dir, 2)


def test_a_slurm_dry_run_prints_the_scripts_and_submits_nothing(
    tmp_path, tiny_model, corpus_dir, monkeypatch
):
    assert shutil.which("sbatch") is None
    from cosmosage.tools.cli.main import main

    folder = tmp_path / "dry"
    args = corpus(folder, tiny_model, corpus_dir, "--executor", "slurm", "--tasks", "4",
                  "--partition", "astro", "--dry-run")  # fmt: skip
    res = CliRunner().invoke(main, ["data", *args])
    assert res.exit_code == 0, res.output
    assert res.output.count("#!/bin/bash") >= 2
    assert "#SBATCH --array=0-3" in res.output and "--dependency=afterok:" in res.output
    assert not list(folder.glob("c*.jsonl"))


def test_executor_settings_are_checked_before_anything_runs(tmp_path, tiny_model, corpus_dir):
    from cosmosage.tools.cli.main import main

    folder = tmp_path / "bad"
    for extra, message in [
        (["--executor", "slurm"], "--executor slurm needs --partition"),
        (["--executor", "local", "--shard", "0/2"], "the executor makes the shards"),
        (["--dry-run"], "--dry-run: only with --executor slurm"),
        (["--tasks", "4"], "--tasks: only with --executor"),
    ]:
        res = CliRunner().invoke(main, ["data", *corpus(folder, tiny_model, corpus_dir, *extra)])
        assert res.exit_code != 0 and message in res.output, (extra, res.output)
    assert not folder.exists() or not list(folder.glob("c*.jsonl"))


def test_a_revision_chain_spread_over_shards_keeps_one_version(tmp_path, tiny_model):
    """v2 from v1, v3 from v2, ...: each near its predecessor, the last far from the
    first; wherever the versions land, datatrove's clusters keep one of them, and the
    merge by hand agrees."""
    import random

    from tests.dataprep.corpus.fixtures import PROSE

    rng = random.Random(7)
    vocab = PROSE.split()
    words = [rng.choice(vocab) for _ in range(600)]
    source = tmp_path / "chain"
    source.mkdir()
    for v in range(1, 7):
        (source / f"paper_v{v}.md").write_text(f"# Paper\n\n{' '.join(words)}\n")
        for i in rng.sample(range(len(words)), 18):  # 3% of the words, each revision
            words[i] = rng.choice(vocab)
    folder = tmp_path / "executor"
    cli(*corpus(folder, tiny_model, source, "--executor", "local", "--tasks", "3"))
    kept = {r["doc_id"] for n in ("c.jsonl", "c.val.jsonl") for r in lines(folder / n)}
    assert len(kept) == 1, kept
    reasons = [r["reason"] for r in lines(folder / "c.rejects.jsonl")]
    assert len(reasons) == 5 and any("(across shards)" in r for r in reasons), reasons
    assert written(folder) == by_hand(tmp_path, tiny_model, source, 3)


def test_a_version_whose_only_match_was_dropped_in_its_shard_is_found(tmp_path, tiny_model):
    """v1 and v2 (near v1) in shard 0, v3 (near v2, far from v1) in shard 1: shard 0
    drops v2, and v3 matches nothing it keeps. One process drops v3 (its index holds v2);
    so do the executor and `merge-shards`, because a shard's sidecar lists the near
    duplicates it dropped, after its kept documents, as members of their clusters."""
    import random

    from cosmosage.dataprep.corpus.dedup import NEAR_THRESHOLD, MinHasher, estimated_jaccard
    from cosmosage.dataprep.shard import shard_of
    from tests.dataprep.corpus.fixtures import PROSE

    rng = random.Random(2)
    vocab = PROSE.split()
    words = [rng.choice(vocab) for _ in range(600)]
    texts = []
    for _ in range(3):
        texts.append(f"# Paper\n\n{' '.join(words)}\n")
        for i in rng.sample(range(len(words)), 36):  # 6% of the words, each revision
            words[i] = rng.choice(vocab)
    sigs = [MinHasher().signature(t) for t in texts]
    assert estimated_jaccard(sigs[0], sigs[1]) >= NEAR_THRESHOLD
    assert estimated_jaccard(sigs[1], sigs[2]) >= NEAR_THRESHOLD
    assert estimated_jaccard(sigs[0], sigs[2]) < NEAR_THRESHOLD  # v3 matches only v2

    def named(v: int, shard: int) -> str:  # v1 and v2 in shard 0 (v1 read first), v3 in 1
        return next(n for k in range(99) if shard_of(f"papers/{(n := f'v{v}_{k}.md')}", 2) == shard)

    source = tmp_path / "papers"
    source.mkdir()
    ids = [f"papers/{named(v, s)}" for v, s in ((1, 0), (2, 0), (3, 1))]
    for doc_id, text in zip(ids, texts, strict=True):
        (tmp_path / doc_id).write_text(text)

    def kept(folder: Path) -> set[str]:
        return {r["doc_id"] for n in ("c.jsonl", "c.val.jsonl") for r in lines(folder / n)}

    one = tmp_path / "one"
    cli(*corpus(one, tiny_model, source))
    assert kept(one) == {ids[0]}
    hand = by_hand(tmp_path, tiny_model, source, 2)
    shard0 = lines(tmp_path / "by-hand" / "c.shard-00000-of-00002.docs.jsonl")
    assert [(r["doc_id"], r.get("dropped")) for r in shard0] == [(ids[0], None), (ids[1], True)]
    assert kept(tmp_path / "by-hand") == {ids[0]}
    across = [r for r in lines(tmp_path / "by-hand" / "c.rejects.jsonl")
              if "(across shards)" in r["reason"]]  # fmt: skip
    assert [r["record"]["doc_id"] for r in across] == [ids[2]]
    assert across[0]["reason"].startswith(f"near duplicate: of {ids[0]} ")
    assert f"through {ids[1]}" in across[0]["reason"]
    assert ids[1] not in hand["c.docs.jsonl"]  # the merged sidecar lists kept documents only

    folder = tmp_path / "executor"
    cli(*corpus(folder, tiny_model, source, "--executor", "local", "--tasks", "2"))
    assert written(folder) == hand
    # shard 0's second pass lists v2 again, as `--shard` does (shard 1's differs: v3 was
    # dropped before it was tokenized)
    name = "c.shard-00000-of-00002.docs.jsonl"
    assert (folder / name).read_text() == (tmp_path / "by-hand" / name).read_text()


def test_exact_copies_across_shards_are_found_by_datatroves_exact_stages(tmp_path, tiny_model):
    """Copies of one paper (case and spacing changed) over three shards: the first in
    shard order stays, every copy that crossed shards is named an exact duplicate of it
    and was listed by datatrove's exact finder; the merge by hand agrees."""
    from tests.dataprep.corpus.fixtures import prose

    source = tmp_path / "copies"
    source.mkdir()
    text = "# Paper\n\n" + "\n\n".join(prose(k, 90) for k in range(3))
    for i in range(6):
        copy = text.upper() if i % 2 else text.replace(". ", ".  ")
        (source / f"copy{i}.md").write_text(copy)
    (source / "other.md").write_text(
        "# Other\n\n" + "\n\n".join(prose(50 + k, 90) for k in range(3))
    )
    folder = tmp_path / "executor"
    cli(*corpus(folder, tiny_model, source, "--executor", "local", "--tasks", "3"))
    kept = {r["doc_id"] for n in ("c.jsonl", "c.val.jsonl") for r in lines(folder / n)}
    assert len(kept) == 2 and "copies/other.md" in kept, kept
    (first,) = kept - {"copies/other.md"}
    rejects = lines(folder / "c.rejects.jsonl")
    assert len(rejects) == 5
    assert all(r["reason"].startswith("exact duplicate: of copies/copy") for r in rejects)
    # within a shard the shard's own first is named; across shards, the one kept
    across = [r["reason"] for r in rejects if "(across shards)" in r["reason"]]
    assert all(r.startswith(f"exact duplicate: of {first} ") for r in across), across
    found = folder / "c.datatrove" / "minhash" / "exact-duplicates"
    listed = sum(p.stat().st_size // 4 for p in found.rglob("*.c4_dup"))  # one uint32 each
    assert len(across) >= 1 and listed == len(across), (across, listed)
    assert written(folder) == by_hand(tmp_path, tiny_model, source, 3)


def test_exact_verdicts_drop_only_copies_of_a_kept_key():
    """A 64-bit hash shared by two different keys makes datatrove list a document that
    is no copy: the merge checks the key itself and keeps it."""
    from cosmosage.dataprep.corpus.merge_shards import ExactFirsts

    found = ExactFirsts(firsts={0: {0}}, duplicates={1: {0, 1}})
    assert found.check(0, 0, "a.md", "key-a") is None
    assert found.check(1, 0, "b.md", "key-a") == "exact duplicate: of a.md"
    assert found.check(1, 1, "c.md", "key-c") is None  # listed, but its key was never kept
    assert found.check(1, 2, "d.md", "key-a") is None  # not listed by the finder


def test_whole_signatures_are_read_back_by_position_with_few_files_open(tmp_path):
    """The band tasks and the merge read a document's signature from its shard's file by
    position (no task holds them all): every row comes back as written, a document
    without a signature reads as zeros, and only `keep_open` files stay open."""
    import numpy as np

    from cosmosage.dataprep.corpus.executor_minhash import SignatureFile

    rng = np.random.default_rng(0)

    def row():
        return rng.integers(0, 2**32, 128, dtype=np.uint64).astype(np.uint32)

    written_sigs = {rank: {i: row() for i in range(7) if i != 3} for rank in range(5)}
    for rank, sigs in written_sigs.items():
        SignatureFile.write(str(tmp_path), rank, 8, sigs)
    assert (tmp_path / "000004.sigs").stat().st_size == 4 + 8 * 128 * 4
    files = SignatureFile(str(tmp_path), keep_open=2)
    for rank in (0, 4, 1, 0, 2):
        for i, sig in written_sigs[rank].items():
            assert np.array_equal(files.get(rank, i), sig), (rank, i)
        assert not files.get(rank, 3).any() and not files.get(rank, 7).any()
        assert len(files.open_files) <= 2
    files.close()
    assert not files.open_files


def test_flat_clusters_write_what_datatroves_cluster_stage_writes(tmp_path):
    """The cluster stage with its union-find in flat arrays writes the same `.clusters`
    bytes as datatrove's own, over band files of random pairs across shards (chains,
    a pair seen in several bands, shards with no pair, a shard with one document)."""
    import numpy as np
    from datatrove.pipeline.dedup.minhash import MinhashDedupCluster

    from cosmosage.dataprep.corpus.executor_minhash import FlatClusters, minhash_config

    config = minhash_config(0.6, 128, 4)
    rng = np.random.default_rng(1)
    sizes = [300, 0, 250, 1, 400]  # shard 1 has no pair
    docs = [(f, d) for f, n in enumerate(sizes) for d in range(n)]
    pairs = [sorted((docs[a], docs[b])) for a, b in rng.integers(0, len(docs), (400, 2)) if a != b]
    pairs += [[(0, 5), (2, 7)], [(2, 7), (4, 9)], [(0, 5), (3, 0)]]  # a chain over shards
    (tmp_path / "pairs").mkdir()
    for band in range(config.num_buckets):
        chosen = [p for p in pairs if rng.random() < 0.3 or p[0] == (0, 5)]
        rows = np.array([[*a, *b] for a, b in chosen], "<u4")
        (tmp_path / "pairs" / f"{band:05d}_00.dups").write_bytes(rows.tobytes())
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    MinhashDedupCluster(str(tmp_path / "pairs"), str(theirs), config=config,
                        save_cluster_id=True).run()  # fmt: skip
    FlatClusters(str(tmp_path / "pairs"), str(ours), config=config).run()
    expected = sorted(p.name for p in theirs.glob("*.clusters"))
    assert expected == ["000000.clusters", "000002.clusters", "000003.clusters", "000004.clusters"]
    assert sorted(p.name for p in ours.glob("*.clusters")) == expected
    for name in expected:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    # the chain is one cluster
    from cosmosage.dataprep.corpus.executor_minhash import read_clusters

    chain = {read_clusters(str(ours), f)[d] for f, d in [(0, 5), (2, 7), (4, 9), (3, 0)]}
    assert len(chain) == 1


def test_cluster_verdicts_read_one_shard_and_earlier_signatures_back():
    """The merge asks for a shard's clusters once, as it reaches the shard, and reads an
    earlier member's signature back by (shard, index) to name the closest one; the
    first member met is kept."""
    import numpy as np

    from cosmosage.dataprep.corpus.merge_shards import ClusterFirsts

    base = np.arange(128, dtype=np.uint32)
    near, nearer = base.copy(), base.copy()
    near[:32] += 1000  # 96 of 128 values shared with base
    nearer[:8] += 1000  # 120 of 128 shared with base, 104 with near
    sigs = {(0, 2): base, (1, 0): near, (2, 5): nearer}
    asked_shards, asked_sigs = [], []

    def clusters(shard):
        asked_shards.append(shard)
        return {0: {2: 7}, 1: {0: 7}, 2: {5: 7, 6: 8}}[shard]

    def signature(shard, index):
        asked_sigs.append((shard, index))
        return sigs[(shard, index)]

    found = ClusterFirsts(clusters, signature)
    assert found.check(0, 1, "x.md", base) is None  # not in a cluster
    assert found.check(0, 2, "v1.md", base) is None  # the first of cluster 7: kept
    assert found.check(1, 0, "v2.md", near) == "near duplicate: of v1.md (Jaccard ~0.75)"
    assert found.check(2, 5, "v3.md", nearer) == "near duplicate: of v1.md (Jaccard ~0.94)"
    assert found.check(2, 6, "w.md", base) is None  # the first of cluster 8
    assert asked_shards == [0, 1, 2]
    assert asked_sigs == [(0, 2), (0, 2), (1, 0)]


def test_the_ray_executor_writes_what_shards_and_merge_write(tmp_path, tiny_model, corpus_dir):
    """A Ray instance started here (2 CPUs) runs every stage; the outputs equal the
    shards merged by hand, and a second run finds every task done and runs none."""
    pytest.importorskip("ray")  # the `ray` extra, which make installs
    folder = tmp_path / "ray"
    args = corpus(folder, tiny_model, corpus_dir, "--executor", "ray", "--tasks", "3",
                  "--workers", "2")  # fmt: skip
    res = cli(*args)
    assert written(folder) == by_hand(tmp_path, tiny_model, corpus_dir, 3)
    assert res["records"] == len((folder / "c.jsonl").read_text().splitlines()) > 0
    logs = folder / "c.datatrove"
    assert len(list((logs / "buckets" / "completions").iterdir())) == 22
    stamp = (folder / "c.jsonl").stat().st_mtime_ns
    cli(*args)
    assert (folder / "c.jsonl").stat().st_mtime_ns == stamp, "nothing ran again"


def test_a_band_group_is_checked_pair_by_pair_not_only_neighbours(tmp_path):
    """datatrove's bucket stage lists a group of documents with one band value as a chain
    of neighbours in sorted order (A-B, B-A'); when B is unrelated boilerplate, checking
    only those pairs would lose A-A'. Every pair of the group is checked, as the
    one-process index checks every candidate."""
    import numpy as np

    from cosmosage.dataprep.corpus.executor_minhash import PAIR, CheckedPairs, SignatureFile

    rng = np.random.default_rng(3)
    base, other = (rng.integers(0, 2**32, 128, dtype=np.uint64).astype(np.uint32) for _ in "ab")
    near = base.copy()
    near[:8] += 1  # 120 of 128 values shared
    SignatureFile.write(str(tmp_path / "whole"), 0, 2, {0: base, 1: other})
    SignatureFile.write(str(tmp_path / "whole"), 1, 1, {0: other})
    SignatureFile.write(str(tmp_path / "whole"), 2, 2, {0: near, 1: near})
    (tmp_path / "candidates").mkdir()
    chain = [(0, 0, 1, 0), (1, 0, 2, 0), (0, 1, 2, 1)]  # group A, B, A'; then group B2, A''
    (tmp_path / "candidates" / "00000_00.dups").write_bytes(b"".join(PAIR.pack(*p) for p in chain))
    step = CheckedPairs(str(tmp_path / "whole"), str(tmp_path / "candidates"),
                        str(tmp_path / "checked"), 0.6, 1)  # fmt: skip
    step.run(rank=0, world_size=1)
    written = (tmp_path / "checked" / "00000_00.dups").read_bytes()
    found = [PAIR.unpack_from(written, i) for i in range(0, len(written), PAIR.size)]
    assert found == [(0, 0, 2, 0)]  # A-A' kept; A-B, B-A' and B2-A'' (unrelated) not


def test_a_dropped_line_links_its_cluster_in_memory_and_is_never_named():
    """`merge-shards`' in-memory check: a shard's dropped near duplicate joins the index
    (a later version matching only it is named through it) but gets no verdict itself;
    a dropped line without a signature links nothing and stops nothing."""
    import numpy as np

    from cosmosage.dataprep.corpus.merge_shards import duplicate_check
    from cosmosage.dataprep.corpus.pipeline import encode_signature

    rng = np.random.default_rng(1)
    v1 = rng.integers(0, 2**32, 128, dtype=np.uint64).astype(np.uint32)
    v2, v3 = v1.copy(), v1.copy()
    v2[:40] = rng.integers(0, 2**32, 40, dtype=np.uint64)  # v1-v2: 0.69
    v3[:40], v3[40:80] = v2[:40], rng.integers(0, 2**32, 40, dtype=np.uint64)  # v2-v3 0.69
    check = duplicate_check(True, 0.6, 128)

    def line(name, sig, **extra):
        return {"doc_id": name, "exact": name, "minhash": encode_signature(sig), **extra}

    assert check(0, 0, line("v1", v1)) is None
    assert check(0, 1, {"doc_id": "bare", "dropped": True}) is None
    assert check(0, 2, line("v2", v2, dropped=True)) is None
    reason = check(1, 0, line("v3", v3))
    assert reason and reason.startswith("near duplicate: of v1 ") and "through v2" in reason
