"""`data corpus --executor local|slurm|ray`: the corpus pipeline as datatrove tasks.

Shard r of N does what `--shard r/N` does (the same reader, cleaning, quality filters
with reasons, dedup within the shard, token-exact chunks, decontamination) and writes
OUT.shard-r-of-N.*, in two passes around the stages that look across shards
(prepared.py), each stage started once the one before has finished: the shards' first
pass (clean, filter, fingerprint: stage `shards`); datatrove's exact-dedup stages
(executor_exact.py) and MinHash stages (executor_minhash.py: its bucket stage, a check
of the candidates, its cluster stage with the union-find in flat arrays), after which
the cluster task names, shard by shard, the documents that duplicate one met before
(`CrossShardVerdicts`: each group's or cluster's first in shard order is kept, as
`merge-shards` keeps it); the shards' second pass, which tokenizes only what is kept
(stage `chunks`); one task that joins the shards (one manifest, one rejects file). With
`--no-dedup` a shard runs in one pass, then the join. For `data corpus`, a first task
walks the inputs and writes each shard's list of files (sources.plan_inputs), so no
shard task walks the whole corpus. Datatrove runs the tasks (a local process pool, each task but
the band tasks in a fresh interpreter; Slurm job arrays, each depending on the last; or
Ray tasks on the cluster `ray.init` joined) and
keeps a completion marker per task under OUT.datatrove/: the same command run again
after a kill runs only the tasks that have none, and the outputs equal those of a run
that was never stopped (each shard's files are written atomically, at its end).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dill
from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from cosmosage.dataprep.corpus.dedup import NEAR_THRESHOLD, NUM_PERM, SHINGLE
from cosmosage.dataprep.corpus.merge_shards import ClusterFirsts, merge_shards
from cosmosage.dataprep.corpus.prepared import (
    prepared_path,
    remove_texts,
    state_dir,
    verdicts_path,
)
from cosmosage.dataprep.env import memory_mb, peak_memory_mb, release_memory, reset_peak_memory
from cosmosage.dataprep.io import JsonlWriter, read_jsonl
from cosmosage.dataprep.records import DataError, Reject

EXECUTORS = ("local", "slurm", "ray")


class CorpusShard(PipelineStep):
    """One datatrove task: the corpus pipeline over shard rank/world_size, whole or one of
    its two passes (`phase`: dataprep/corpus/prepared.py)."""

    name = "corpus shard"
    type = "cosmosage"

    def __init__(self, run_shard: Callable[[str, str | None], dict], phase: str | None = None):
        super().__init__()
        self.run_shard, self.phase = run_shard, phase

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        # a Ray worker may run task after task (a local shard task has a process of its
        # own): each starts from what is really held, and reports its own peak
        release_memory()
        reset_peak_memory()
        self.stat_update("start_rss_mb", value=round(memory_mb()))
        with self.track_time():
            result = self.run_shard(f"{rank}/{world_size}", self.phase)
        self.stat_update("documents", value=int(result.get("documents", 0)))
        self.stat_update("records", value=int(result.get("records", 0)))
        self.stat_update("dropped", value=sum((result.get("dropped") or {}).values()))
        self.stat_update("peak_rss_mb", value=round(peak_memory_mb()))
        return None


class PlanInputs(PipelineStep):
    """The first task: the inputs walked once, each file assigned to its shard
    (sources.plan_inputs), so that no shard task walks the whole corpus."""

    name = "input plan"
    type = "cosmosage"

    def __init__(self, inputs: list[str], tasks: int, folder: str):
        super().__init__()
        self.inputs, self.tasks, self.folder = inputs, tasks, folder

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from cosmosage.dataprep.corpus.sources import plan_inputs

        reset_peak_memory()
        with self.track_time():
            self.stat_update("files", value=plan_inputs(self.inputs, self.tasks, self.folder))
        self.stat_update("peak_rss_mb", value=round(peak_memory_mb()))
        return None


class CorpusMerge(PipelineStep):
    """The last task: the shards joined into OUT (and VAL_OUT), deduplicated across."""

    name = "corpus merge"
    type = "cosmosage"

    def __init__(self, merge: Callable[[], dict]):
        super().__init__()
        self.merge = merge

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        reset_peak_memory()
        with self.track_time():
            result = self.merge()
        for side in ("train", "val"):
            self.stat_update(f"{side} records", value=int(result.get(f"{side}_records", 0)))
        self.stat_update("peak_rss_mb", value=round(peak_memory_mb()))
        return None


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove's local executor whose pool workers (fresh `forkserver` processes) log
    as `quiet_logs` says, like the process that started them."""

    def _launch_run_for_rank(self, *args, **kwargs):
        quiet_logs()
        return super()._launch_run_for_rank(*args, **kwargs)

    def run(self):
        """The stages before this one (`depends`), then its tasks; a line when it is done
        (the time is since the first stage of the run began)."""
        t0 = time.monotonic()
        result = super().run()
        name, took = Path(str(self.logging_dir.path)).name, time.monotonic() - t0
        print(
            f"stage {name}: {self.world_size} task(s) done at {took:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        return result


class TaskPerProcessExecutor(QuietLocalExecutor):
    """datatrove's local executor with every task in a Python process of its own.

    datatrove's pool hands task after task to the same few workers, and a worker keeps
    some of what each task left behind (a few MB a task, measured), so the peak of a
    task grew with the number of tasks before it, that is with the corpus. Here a pool
    worker only starts a fresh interpreter for its task and waits: each task's memory is
    its own, at the cost of starting Python and importing the pipeline (about a second).
    Completion markers, logs and stats are datatrove's, written by the task itself."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        with tempfile.TemporaryDirectory(prefix="cosmosage-task-") as tmp:
            task, stats = Path(tmp, "task.pkl"), Path(tmp, "stats.pkl")
            task.write_bytes(dill.dumps((self, rank, local_rank, node_rank)))
            code = "from cosmosage.dataprep.corpus.executors import run_task_file as r; r()"
            done = subprocess.run([sys.executable, "-c", code, str(task), str(stats)], check=False)
            if done.returncode != 0:
                log = Path(str(self.logging_dir.path)) / "logs" / f"task_{rank:05d}.log"
                raise DataError(
                    f"{log}: task {rank} stopped with exit status {done.returncode}"
                    + (f": {why}" if (why := last_error(log)) else "")
                )
            return dill.loads(stats.read_bytes())


def last_error(log: Path) -> str | None:
    """The error a task's log ends with (the last `DataError: ...` line, else the last
    line), so the command's own error says why and not only where to look."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - 65536))
            lines = [x.strip() for x in fh.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return None
    lines = [x for x in lines if x]
    errors = [x.split("DataError: ", 1)[1] for x in lines if "DataError: " in x]
    return (errors or lines or [None])[-1]


def quiet_logs() -> None:
    """datatrove's logs of a local run go to the task log files under OUT.datatrove/
    only; the terminal gets their warnings and errors (and the project's own lines), not
    hundreds of lines of pipeline listings and statistics for every task."""
    import datatrove.executor.base as base
    import datatrove.utils.logging as dlog
    from loguru import logger

    if getattr(base.add_task_logger, "quiet", False):
        return
    original = dlog.add_task_logger

    def add_task_logger(logging_dir, rank, local_rank=0, node_rank=-1):
        # datatrove sends a task's INFO lines to the terminal for local rank 0 only
        return original(logging_dir, rank, max(1, local_rank), node_rank=node_rank)

    def shown(record) -> bool:  # warnings, and a pool worker's "3/22 tasks completed."
        message = record["message"]
        if message.startswith("Remember to also set the number of tasks of the finder"):
            return False  # a reminder the stages here follow (finder tasks = bands)
        return record["level"].no >= 30 or message.endswith("tasks completed.")

    def setup_default_logger():
        logger.remove()
        logger.add(sys.stderr, level="INFO", filter=shown, colorize=dlog.DATATROVE_COLORIZE_LOGS,
                   format="{time:HH:mm:ss} | {level: <7} | {message}")  # fmt: skip

    add_task_logger.quiet = True
    base.add_task_logger, dlog.setup_default_logger = add_task_logger, setup_default_logger
    setup_default_logger()
    import datatrove.pipeline.dedup.exact_dedup as exact
    import datatrove.pipeline.dedup.minhash as minhash

    for module in (exact, minhash):  # their per-file bars, one for every band task
        module.tqdm = functools.partial(module.tqdm, disable=True)


def run_task_file(argv: list[str] | None = None) -> None:
    """The fresh process's side of TaskPerProcessExecutor: TASK_PICKLE STATS_PICKLE."""
    quiet_logs()
    task, stats = argv or sys.argv[1:]
    executor, rank, local_rank, node_rank = dill.loads(Path(task).read_bytes())
    result = LocalPipelineExecutor._run_for_rank(executor, rank, local_rank, node_rank)
    Path(stats).write_bytes(dill.dumps(result))


@dataclass
class Resources:
    """What a Slurm submission (partition, time, memories) or a Ray task (memories) asks
    for beyond the task count; each task is one CPU."""

    partition: str | None = None
    time: str = "24:00:00"
    mem_per_cpu_gb: int = 4
    merge_mem_gb: int = 8  # the merge: a few bytes and the name of each clustered document


def logging_dir(out: str | Path) -> Path:
    """Where datatrove keeps its logs, stats and completion markers for OUT."""
    return state_dir(out)


def plan_folder(out: str | Path) -> Path:
    """Where the input plan of OUT's shards is written (`read_file_documents(plan=)`)."""
    return logging_dir(out) / "plan"


class CrossShardVerdicts(PipelineStep):
    """After the clusters, in the same task: shard by shard in order, which kept documents
    duplicate one met before (datatrove's exact groups and MinHash clusters; the first in
    shard order is kept, as `merge-shards` keeps it), written per shard with the reason
    (prepared.verdicts_path) for the shards' second pass. Holds one shard's clusters and
    exact lists and a few bytes per clustered document (merge_shards.ClusterFirsts)."""

    name = "cross-shard verdicts"
    type = "cosmosage"

    def __init__(self, out: str | Path, tasks: int, folder: str, threshold: float):
        super().__init__()
        self.out, self.tasks, self.folder, self.threshold = str(out), tasks, folder, threshold

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from cosmosage.dataprep.corpus.executor_exact import read_exact
        from cosmosage.dataprep.corpus.executor_minhash import SignatureFile, read_clusters
        from cosmosage.dataprep.corpus.merge_shards import duplicate_check

        with self.track_time():
            sigs = SignatureFile(f"{self.folder}/whole-signatures")
            try:
                clusters = ClusterFirsts(
                    functools.partial(read_clusters, f"{self.folder}/clusters"), sigs.get
                )
                exact = read_exact(f"{self.folder}/exact-duplicates")
                duplicate = duplicate_check(True, self.threshold, NUM_PERM, clusters, exact)
                for shard in range(self.tasks):
                    self.stat_update("duplicates", value=self._shard(shard, duplicate))
            finally:
                sigs.close()
        self.stat_update("peak_rss_mb", value=round(peak_memory_mb()))
        return None

    def _shard(self, shard: int, duplicate) -> int:
        writer = JsonlWriter(verdicts_path(self.out, shard))
        try:
            for index, (lineno, rec) in enumerate(
                read_jsonl(prepared_path(self.out, shard, "docs.jsonl"))
            ):
                if isinstance(rec, Reject):
                    raise DataError(f"{rec.source}:{lineno}: {rec.reason}")
                if reason := duplicate(shard, index, rec):
                    writer.write({"index": index, "doc_id": rec["doc_id"], "reason": reason})
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return writer.count


def merge_written(out, val_out, shards: int) -> dict:
    """The merge after the shards' second pass: they hold only what is kept, so it joins
    them; then the first passes' cleaned texts are removed."""
    result = merge_shards(out, val_out, dedup=False, shards=shards)
    remove_texts(out)
    return result


def _stage(kind: str, pipeline: list, tasks: int, name: str, logs: Path, depends, workers: int,
           res: Resources | None, mem_gb: int | None = None):  # fmt: skip
    """One datatrove stage on the chosen executor, after `depends`."""
    res = res or Resources()
    if kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        return RayPipelineExecutor(
            pipeline,
            tasks=tasks,
            workers=workers if workers > 1 else -1,
            depends=depends,
            logging_dir=str(logs / name),
            cpus_per_task=1,
            mem_per_cpu_gb=mem_gb or res.mem_per_cpu_gb,
        )
    if kind == "local":
        # a shard task holds its documents' index, and the one task of the input plan,
        # the clusters and the merge would otherwise run in this process, beside what it
        # holds: each gets a fresh interpreter. The band tasks are small and many (22),
        # where one would cost more than it saves
        executor = QuietLocalExecutor if name == "buckets" else TaskPerProcessExecutor
        return executor(
            pipeline,
            tasks=tasks,
            workers=max(1, min(workers, tasks)),
            logging_dir=str(logs / name),
            depends=depends,
            # workers are this process's children, so their CPU time and memory are its
            start_method="spawn",
        )
    return SlurmPipelineExecutor(
        pipeline,
        tasks=tasks,
        workers=workers if workers > 1 else -1,
        cpus_per_task=1,
        mem_per_cpu_gb=mem_gb or res.mem_per_cpu_gb,
        job_name=f"corpus-{name}",
        logging_dir=str(logs / name),
        depends=depends,
        time=res.time,
        partition=res.partition,
        slurm_logs_folder=str(logs / "slurm"),
    )


def corpus_executor(
    kind: str,
    out: str | Path,
    val_out: str | Path | None,
    run_shard: Callable[[str], dict],
    tasks: int,
    workers: int = 1,
    res: Resources | None = None,
    dedup: bool = True,
    near_threshold: float = NEAR_THRESHOLD,
    inputs: list[str] | None = None,
):
    """The datatrove executor of the last stage (the merge), which depends on the ones
    before it: `.run()` runs (local; ray, on the cluster `ray.init` joined) or submits
    (slurm) them all. With `dedup`: shards
    (and their signatures), MinHash buckets, checked pairs and clusters, merge; without:
    shards, merge. With `inputs` (files and folders), a first task plans which shard
    reads which file (`run_shard` must then read the plan: plan_folder(out))."""
    if tasks < 1:
        raise DataError(f"--tasks {tasks}: at least one task")
    if kind not in EXECUTORS:
        raise DataError(f"--executor {kind}: choose one of {', '.join(EXECUTORS)}")
    if kind == "slurm" and (res is None or not res.partition):
        raise DataError("--executor slurm needs --partition")
    logs = logging_dir(out)
    if kind == "local":
        quiet_logs()
    first = None
    if inputs is not None:
        plan = PlanInputs(list(map(str, inputs)), tasks, str(plan_folder(out)))
        first = _stage(kind, [plan], 1, "inputs", logs, None, 1, res)
    if not dedup:
        last = _stage(kind, [CorpusShard(run_shard)], tasks, "shards", logs, first, workers, res)
        merge = functools.partial(merge_shards, out, val_out, dedup=False, shards=tasks)
    else:
        last = _minhash_stages(kind, run_shard, out, tasks, workers, res, near_threshold, first)
        merge = functools.partial(merge_written, out, val_out, tasks)
    return _stage(kind, [CorpusMerge(merge)], 1, "merge", logs, last, 1, res,
                  res.merge_mem_gb if res else None)  # fmt: skip


def _minhash_stages(kind, run_shard, out, tasks: int, workers: int, res, near_threshold: float,
                    first=None):  # fmt: skip
    """The shard tasks (which hand their signatures and exact keys to datatrove), its
    bucket and exact-finder stages (one task per band, each also one hash range of the
    exact keys, and the band's candidate pairs checked), then datatrove's clusters (one
    task): the last."""
    from datatrove.pipeline.dedup.exact_dedup import ExactFindDedups
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets

    from cosmosage.dataprep.corpus import executor_exact as ex
    from cosmosage.dataprep.corpus import executor_minhash as mh

    logs = logging_dir(out)
    config = mh.minhash_config(near_threshold, NUM_PERM, SHINGLE)
    names = ("signatures", "whole-signatures", "candidates", "checked", "clusters",
             "exact-hashes", "exact-duplicates")  # fmt: skip
    folders = {k: str(logs / "minhash" / k) for k in names}
    shard_steps = [
        CorpusShard(run_shard, "prepare"),
        mh.SidecarSignatures(out, folders["signatures"], folders["whole-signatures"], config),
        ex.SidecarExactHashes(out, tasks, folders["exact-hashes"], config.num_buckets),
    ]
    shards = _stage(kind, shard_steps, tasks, "shards", logs, first, workers, res)
    buckets = _stage(
        kind,
        [
            MinhashDedupBuckets(folders["signatures"], folders["candidates"], config=config),
            ExactFindDedups(folders["exact-hashes"], folders["exact-duplicates"],
                            config=ex.exact_config()),
            mh.CheckedPairs(folders["whole-signatures"], folders["candidates"],
                            folders["checked"], near_threshold, config.num_buckets),
        ],
        config.num_buckets, "buckets", logs, shards, workers, res,
    )  # fmt: skip
    clusters = _stage(
        kind,
        [
            mh.FlatClusters(folders["checked"], folders["clusters"], config=config),
            CrossShardVerdicts(out, tasks, str(logs / "minhash"), near_threshold),
        ],
        1, "clusters", logs, buckets, 1, res,
    )  # fmt: skip
    return _stage(kind, [CorpusShard(run_shard, "write")], tasks, "chunks", logs, clusters,
                  workers, res)  # fmt: skip


def submitted_scripts(executor) -> list[str]:
    """Run a Slurm executor with sbatch replaced by a recorder: the scripts it would
    submit, in order (for --dry-run). Nothing is submitted."""
    import datatrove.executor.slurm as slurm_module

    scripts: list[str] = []

    def record(contents, job_id_retriever, *args):
        scripts.append(contents if not args else f"# sbatch {' '.join(args)}\n{contents}")
        return str(len(scripts))

    real = slurm_module.launch_slurm_job
    slurm_module.launch_slurm_job = record
    try:
        executor.run()
    finally:
        slurm_module.launch_slurm_job = real
    return scripts
