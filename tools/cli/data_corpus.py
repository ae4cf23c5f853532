"""`cosmosage data` commands for completion corpora: corpus, arxiv (fetch / process /
abstracts), merge-shards.

Every corpus command but `arxiv fetch` streams, runs as shard i of n (`--shard i/n`, e.g.
one Slurm array task each) with `--workers N` processes, or as datatrove tasks
(`--executor`, tools/cli/data_corpus_executor.py), and writes beside its output a
manifest, a rejects file with the reason for every drop, and a document sidecar for the
merge.
"""

from __future__ import annotations

import functools
import os
from datetime import date

import click

from cosmosage.dataprep.corpus.dedup import NEAR_THRESHOLD, SHINGLE
from cosmosage.tools.cli.common import echo_json, out_file_option, shard_option
from cosmosage.tools.cli.data_corpus_executor import executor_options, run_on_executor


def _date(ctx, param, value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: expected YYYY-MM-DD") from exc


# what a corpus command writes and how it chunks
OUTPUT_OPTIONS = [
    click.option(
        "--out",
        required=True,
        type=click.Path(dir_okay=False),
        help="Output JSONL ({'text': ...} per line).",
    ),
    click.option(
        "--tokenizer",
        required=True,
        help="Tokenizer (model folder or Hub id) the chunks are measured with.",
    ),
    click.option(
        "--sequence-len",
        type=int,
        required=True,
        help="Training sequence length; chunks have sequence_len - 2 tokens (BOS/EOS).",
    ),
    click.option(
        "--val-out", type=click.Path(dir_okay=False), help="Validation JSONL (whole documents)."
    ),
    click.option(
        "--val-fraction",
        type=click.FloatRange(0.0, 1.0, max_open=True),
        default=0.0,
        show_default=True,
        help="Share of documents held out for --val-out (0 <= f < 1).",
    ),
    click.option(
        "--seed",
        type=int,
        default=0,
        show_default=True,
        help="Seed of the validation split: which whole documents --val-fraction holds out.",
    ),
    shard_option("each file's path inside the folder given (arXiv: the id)"),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Processes for cleaning, filtering and hashing.",
    ),
    click.option(
        "--overlap",
        type=int,
        default=0,
        show_default=True,
        help="Tokens repeated between consecutive chunks.",
    ),
    click.option(
        "--paragraph-align",
        is_flag=True,
        help="End chunks at paragraph breaks when one lies in the second half.",
    ),
]
# what it keeps: quality filters, deduplication, decontamination, verification
CLEANING_OPTIONS = [
    click.option(
        "--min-words",
        type=int,
        default=50,
        show_default=True,
        help="Drop documents with fewer words.",
    ),
    click.option("--no-filter", is_flag=True, help="Skip the quality filters."),
    click.option(
        "--no-english-filter", is_flag=True, help="Keep documents that do not look English."
    ),
    click.option("--no-dedup", is_flag=True, help="Skip exact and near-duplicate removal."),
    click.option(
        "--near-threshold",
        type=click.FloatRange(0.0, 1.0, min_open=True),
        default=NEAR_THRESHOLD,
        show_default=True,
        help=f"Estimated Jaccard similarity (word {SHINGLE}-grams) at or above which a "
        "document is a near duplicate of an earlier one.",
    ),
    click.option(
        "--decontaminate",
        "--against",
        "prompt_files",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False),
        help="Eval prompt file (.yaml/.jsonl/.txt); chunks sharing an n-gram are dropped. "
        "Repeatable; --against is the same option, as in the other data commands.",
    ),
    click.option(
        "--decontam-n",
        type=int,
        default=8,
        show_default=True,
        help="n-gram length for decontamination.",
    ),
    click.option(
        "--verify",
        type=click.Choice(["sample", "all", "none"]),
        default="sample",
        show_default=True,
        help="Re-encode chunks to confirm their token counts.",
    ),
]


def corpus_options(f):
    """Options shared by every command that writes a chunked completion corpus."""
    for opt in reversed(OUTPUT_OPTIONS + CLEANING_OPTIONS):
        f = opt(f)
    return f


