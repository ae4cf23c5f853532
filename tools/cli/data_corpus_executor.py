"""Where a corpus command runs: `--executor local|slurm` hands its shards and their
merge to datatrove (dataprep/corpus/executors.py); the options and the glue."""

from __future__ import annotations

import click

from cosmosage.tools.cli.common import echo_json

# where the work runs: this process (default) or datatrove's executors
EXECUTOR_OPTIONS = [
    click.option(
        "--executor",
        type=click.Choice(["local", "slurm"]),
        default=None,
        help="Run as datatrove tasks: `local` (a process pool here) or `slurm` (job arrays); "
        "each shard task is one --shard, datatrove's MinHash stages find near duplicates "
        "across shards, one task merges. Rerun the same command after a kill: only "
        "unfinished tasks run. [default: one process]",
    ),
    click.option(
        "--tasks",
        type=click.IntRange(1),
        default=1,
        show_default=True,
        help="With --executor: how many shards (tasks).",
    ),
    click.option("--partition", default=None, help="With --executor slurm: the partition."),
    click.option(
        "--time",
        "time_limit",
        default="24:00:00",
        show_default=True,
        help="With --executor slurm: each task's time limit.",
    ),
    click.option(
        "--mem-per-cpu-gb",
        type=click.IntRange(1),
        default=4,
        show_default=True,
        help="With --executor slurm: memory per CPU of a shard task.",
    ),
    click.option(
        "--merge-mem-gb",
        type=click.IntRange(1),
        default=8,
        show_default=True,
        help="With --executor slurm: memory of the merge task (an exact-duplicate hash per kept "
        "document, the signatures of clustered ones).",
    ),
    click.option(
        "--dry-run",
        is_flag=True,
        help="With --executor slurm: print the sbatch scripts, submit nothing.",
    ),
]


def executor_options(f):
    for opt in reversed(EXECUTOR_OPTIONS):
        f = opt(f)
    return f


def run_on_executor(kw: dict, run_shard) -> None:
    """The shards (`run_shard("I/N")` each) and their merge as datatrove tasks: run
    here (local), submitted (slurm) or printed (slurm --dry-run)."""
    from cosmosage.dataprep.corpus import executors

    if kw["shard"]:
        raise click.UsageError("--shard and --executor: the executor makes the shards (--tasks)")
    slurm = executors.Slurm(
        kw["partition"], kw["time_limit"], kw["mem_per_cpu_gb"], kw["merge_mem_gb"]
    )
    executor = executors.corpus_executor(
        kw["executor"],
        kw["out"],
        kw["val_out"],
        run_shard,
        kw["tasks"],
        kw["workers"],
        slurm,
        dedup=not kw["no_dedup"],
        near_threshold=kw["near_threshold"],
    )
    if kw["executor"] == "slurm" and kw["dry_run"]:
        for script in executors.submitted_scripts(executor):
            click.echo(script)
        return
    executor.run()
    if kw["executor"] == "local":
        from cosmosage.dataprep.shard import read_manifest

        m = read_manifest(kw["out"])
        echo_json(
            {
                "output": kw["out"],
                "records": m.get("kept"),
                "tokens": m.get("tokens"),
                "documents": m.get("documents"),
                "dropped": m.get("dropped"),
                "logs": str(executors.logging_dir(kw["out"])),
            }
        )
