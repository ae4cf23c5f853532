"""Where a corpus command runs: `--executor local|slurm|ray` hands its shards and their
merge to datatrove (dataprep/corpus/executors.py); the options and the glue."""

from __future__ import annotations

import contextlib

import click

from cosmosage.tools.cli.common import echo_json

# where the work runs: this process (default) or datatrove's executors
EXECUTOR_OPTIONS = [
    click.option(
        "--executor",
        type=click.Choice(["local", "slurm", "ray"]),
        default=None,
        help="Run as datatrove tasks: `local` (a process pool here), `slurm` (job arrays) or "
        "`ray` (a Ray cluster: --ray-address, else one started here); each shard task is "
        "one --shard, datatrove's exact and MinHash stages find duplicates across shards, "
        "one task merges. Rerun the same command after a kill: only unfinished tasks run. "
        "[default: one process]",
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
        help="With --executor slurm or ray: memory per CPU of a shard task.",
    ),
    click.option(
        "--merge-mem-gb",
        type=click.IntRange(1),
        default=8,
        show_default=True,
        help="With --executor slurm or ray: memory of the merge task (a few bytes and the "
        "name of each clustered document, the first of each group of exact copies).",
    ),
    click.option(
        "--ray-address",
        default=None,
        help="With --executor ray: the cluster to join (`auto`: the one this machine is part "
        "of; or host:port). Unset: a Ray instance started here with --workers CPUs, stopped "
        "at the end.",
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


def run_on_executor(kw: dict, run_shard, inputs: list[str] | None = None) -> None:
    """The shards (`run_shard("I/N")` each) and their merge as datatrove tasks: run
    here (local), on a Ray cluster (ray), submitted (slurm) or printed (slurm --dry-run).
    With `inputs`, a first task plans which shard reads which file."""
    from cosmosage.dataprep.corpus import executors

    if kw["shard"]:
        raise click.UsageError("--shard and --executor: the executor makes the shards (--tasks)")
    if kw["ray_address"] and kw["executor"] != "ray":
        raise click.UsageError("--ray-address: only with --executor ray")
    res = executors.Resources(
        kw["partition"], kw["time_limit"], kw["mem_per_cpu_gb"], kw["merge_mem_gb"]
    )
    executor = executors.corpus_executor(
        kw["executor"],
        kw["out"],
        kw["val_out"],
        run_shard,
        kw["tasks"],
        kw["workers"],
        res,
        dedup=not kw["no_dedup"],
        near_threshold=kw["near_threshold"],
        inputs=inputs,
    )
    if kw["executor"] == "slurm" and kw["dry_run"]:
        for script in executors.submitted_scripts(executor):
            click.echo(script)
        return
    if kw["executor"] == "ray":
        with ray_cluster(kw["ray_address"], kw["workers"]):
            executor.run()
    else:
        executor.run()
    if kw["executor"] != "slurm":
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


@contextlib.contextmanager
def ray_cluster(address: str | None, workers: int):
    """Joined to the Ray cluster at `address`, or to one started here with `workers`
    CPUs and stopped on leaving. Task output stays in datatrove's logs (OUT.datatrove/),
    not on this command's stdout, which carries the JSON summary."""
    try:
        import ray
    except ImportError:
        raise click.UsageError(
            "--executor ray needs Ray: pip install 'cosmosage[ray]' (make installs it)"
        ) from None
    started = not ray.is_initialized()
    if started:
        kwargs = {"address": address} if address else {"num_cpus": max(1, workers)}
        ray.init(**kwargs, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