def _config(kw: dict):
    from cosmosage.dataprep.corpus.filters import QualityConfig
    from cosmosage.dataprep.corpus.pipeline import CorpusConfig

    quality = QualityConfig(min_words=kw["min_words"], english=not kw["no_english_filter"])
    return CorpusConfig(
        sequence_len=kw["sequence_len"],
        overlap=kw["overlap"],
        paragraph=kw["paragraph_align"],
        val_fraction=kw["val_fraction"],
        seed=kw["seed"],
        quality=quality,
        filter=not kw["no_filter"],
        dedup=not kw["no_dedup"],
        near_threshold=kw["near_threshold"],
        decontam_n=kw["decontam_n"],
        verify=kw["verify"],
        workers=kw["workers"],
    )


def _run(
    kw: dict, items_for_shard, extra_meta: dict | None = None, phase: str | None = None
) -> dict:
    """Resolve shard and output names, then run the pipeline over `items_for_shard(shard)`
    (`phase`: which pass of an executor's shard task, dataprep/corpus/prepared.py)."""
    from cosmosage.dataprep.corpus.dedup import read_eval_prompts
    from cosmosage.dataprep.corpus.pipeline import run_corpus
    from cosmosage.dataprep.io import check_outputs
    from cosmosage.dataprep.shard import Shard, shard_output

    shard = Shard.parse(kw["shard"])
    cfg = _config(kw)
    cfg.val_fallback = shard is None
    cfg.list_near_dropped = shard is not None  # for the dedup across shards
    out = shard_output(kw["out"], shard)
    val_out = shard_output(kw["val_out"], shard)
    check_outputs(
        [*kw.get("inputs", ()), *kw["prompt_files"]], {"--out": out, "--val-out": val_out}
    )
    prompts = [p for f in kw["prompt_files"] for p in read_eval_prompts(f)]
    meta = {
        "tokenizer": kw["tokenizer"],
        "shard": kw["shard"],
        "prompt_files": list(kw["prompt_files"]),
        **(extra_meta or {}),
    }
    two_pass, items = None, ()
    if phase:
        from cosmosage.dataprep.corpus.prepared import TwoPass

        two_pass = TwoPass(str(kw["out"]), shard.index, phase)
    if phase != "write":  # the second pass reads what the first kept
        items = items_for_shard(shard)
    result = run_corpus(items, out, kw["tokenizer"], cfg, val_out, prompts, meta, two_pass=two_pass)
    _warn_of_losses(result, out)
    return result


def _warn_of_losses(result: dict, out) -> None:
    """Say on the terminal what a run read only in part: files of kinds it does not read,
    and documents whose bytes that are not UTF-8 were replaced."""
    from cosmosage.dataprep.corpus.pipeline import docs_path
    from cosmosage.dataprep.io import manifest_path

    if skipped := result.get("skipped_files"):
        shown = ", ".join(skipped[:3]) + (
            f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        )
        click.echo(
            f"warning: skipped {len(skipped)} file(s) of kinds it does not read: {shown} "
            f"(listed under skipped_files in {manifest_path(out)})",
            err=True,
        )
    if repaired := result.get("undecodable_bytes"):
        click.echo(
            f"warning: {repaired['documents']} kept document(s) held {repaired['bytes']} "
            "byte(s) that are not UTF-8, replaced by U+FFFD, which cleaning drops (each is "
            f"listed with undecodable_bytes in {docs_path(out)}; a Latin-1 file loses its "
            "accented letters: convert it to UTF-8 first)",
            err=True,
        )


