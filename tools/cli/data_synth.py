"""`cosmosage data synth | grade | metaqa | replay`: synthetic and metadata Q&A for
instruction tuning, and the base model's own answers (self-replay)."""

from __future__ import annotations

import json

import click

from cosmosage.tools.cli.common import input_option, out_file_option, shard_option
from cosmosage.tools.cli.jobs import (
    endpoint_options,
    run_journaled,
    sampling_options,
)
from cosmosage.tools.eval.generation import PRESETS


@click.command("synth", short_help="A model writes Q&A grounded in each chunk.")
@input_option("Chunk JSONL from `data corpus`.")
@out_file_option("Chat JSONL of question/answer records.")
@click.option(
    "--prompt",
    default="synth_qa",
    show_default=True,
    help="Prompt YAML file, or the name of a bundled one.",
)
@click.option(
    "--pairs", type=int, default=3, show_default=True, help="Question/answer pairs asked per chunk."
)
@click.option(
    "--min-grounding",
    type=click.FloatRange(0, 1),
    default=None,
    help="Refuse pairs whose answer has a smaller share of its content words in the chunk "
    "(default: the prompt's min_grounding, else 0 = off).",
)
@click.option(
    "--tries",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Ask again, up to this many requests in all, for a chunk that yielded no kept pair; "
    "each retry shows the chunk from a later sentence on.",
)
@shard_option("each chunk's content hash")
@endpoint_options
@sampling_options
def data_synth(
    input_path,
    out,
    prompt,
    pairs,
    min_grounding,
    tries,
    shard,
    **job,
) -> None:
    """Ask a model for question/answer pairs grounded in each chunk; write chat records.

    Malformed answers go to OUT.rejects.jsonl with the raw text and the reason. The run
    is journaled in OUT.journal.jsonl: stop it at any time and run the same command
    again to continue.

    \b
    Example:
      cosmosage data synth --input chunks.jsonl --out qa.jsonl \\
        --base-url http://127.0.0.1:8000/v1 --model mistralai/Mistral-7B-Instruct-v0.3 --pairs 3
    """
    from cosmosage.dataprep.shard import Shard, shard_output
    from cosmosage.dataprep.synth.generate import SynthConfig, run_synth

    def config(endpoint, common):
        return SynthConfig(
            input=input_path,
            out=str(shard_output(out, Shard.parse(shard))),
            endpoint=endpoint,
            prompt=prompt,
            pairs=pairs,
            **common,
            min_grounding=min_grounding,
            tries=tries,
            shard=shard,
        )

    run_journaled(job, run_synth, config)


