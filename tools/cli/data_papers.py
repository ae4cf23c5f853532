"""`cosmosage data augment | cloze | closed-book`: the routes from papers to training data
that teaches what the papers say, and the closed-book questions that test it."""

from __future__ import annotations

import click

from cosmosage.tools.cli.common import echo_json

papers_argument = click.argument("papers", nargs=-1, required=True, type=click.Path(exists=True))
name_option = click.option(
    "--name-subjects",
    is_flag=True,
    help="Write out short references to a paper's subject first ('the array' -> 'the "
    "Halvard Radio Array', a leading 'It'): the subject's name in every sentence.",
)


@click.command("augment")
@papers_argument
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Completion JSONL to write."
)
@click.option(
    "--rendering",
    "renderings",
    multiple=True,
    default=("original", "shuffled", "reordered", "sentences"),
    show_default=True,
    help="Renderings to write: original, shuffled (sentences of each paragraph), reordered "
    "(paragraphs), sentences (one record each, with title and section).",
)
@click.option(
    "--copies", type=int, default=2, show_default=True, help="Copies of each permuted rendering."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Chooses the orders.")
@name_option
def data_augment(papers, out, renderings, copies, seed, name_subjects) -> None:
    """Papers (Markdown/text files or folders) -> several renderings of each as completion
    text; no sentence is added or lost. Many rewrites of a document teach its facts better
    than many copies of it (docs/papers.md).

    \b
    Example:
      cosmosage data augment samples/study_papers --copies 4 --out build/data/papers/augmented.jsonl
    """
    from cosmosage.dataprep.papers.build import build_augment

    echo_json(build_augment(list(papers), out, tuple(renderings), copies, seed, name_subjects))


@click.command("cloze")
@papers_argument
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Chat JSONL to write.")
@click.option(
    "--answer",
    type=click.Choice(["span", "sentence"]),
    default="span",
    show_default=True,
    help="The assistant answers with the blanked span, or with the whole sentence.",
)
@click.option(
    "--context",
    type=click.Choice(["sentence", "prefix"]),
    default="sentence",
    show_default=True,
    help="The question shows the whole sentence around the blank, or only the words before it.",
)
@click.option(
    "--max-per-sentence",
    type=int,
    default=4,
    show_default=True,
    help="Blanks per sentence at most.",
)
@click.option(
    "--hold-out",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of sentences (seeded) kept out of training and written to --suite-out.",
)
@click.option(
    "--exclude-from",
    "exclude_from",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A suite (YAML) whose prompts' `sentence` fields must never become training items.",
)
@click.option(
    "--suite-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Suite of the held-out items.",
)
@click.option(
    "--variants",
    type=click.IntRange(1, 4),
    default=1,
    show_default=True,
    help="Question wordings per training item (1-4): the same blank asked several ways.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@name_option
def data_cloze(
    papers,
    out,
    answer,
    context,
    max_per_sentence,
    hold_out,
    exclude_from,
    suite_out,
    variants,
    seed,
    name_subjects,
) -> None:
    """Papers -> cloze Q&A: each number, year or name in a sentence blanked out, the span
    as the answer (chat records; only the answer trains). Grounded by construction.

    \b
    Example:
      cosmosage data cloze samples/study_papers --out build/data/papers/cloze.jsonl
      cosmosage data cloze samples/study_papers --hold-out 0.2 --suite-out build/data/papers/cloze_eval.yaml \\
        --out build/data/papers/cloze.jsonl
    """
    from cosmosage.dataprep.io import DataError, read_yaml
    from cosmosage.dataprep.papers.build import build_cloze

    exclude: list[str] = []
    for path in exclude_from:
        data = read_yaml(path)
        prompts = data.get("prompts") if isinstance(data, dict) else None
        if not isinstance(prompts, list):
            raise DataError(f"--exclude-from {path}: expected a suite with a `prompts:` list")
        exclude += [
            p["sentence"]
            for p in prompts
            if isinstance(p, dict) and isinstance(p.get("sentence"), str)
        ]
    echo_json(
        build_cloze(
            list(papers),
            out,
            answer,
            max_per_sentence,
            hold_out,
            exclude,
            suite_out,
            seed,
            variants,
            name_subjects,
            context,
        )
    )


@click.command("closed-book")
@click.argument("questions", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--papers",
    "papers",
    multiple=True,
    required=True,
    type=click.Path(exists=True),
    help="The papers the questions are about (files or folders).",
)
@click.option("--out-dir", required=True, type=click.Path(file_okay=False))
@click.option(
    "--against",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Training files (JSONL) the questions must be held out of; a leaking question is rejected.",
)
def data_closed_book(questions, papers, out_dir, against) -> None:
    """A question file about papers -> the closed-book suite (closed_book.yaml: every `ask`
    wording, grouped qa_fact / paper_only, with document and sentence) and the trainable
    Q&A of the `qa` facts (qa.jsonl), decontaminated against every --against file.

    \b
    Example:
      cosmosage data closed-book samples/study_papers/facts.yaml --papers samples/study_papers \\
        --against build/data/papers/cloze.jsonl --out-dir build/data/papers
      cosmosage eval build/models/x --suite build/data/papers/closed_book.yaml
    """
    from cosmosage.dataprep.papers.closedbook import build_closed_book
    from cosmosage.dataprep.papers.documents import load_papers

    found, _ = load_papers(list(papers))
    echo_json(build_closed_book(questions, found, out_dir, list(against)))


COMMANDS = [data_augment, data_cloze, data_closed_book]
