"""`data corpus --executor local|slurm`: the corpus pipeline as datatrove tasks.

Task r of N does what `--shard r/N` does (the same reader, cleaning, quality filters
with reasons, dedup within the shard, token-exact chunks, decontamination) and writes
OUT.shard-r-of-N.*; a second datatrove stage of one task, started once every shard
task has finished, joins them as `data merge-shards` does (exact and near-duplicate
documents across shards, one manifest and one rejects file). Datatrove runs the tasks
(a local process pool; or a Slurm job array and a job that depends on it) and keeps a
completion marker per task under OUT.datatrove/: the same command run again after a
kill runs only the tasks that have none, and the outputs equal those of a run that was
never stopped (each shard's files are written atomically, at its end).

Requires the `scale` extra (datatrove).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from cosmosage.dataprep.io import sibling
from cosmosage.dataprep.records import DataError

EXECUTORS = ("local", "slurm")


def peak_rss_mb() -> int:
    """This process's peak resident memory so far (a task's stats say it)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


class CorpusShard(PipelineStep):
    """One datatrove task: the corpus pipeline over shard rank/world_size."""

    name = "corpus shard"
    type = "cosmosage"

    def __init__(self, run_shard: Callable[[str], dict]):
        super().__init__()
        self.run_shard = run_shard

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        with self.track_time():
            result = self.run_shard(f"{rank}/{world_size}")
        self.stat_update("documents", value=int(result.get("documents", 0)))
        self.stat_update("records", value=int(result.get("records", 0)))
        self.stat_update("dropped", value=sum((result.get("dropped") or {}).values()))
        self.stat_update("peak_rss_mb", value=peak_rss_mb())
        return None


class CorpusMerge(PipelineStep):
    """The last task: the shards joined into OUT (and VAL_OUT), deduplicated across."""

    name = "corpus merge"
    type = "cosmosage"

    def __init__(self, merge: Callable[[], dict]):
        super().__init__()
        self.merge = merge

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        with self.track_time():
            result = self.merge()
        for side in ("train", "val"):
            self.stat_update(f"{side} records", value=int(result.get(f"{side}_records", 0)))
        self.stat_update("peak_rss_mb", value=peak_rss_mb())
        return None


@dataclass
class Slurm:
    """What a Slurm submission needs beyond the task count."""

    partition: str
    time: str = "24:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 4
    merge_mem_gb: int = 8  # the merge holds every kept document's signature: ~7.7 KB each
    venv: str | None = None
    sbatch_args: dict = field(default_factory=dict)


def logging_dir(out: str | Path) -> Path:
    """Where datatrove keeps its logs, stats and completion markers for OUT."""
    return sibling(out, ".datatrove")


def corpus_executor(
    kind: str,
    out: str | Path,
    run_shard: Callable[[str], dict],
    merge: Callable[[], dict],
    tasks: int,
    workers: int = 1,
    slurm: Slurm | None = None,
):
    """The datatrove executor of the merge stage, which depends on the shard stage:
    `.run()` runs (local) or submits (slurm) both."""
    if tasks < 1:
        raise DataError(f"--tasks {tasks}: at least one task")
    logs = logging_dir(out)
    if kind == "local":
        shards = LocalPipelineExecutor(
            [CorpusShard(run_shard)],
            tasks=tasks,
            workers=max(1, min(workers, tasks)),
            logging_dir=str(logs / "shards"),
            start_method="spawn",
        )
        return LocalPipelineExecutor(
            [CorpusMerge(merge)], tasks=1, logging_dir=str(logs / "merge"), depends=shards
        )
    if kind == "slurm":
        if slurm is None or not slurm.partition:
            raise DataError("--executor slurm needs --partition")
        common = {
            "time": slurm.time,
            "partition": slurm.partition,
            "venv_path": slurm.venv,
            "sbatch_args": dict(slurm.sbatch_args) or None,
            "slurm_logs_folder": str(logs / "slurm"),
        }
        shards = SlurmPipelineExecutor(
            [CorpusShard(run_shard)],
            tasks=tasks,
            workers=workers if workers > 1 else -1,
            cpus_per_task=slurm.cpus_per_task,
            mem_per_cpu_gb=slurm.mem_per_cpu_gb,
            job_name="corpus-shards",
            logging_dir=str(logs / "shards"),
            **common,
        )
        return SlurmPipelineExecutor(
            [CorpusMerge(merge)],
            tasks=1,
            cpus_per_task=1,
            mem_per_cpu_gb=slurm.merge_mem_gb,
            job_name="corpus-merge",
            logging_dir=str(logs / "merge"),
            depends=shards,
            **common,
        )
    raise DataError(f"--executor {kind}: choose one of {', '.join(EXECUTORS)}")


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