@click.command("grade", short_help="A judge scores each Q&A against its chunk.")
@input_option("Chat records from `data synth` (or any with source.chunk_sha).")
@out_file_option("Kept records, each with its grade.")
@click.option(
    "--chunks",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Chunk file the records came from (default: the one named in the input's manifest).",
)
@click.option(
    "--prompt",
    default="grade_answer",
    show_default=True,
    help="Judge prompt YAML file, or the name of a bundled one.",
)
@click.option(
    "--threshold",
    type=float,
    default=90.0,
    show_default=True,
    help="Keep records scored at least this (0-100).",
)
@click.option(
    "--second-model",
    default=None,
    help="A second judge: every record is scored by both and their agreement reported.",
)
@click.option(
    "--second-base-url", default=None, help="Server of the second judge (default: --base-url)."
)
@click.option(
    "--combine",
    type=click.Choice(["min", "mean"]),
    default="min",
    show_default=True,
    help="How two judges' scores make one.",
)
@click.option(
    "--spot-check",
    type=int,
    default=20,
    show_default=True,
    help="Records written to OUT.spotcheck.md for a person to read.",
)
@click.option(
    "--spot-check-seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the random choice of records for OUT.spotcheck.md.",
)
@endpoint_options
@sampling_options
def data_grade(
    input_path,
    out,
    chunks,
    prompt,
    threshold,
    second_model,
    second_base_url,
    combine,
    spot_check,
    spot_check_seed,
    **job,
) -> None:
    """Score each answer against its source chunk with a judge model; keep the good ones.

    Writes OUT (kept records with their grade), OUT.rejects.jsonl (the rest, with
    grade and reason), OUT.grades.jsonl, OUT.calibration.json and OUT.spotcheck.md.
    Journaled like `data synth`: rerun the same command to continue.

    \b
    Example:
      cosmosage data grade --input qa.jsonl --out qa.graded.jsonl \\
        --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-72B-Instruct --threshold 90
    """
    from cosmosage.dataprep.synth.grade import GradeConfig, run_grade
    from cosmosage.dataprep.synth.llm import Endpoint

    def config(judge, common):
        judges = [judge]
        if second_model:
            judges.append(
                Endpoint(
                    second_base_url or judge.base_url,
                    second_model,
                    judge.api_key_env,
                    judge.timeout,
                )
            )
        return GradeConfig(
            input=input_path,
            out=out,
            judges=judges,
            chunks=chunks,
            prompt=prompt,
            threshold=threshold,
            combine=combine,
            **common,
            spot_check=spot_check,
            spot_check_seed=spot_check_seed,
        )

    run_journaled(job, run_grade, config)


@click.command("metaqa", short_help="Q&A about arXiv ids, titles and authors.")
@click.argument("inputs", nargs=-1, required=True)
@out_file_option("Chat JSONL of metadata question/answer records.")
@click.option(
    "--templates",
    default="metaqa",
    show_default=True,
    help="Templates YAML file, or the name of a bundled one.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Picks the phrasing per paper."
)
def data_metaqa(inputs, out, templates, seed) -> None:
    """Question/answer pairs about arXiv ids, titles and authors, with no model involved.

    INPUTS are metadata JSONL files (arXiv bulk snapshot or API entries) and markdown
    papers or folders of them (with `# Title`, `arXiv:` and `Authors:` lines).

    \b
    Example:
      cosmosage data metaqa samples/papers arxiv-metadata.jsonl --out metaqa.jsonl
    """
    from cosmosage.dataprep.synth.metaqa import build_metaqa

    click.echo(json.dumps(build_metaqa(list(inputs), out, templates, seed)))


@click.command("replay", short_help="The model's own answers to everyday prompts.")
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="The model whose answers are kept: the base model of the run they are replayed in.",
)
@click.option(
    "--prompts",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Prompt files (YAML, JSONL or text), repeatable [default: the bundled "
    "samples/replay/prompts.yaml, 310 everyday instructions of 13 kinds].",
)
@click.option(
    "--against",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Evaluation suites to hold out: a prompt too close to one of theirs is rejected "
    "[default: the bundled samples/eval suites].",
)
@click.option(
    "--rewrite",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Chat JSONL files whose last answer the model rewrites in its own words "
    "(self-distillation), instead of answering prompts; a rewrite that loses a name or "
    "number of the original keeps the original.",
)
@out_file_option("Chat JSONL of the answers.")
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default="greedy",
    show_default=True,
    help="Generation preset, as `cosmosage eval --preset`: greedy keeps the model's single "
    "best answer.",
)
@click.option(
    "--max-new-tokens",
    type=int,
    default=256,
    show_default=True,
    help="Longest answer; an answer the limit cuts off is rejected, not kept half-said.",
)
@click.option("--batch-size", type=int, default=16, show_default=True, help="Prompts per batch.")
@click.option(
    "--samples",
    type=int,
    default=1,
    show_default=True,
    help="Answers drawn per prompt, with a sampled preset (ancestral: the model's own "
    "distribution, which training pulls the model back toward).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of sampled presets.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, mps.")
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Reject a wrong answer to a prompt with `expect:` (--no-check replays it).",
)
def data_replay(
    model_path, prompts, against, rewrite, out, preset, max_new_tokens, batch_size, samples, seed,
    device, check,
) -> None:  # fmt: skip
    """Self-replay: the model's own answers to everyday instructions, as chat records.

    Mixed beside what a run teaches (`data mix`, any token share), they pull the tuned
    model back toward what it already said, in its own words, with no foreign data.
    Prompts too close to an evaluation suite's are rejected; answers that are empty, cut
    off, looping or repeated are rejected, and so is a wrong answer to a prompt that
    gives `expect:` (accepted answers, scored as in an evaluation suite): a small model
    replaying its own mistakes learns them. Every reject goes to OUT's rejects file with
    its reason. Answers are journaled as they come: a killed run, started again with the
    same command, asks only what is left.

    \b
    Greedy answers (the default) are the model's single best ones; training on them
    sharpens the model toward them, which moves it too. `--preset ancestral --samples N`
    draws N answers per prompt from the model's own distribution (temperature 1, no
    truncation): training on draws of the base pulls the tuned model back toward the
    base's distribution (their expected gradient is that of the KL to it).

    \b
    With --rewrite, the model instead rewrites the answers of a chat file in its own
    words, the training answer shown as a guide (self-distillation, SDFT): the facts are
    kept, the style becomes the model's own.

    \b
    Examples:
      cosmosage data replay --model build/models/smollm2-135m-instruct \\
        --out build/data/replay/smollm2.jsonl
      cosmosage data replay --model build/models/smollm2-135m-instruct \\
        --rewrite build/data/papers/qa.jsonl --out build/data/papers/qa.own.jsonl
    """
    from cosmosage.dataprep.synth.replay import ReplayConfig, run_replay
    from cosmosage.dataprep.synth.rewrite import run_rewrite
    from cosmosage.tools.eval.generation import preset as make_preset
    from cosmosage.tools.eval.scorers import checked_score
    from cosmosage.tools.paths import ROOT

    settings = make_preset(preset, max_new_tokens=max_new_tokens)
    cfg = ReplayConfig(
        out=out,
        prompts=list(prompts) or [str(ROOT / "samples" / "replay" / "prompts.yaml")],
        model=str(model_path),
        settings=settings,
        against=list(against)
        or [str(p) for p in sorted((ROOT / "samples" / "eval").glob("*.yaml"))],
        batch_size=batch_size,
        samples=samples,
    )
    answer = model_answers(model_path, device, settings, seed, batch_size)

    if rewrite:
        if prompts:
            raise click.UsageError("--rewrite and --prompts: give one or the other")
        if samples != 1:
            raise click.UsageError("--samples: only when answering prompts, not with --rewrite")
        click.echo(json.dumps(run_rewrite(cfg, list(rewrite), answer, echo=click.echo)))
    else:
        click.echo(
            json.dumps(
                run_replay(cfg, answer, echo=click.echo, check=checked_score if check else None)
            )
        )