def _run_shard(
    kw: dict, items_for_shard, extra_meta: dict | None, shard: str, phase: str | None = None
) -> dict:
    """One datatrove task: `_run` as `--shard I/N` in one process (the executor runs
    the tasks side by side), or one of its two passes. A task is one CPU (Slurm gives it
    one; locally --workers run at once), so the tokenizer encodes on one thread: its
    thread pool on a CPU that other tasks share spends CPU time waiting."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return _run({**kw, "shard": shard, "workers": 1}, items_for_shard, extra_meta, phase)


def run_or_submit(
    kw: dict, items_for_shard, extra_meta: dict | None = None, inputs: list[str] | None = None
) -> None:
    """Run here (one process, or the --shard given), or as datatrove tasks (--executor;
    with `inputs`, the files and folders a first task plans the shards of)."""
    if kw["val_fraction"] and not kw["val_out"]:
        raise click.UsageError("--val-fraction needs --val-out: where the held-out documents go")
    if kw["val_out"] and not kw["val_fraction"]:
        raise click.UsageError(
            "--val-out needs --val-fraction: the share of documents held out (it would be empty)"
        )
    if kw["dry_run"] and kw["executor"] != "slurm":
        raise click.UsageError("--dry-run: only with --executor slurm")
    if kw["tasks"] > 1 and not kw["executor"]:
        raise click.UsageError("--tasks: only with --executor (or run each --shard I/N yourself)")
    if kw["executor"]:
        run = functools.partial(_run_shard, kw, items_for_shard, extra_meta)
        run_on_executor(kw, run, inputs)
    else:
        echo_json(_run(kw, items_for_shard, extra_meta))


@click.command("corpus", short_help="Documents -> cleaned, deduplicated, token-exact chunks.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@corpus_options
@executor_options
def data_corpus(inputs, **kw) -> None:
    """Documents (md, mmd, txt, tex, pdf, source .tar.gz; files or folders) -> cleaned,
    deduplicated, token-exact completion JSONL, split by document.

    Papers, textbooks and any long documents: cleaning removes running headers and
    footers, page numbers, line-break hyphenation, reference lists, figure residue and
    repeated boilerplate pages, repairs Unicode and keeps math. Files of other kinds in
    a folder are listed in the manifest as skipped.

    \b
    Example:
      cosmosage data corpus samples/papers samples/textbook --tokenizer build/models/tiny-llama \\
          --sequence-len 128 --out build/data/corpus.jsonl --val-out build/data/corpus.val.jsonl --val-fraction 0.2
    """
    from cosmosage.dataprep.corpus.sources import read_file_documents

    inputs = list(inputs)
    plan = None
    if kw["executor"]:  # a first task walks the inputs once; each shard reads its plan
        from cosmosage.dataprep.corpus.executors import plan_folder

        plan = str(plan_folder(kw["out"]))
    items = functools.partial(read_file_documents, inputs, plan=plan)
    run_or_submit({**kw, "inputs": inputs}, items, inputs=inputs if plan else None)


# --------------------------------------------------------------------------- arxiv


@click.group("arxiv", short_help="Fetch arXiv papers, then process them offline.")
def arxiv() -> None:
    """arXiv papers: fetch into a resumable cache, then process it offline."""


@arxiv.command("fetch", short_help="Fetch arXiv papers into a resumable cache.")
@click.option(
    "--cache",
    required=True,
    type=click.Path(file_okay=False),
    help="Cache folder (metadata.jsonl, src/, pdf/).",
)
@click.option(
    "--category",
    "categories",
    multiple=True,
    required=True,
    help="arXiv category, e.g. astro-ph.CO (repeatable).",
)
@click.option("--since", callback=_date, help="First submission date, YYYY-MM-DD.")
@click.option("--until", callback=_date, help="Last submission date, YYYY-MM-DD.")
@click.option("--max-results", type=int, default=None, help="Stop after this many entries.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["source", "pdf", "none"]),
    default="source",
    show_default=True,
    help="What to download per paper.",
)
@click.option(
    "--delay",
    type=float,
    default=3.0,
    show_default=True,
    help="Seconds between requests (arXiv asks for 3).",
)
@click.option(
    "--page-size",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Records asked of the arXiv API per request.",
)
@click.option("--api-url", default=None, help="API endpoint (defaults to export.arxiv.org).")
@click.option("--eprint-url", default=None, help="Source URL template with {id} (a mirror).")
@click.option("--pdf-url", default=None, help="PDF URL template with {id} (a mirror).")
def arxiv_fetch(
    cache,
    categories,
    since,
    until,
    max_results,
    fmt,
    delay,
    page_size,
    api_url,
    eprint_url,
    pdf_url,
) -> None:
    """Fetch metadata (and sources or PDFs) by category and date range into CACHE.

    A rerun only downloads what the cache lacks.

    \b
    Example:
      cosmosage data arxiv fetch --cache arxiv-cache --category astro-ph.CO --since 2020-01-01
    """
    from cosmosage.dataprep.corpus import arxiv as ax

    fetcher = ax.Fetcher(
        cache,
        delay=delay,
        page_size=page_size,
        api_url=api_url or ax.API_URL,
        eprint_url=eprint_url or ax.EPRINT_URL,
        pdf_url=pdf_url or ax.PDF_URL,
    )
    entries = fetcher.fetch_metadata(ax.build_query(categories, since, until), max_results)
    if fmt != "none":
        fetcher.fetch_sources((e["id"] for e in entries), fmt)
    echo_json({"cache": str(cache), "entries": len(entries), **fetcher.stats})


@arxiv.command("process", short_help="Cached papers -> a corpus, offline.")
@click.option(
    "--cache",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="The cache folder `data arxiv fetch` filled.",
)
@click.option(
    "--metadata",
    "snapshot",
    type=click.Path(exists=True, dir_okay=False),
    help="Bulk metadata snapshot, for licenses the API does not give.",
)
@click.option(
    "--abstract-fallback",
    is_flag=True,
    help="Use title + abstract for papers with no readable source.",
)
@corpus_options
@executor_options
def arxiv_process(cache, snapshot, abstract_fallback, **kw) -> None:
    """Cached papers (LaTeX source preferred, then .mmd/.md, then PDF) -> corpus, offline.

    \b
    Example:
      cosmosage data arxiv process --cache arxiv-cache --metadata arxiv-metadata-oai-snapshot.json \\
          --tokenizer mistralai/Mistral-7B-v0.1 --sequence-len 4096 --out arxiv.jsonl --shard 0/64
    """
    from cosmosage.dataprep.corpus.arxiv import cache_documents, cache_entries, license_index

    licenses = license_index(snapshot, {e["id"] for e in cache_entries(cache)}) if snapshot else {}
    items = functools.partial(
        cache_documents, cache, licenses=licenses, abstract_fallback=abstract_fallback
    )
    run_or_submit(kw, lambda shard: items(shard=shard), {"cache": str(cache), "metadata": snapshot})


@arxiv.command("abstracts", short_help="Cached abstracts -> a corpus.")
@click.argument("snapshot", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--category", "categories", multiple=True, help="Keep records in any of these categories."
)
@click.option("--since", callback=_date, help="First-version date from, YYYY-MM-DD.")
@click.option("--until", callback=_date, help="First-version date to, YYYY-MM-DD.")
@corpus_options
@executor_options
def arxiv_abstracts(snapshot, categories, since, until, **kw) -> None:
    """Bulk metadata snapshot (one JSON object per line) -> title + abstract corpus.

    \b
    Example:
      cosmosage data arxiv abstracts arxiv-metadata-oai-snapshot.json --category astro-ph.CO \\
          --since 2020-01-01 --min-words 30 --tokenizer build/models/tiny-llama --sequence-len 128 --out abstracts.jsonl
    """
    from cosmosage.dataprep.corpus.arxiv import abstract_documents, read_snapshot

    def items(shard):
        return abstract_documents(
            read_snapshot(snapshot, categories, since, until, shard), snapshot
        )

    run_or_submit(kw, items, {"snapshot": snapshot, "categories": list(categories)})


# --------------------------------------------------------------------------- shards


@click.command("merge-shards", short_help="Join the shard outputs of any data command.")
@out_file_option("The --out the shard jobs were given.")
@click.option(
    "--val-out", type=click.Path(dir_okay=False), help="The --val-out the shard jobs were given."
)
@click.option("--no-dedup", is_flag=True, help="Do not deduplicate documents across shards.")
@click.option(
    "--near-threshold",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=NEAR_THRESHOLD,
    show_default=True,
    help="Estimated Jaccard similarity at or above which a document is a near duplicate.",
)
def merge_shards_cmd(out, val_out, no_dedup, near_threshold) -> None:
    """Combine shard outputs (OUT.shard-I-of-N.jsonl) of any `--shard` command into OUT.

    A corpus's parts (`data corpus|arxiv`) are deduplicated across shards (exact and
    near-duplicate documents, from their .docs.jsonl); records of `data convert` or
    `data synth` are joined in shard order. Either way one manifest and rejects file.

    \b
    Examples:
      cosmosage data merge-shards --out arxiv.jsonl --val-out arxiv.val.jsonl
      cosmosage data merge-shards --out qa.chat.jsonl
    """
    from cosmosage.dataprep.corpus.merge_shards import merge_shards
    from cosmosage.dataprep.corpus.pipeline import docs_path
    from cosmosage.dataprep.io import check_outputs
    from cosmosage.dataprep.shard import find_shards, merge_records

    check_outputs([], {"--out": out, "--val-out": val_out})
    if docs_path(find_shards(out)[0]).exists():
        echo_json(merge_shards(out, val_out, dedup=not no_dedup, near_threshold=near_threshold))
        return
    if val_out:
        raise click.UsageError("--val-out: only a corpus's shards have a validation part")
    echo_json(merge_records(out))


COMMANDS = [data_corpus, arxiv, merge_shards_cmd]
