"""`cosmosage data augment | cloze | questions | entigraph | closed-book`: the routes from
papers to training data that teaches what the papers say (questions and entigraph ask a
served model, with the job options of tools/cli/jobs.py), and the closed-book questions
that test it."""

from __future__ import annotations

import click

from cosmosage.tools.cli.common import echo_json, input_option, out_dir_option, out_file_option
from cosmosage.tools.cli.jobs import (
    endpoint_options,
    run_journaled,
    sampling_options,
)

papers_argument = click.argument("papers", nargs=-1, required=True, type=click.Path(exists=True))
name_option = click.option(
    "--name-subjects",
    is_flag=True,
    help="Write out short references to a paper's subject first ('the array' -> 'the "
    "Halvard Radio Array', a leading 'It'): the subject's name in every sentence.",
)


@click.command("augment", short_help="Papers -> several renderings of each (no generator).")
@papers_argument
@out_file_option("Completion JSONL to write.")
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


@click.command("cloze", short_help="Papers -> cloze Q&A from their own sentences.")
@papers_argument
@out_file_option("Chat JSONL to write.")
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
    "--against",
    "exclude_from",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A suite (YAML) whose prompts' `sentence` fields must never become training items "
    "(--against is the same option, as in the other data commands).",
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
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the held-out share: which sentences --hold-out keeps out of training.",
)
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
    from cosmosage.dataprep.io import read_yaml
    from cosmosage.dataprep.papers.build import build_cloze
    from cosmosage.dataprep.records import DataError

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


@click.command("closed-book", short_help="A question file -> a closed-book suite and its Q&A.")
@click.argument("questions", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--papers",
    "papers",
    multiple=True,
    required=True,
    type=click.Path(exists=True),
    help="The papers the questions are about (files or folders).",
)
@out_dir_option("Folder for closed_book.yaml (the suite) and qa.jsonl (the trainable Q&A).")
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


@click.command("questions", short_help="A model writes questions for cloze blanks.")
@input_option("Blanks: chat JSONL from `data cloze` (each record's document, sentence and span).")
@out_file_option("Chat JSONL to write.")
@click.option(
    "--questions",
    "per_span",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="Candidate questions asked per span; each request shows other worked examples "
    "(one each, then pairs of them), so a greedy server writes different questions.",
)
@click.option(
    "--answer",
    type=click.Choice(["sentence", "span"]),
    default="sentence",
    show_default=True,
    help="What each kept record answers with: the paper's sentence, or the span alone.",
)
@click.option(
    "--round-trip/--no-round-trip",
    default=True,
    show_default=True,
    help="Ask each question back with its sentence; keep it only if the answer names the span.",
)
@click.option(
    "--against",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="An evaluation suite (YAML with `prompts:`): questions too close to one of its "
    "prompts are refused. Repeatable.",
)
@click.option(
    "--prompt",
    default="question_for_span",
    show_default=True,
    help="Prompt YAML file, or the name of a bundled one, that writes a question.",
)
@click.option(
    "--check-prompt",
    default="answer_from_sentence",
    show_default=True,
    help="Prompt YAML file, or the name of a bundled one, of the round trip.",
)
@endpoint_options
@sampling_options
def data_questions(
    input_path,
    out,
    per_span,
    answer,
    round_trip,
    against,
    prompt,
    check_prompt,
    **job,
) -> None:
    """Have a model write questions whose answers are the blanks of `data cloze`.

    Each blank (a name, number or year of a paper's sentence) gets --questions candidate
    questions; a candidate is refused if it is no question, names its own answer, is
    about something else, or is too close to an evaluation prompt (--against); then it
    is asked back with its sentence (--round-trip) and kept only if the answer names the
    span. Kept records answer with the paper's own sentence. Both steps are journaled
    (OUT.candidates.journal.jsonl, OUT.journal.jsonl): rerun the same command to
    continue. docs/papers.md, "Questions written by a model".

    \b
    Example:
      cosmosage data cloze papers/ --answer sentence --name-subjects --out blanks.jsonl
      cosmosage data questions --input blanks.jsonl --out questions.jsonl \\
        --serve build/models/smollm2-135m-instruct --against suite.yaml
    """
    from cosmosage.dataprep.synth.questions import QuestionsConfig, run_questions

    def config(endpoint, common):
        return QuestionsConfig(
            input=input_path,
            out=out,
            endpoint=endpoint,
            prompt=prompt,
            check_prompt=check_prompt,
            questions=per_span,
            answer=answer,
            round_trip=round_trip,
            against=list(against),
            **common,
        )

    run_journaled(job, run_questions, config)


@click.command("entigraph", short_help="A model rewrites chunks about their entities.")
@input_option("Chunk JSONL from `data corpus`.")
@out_file_option("Completion JSONL of passages.")
@click.option(
    "--max-entities",
    type=click.IntRange(2),
    default=8,
    show_default=True,
    help="Entities kept per chunk (those listed that occur in the chunk, in order).",
)
@click.option(
    "--max-pairs",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Pairs of entities written about per chunk (a seeded choice when there are more).",
)
@click.option(
    "--min-grounding",
    type=click.FloatRange(0, 1),
    default=0.6,
    show_default=True,
    help="Refuse passages with a smaller share of their content words in the chunk.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Chooses the pairs.")
@click.option(
    "--prompt",
    default="entigraph_entities",
    show_default=True,
    help="Prompt YAML file, or the name of a bundled one, that lists the entities.",
)
@click.option(
    "--relation-prompt",
    default="entigraph_relation",
    show_default=True,
    help="Prompt YAML file, or the name of a bundled one, that writes about a pair.",
)
@endpoint_options
@sampling_options
def data_entigraph(
    input_path,
    out,
    max_entities,
    max_pairs,
    min_grounding,
    seed,
    prompt,
    relation_prompt,
    **job,
) -> None:
    """Rewrite chunks EntiGraph-style: a model lists each chunk's entities, then writes
    a passage on how each pair of them is related, from the chunk alone.

    Passages that do not name both entities, loop, or are not grounded in the chunk
    (--min-grounding) go to OUT.rejects.jsonl; kept ones are completion records for
    continued pretraining. Both steps are journaled (OUT.entities.journal.jsonl,
    OUT.journal.jsonl): rerun the same command to continue. docs/papers.md.

    \b
    Example:
      cosmosage data entigraph --input chunks.jsonl --out rewrites.jsonl \\
        --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-72B-Instruct --max-pairs 40
    """
    from cosmosage.dataprep.synth.entigraph import EntiGraphConfig, run_entigraph

    def config(endpoint, common):
        return EntiGraphConfig(
            input=input_path,
            out=out,
            endpoint=endpoint,
            prompt=prompt,
            relation_prompt=relation_prompt,
            max_entities=max_entities,
            max_pairs=max_pairs,
            min_grounding=min_grounding,
            seed=seed,
            **common,
        )

    run_journaled(job, run_entigraph, config)


COMMANDS = [data_augment, data_cloze, data_questions, data_entigraph, data_closed_book]