def model_answers(model_path, device: str, settings: dict, seed: int, batch_size: int):
    """The answering function of `data replay`: the model, loaded at the first batch,
    answers a batch of prompts -> [(answer, ended by itself)]; each batch draws with its
    own seed (one seed for all would repeat a sampled preset's draws)."""
    from cosmosage.tools.eval.generation import Generator

    gen, calls = None, 0

    def answer(texts: list[str]) -> list[tuple[str, bool]]:
        nonlocal gen, calls
        if gen is None:
            gen = Generator(model_path, device=device)
        ended: list[bool] = []
        calls += 1
        got = gen.answers(
            [{"prompt": t} for t in texts],
            settings,
            seed=seed + 100_003 * calls,
            batch_size=batch_size,
            finished=ended,
            progress=False,
        )
        return [(a[0], e) for a, e in zip(got, ended, strict=True)]

    return answer


@click.command("distill", short_help="The teacher's next-token distributions for KD.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="The teacher: for replay against forgetting, the base model of the run.",
)
@out_file_option("Chat JSONL with the teacher's top-k log-probabilities (Axolotl KD format).")
@click.option("--top-k", type=int, default=16, show_default=True, help="Entries per position.")
@click.option(
    "--gold",
    multiple=True,
    help="A `data mix` source name (or an input file's stem) whose records are what the "
    "run teaches: their answers are the target (cross-entropy), not the teacher's "
    "distribution. Repeatable.",
)
@click.option(
    "--chat-template",
    default="tokenizer_default",
    show_default=True,
    help="The recipe's `chat_template`: the rows must match the tokens Axolotl makes.",
)
@click.option("--sequence-len", type=int, default=2048, show_default=True,
              help="The recipe's `sequence_len`; a longer record is rejected.")  # fmt: skip
@click.option(
    "--batch-size", type=int, default=8, show_default=True, help="Records per forward pass."
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, mps.")
def data_distill(
    inputs, model_path, out, top_k, gold, chat_template, sequence_len, batch_size, device
) -> None:
    """Knowledge distillation data: the teacher's next-token distribution on every record.

    Each chat record gains, at every token position, the teacher's top-k next tokens and
    log-probabilities, in the form Axolotl's KD trainer reads (`plugins:
    [axolotl.integrations.kd.KDPlugin]`, dataset `type:
    axolotl.integrations.kd.chat_template`, `logprobs_field: logprobs`). With the base
    model as teacher on self-replay records, training pulls the tuned model toward the
    base's whole distribution on those prompts (the exact KL), not toward one answer.
    Records of a `--gold` source keep their own answer as the target. Tokenisation is
    Axolotl's chat-template strategy with the given template and length, so the rows line
    up with the trainer's tokens. Records that cannot be tokenised, have no assistant
    turn or are too long go to the rejects file; a killed run resumes.

    \b
    Example (the facts study's `chat-replay50-distilled` format):
      cosmosage data distill build/data/facts/replay50-drawn.jsonl --gold facts \\
        --model build/models/smollm2-135m-instruct --sequence-len 256 \\
        --out build/data/facts/replay50-distilled.jsonl
    """
    from transformers import AutoModelForCausalLM

    from cosmosage.dataprep.synth.distill import DistillConfig, run_distill
    from cosmosage.dataprep.tokenizer import load_tokenizer

    cfg = DistillConfig(
        inputs=list(inputs), out=out, model=str(model_path), top_k=top_k, gold=tuple(gold),
        chat_template=chat_template, sequence_len=sequence_len, batch_size=batch_size,
        device=device,
    )  # fmt: skip
    tokenizer = load_tokenizer(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype="float32").to(device)
    click.echo(json.dumps(run_distill(cfg, model.eval(), tokenizer, echo=click.echo)))


COMMANDS = [data_synth, data_grade, data_metaqa, data_replay, data_distill]
