"""`cosmosage data` commands for conversation data: convert, mix, facts, structured, inspect.

Each command is a few lines over a function in dataprep/; bad records go to the rejects
file beside the output, with file, line and reason.
"""

from __future__ import annotations

import sys

import click

from cosmosage.tools.cli.common import echo_json, out_dir_option, out_file_option, shard_option


def system_rules(specs) -> list:
    """`--system-rule` values parsed; a malformed one is a usage error naming it."""
    from cosmosage.dataprep.chat.messages import SystemRule

    try:
        return [SystemRule.parse(r) for r in specs]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--system-rule") from None


@click.command("convert", short_help="Q&A files of any common format -> chat JSONL.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@out_file_option("Output JSONL ({'messages': [...]} per line).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "messages", "sharegpt", "alpaca", "camel", "columns"]),
    default="auto",
    show_default=True,
    help="Input layout; auto recognises messages, ShareGPT, camel-ai and Alpaca records.",
)
@click.option(
    "--map",
    "mapping",
    multiple=True,
    metavar="ROLE=COLUMN",
    help="Column mapping for CSV/JSONL rows (user=, assistant=, system=); a value with {col} is a pattern.",
)
@click.option("--system-prompt", default=None, help="System message added where a record has none.")
@click.option(
    "--system-rule",
    "rules",
    multiple=True,
    metavar="COND=TEXT",
    help="System message chosen per record; first match wins (e.g. 'answer_chars<300=Answer briefly.', 'default=...').",
)
@click.option(
    "--replace-system",
    is_flag=True,
    help="Replace a record's own system message by the chosen one.",
)
@click.option(
    "--tokenizer",
    default=None,
    help="Model folder or Hub id to count tokens with (through its chat template).",
)
@click.option(
    "--sequence-len",
    type=int,
    default=None,
    help="Reject conversations longer than this many tokens (needs --tokenizer).",
)
@shard_option("each row's content hash")
def data_convert(
    inputs, out, fmt, mapping, system_prompt, rules, replace_system, tokenizer, sequence_len, shard
) -> None:
    """Q&A files (ShareGPT, Alpaca, camel-ai, messages, or any CSV/JSONL with --map) -> chat JSONL.

    \b
    Examples:
      cosmosage data convert slimorca.jsonl --out chat.jsonl
      cosmosage data convert physics.jsonl --format camel --system-rule 'answer_chars<400=Answer briefly.' --system-rule 'default=Explain step by step.' --out physics.chat.jsonl
      cosmosage data convert qa.csv --map user=question --map assistant=answer --out qa.chat.jsonl
    """
    from cosmosage.dataprep.chat.convert import ConvertOptions, build_convert
    from cosmosage.dataprep.chat.messages import parse_mapping
    from cosmosage.dataprep.shard import Shard, shard_output

    opts = ConvertOptions(
        fmt=fmt,
        mapping=parse_mapping(mapping) if mapping else None,
        system_prompt=system_prompt,
        system_rules=system_rules(rules),
        replace_system=replace_system,
    )
    shard_spec = Shard.parse(shard)
    out = shard_output(out, shard_spec)
    result = build_convert(list(inputs), out, opts, tokenizer, sequence_len, shard_spec)
    for name in result.get("rule_fields_in_no_row", []):
        click.echo(
            f"warning: --system-rule field:{name}=...: no input row has a field {name!r}, so "
            "the rule matched nothing (the field names are the input's, e.g. camel's `topic;`)",
            err=True,
        )
    echo_json(result)


@click.command("mix", short_help="Mix chat sources by token share or count.")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Override the spec's `out` (single-output specs).",
)
@click.option("--val-out", type=click.Path(dir_okay=False), help="Override the spec's `val_out`.")
@click.option(
    "--tokenizer",
    default=None,
    help="Override the spec's tokenizer (tokens are counted through its chat template).",
)
@click.option("--seed", type=int, default=None, help="Override the spec's seed.")
@click.option(
    "--stage", "stages", multiple=True, help="Only write these stages of a curriculum spec."
)
def data_mix(spec, files, out, val_out, tokenizer, seed, stages) -> None:
    """Mix chat sources by token share or count, per curriculum stage, as SPEC.yaml says.

    FILES, if given, must be local sources named in the spec: listing them lets a
    recipe's build see when an input changed.

    Sources are local JSONL/CSV files or Hub datasets (loaded with `datasets`, streamed);
    conversations are deduplicated across sources and each source keeps a held-out
    validation slice. The manifest beside each output gives requested and realized
    token shares. See docs/chat-data.md for the spec format.

    \b
    Example:
      cosmosage data mix samples/mix/quickstart.yaml samples/qa/cosmology_qa.jsonl samples/general/chat.jsonl
    """
    from pathlib import Path

    from cosmosage.dataprep.chat.mix import build_mix, load_spec

    parsed = load_spec(spec, {"out": out, "val_out": val_out, "tokenizer": tokenizer, "seed": seed})
    local = {Path(s.path).resolve() for s in parsed.sources if s.path}
    strays = [f for f in files if Path(f).resolve() not in local]
    if strays:
        raise click.UsageError(f"{', '.join(strays)}: not a source of {spec}")
    res = build_mix(parsed, list(stages) or None)
    for st in res["stages"]:
        shares = ", ".join(
            f"{name} {v['realized']:.1%}"
            + (f" (asked {v['requested']:.1%})" if v["requested"] is not None else "")
            for name, v in st["shares"].items()
        )
        click.echo(
            f"{st['stage']}: {st['records']} conversations, {st['tokens']} tokens -> {st['output']}  [{shares}]",
            err=True,
        )
        for name, got in st.get("short_counts", {}).items():
            click.echo(
                f"warning: {st['stage']}: source {name} gave {got} conversations asked by its "
                "`count` (it has no more usable ones; `repeat: true` repeats them)",
                err=True,
            )
        if st.get("val_output") and not st.get("val_records"):
            click.echo(
                f"warning: {st['stage']}: {st['val_output']} is empty: the spec holds out "
                "nothing (set `validation:` to a fraction)",
                err=True,
            )
    echo_json(res)


@click.command("facts", short_help="A fact table -> chat Q&A and recall suites.")
@click.argument("table", type=click.Path(exists=True, dir_okay=False))
@out_dir_option("Folder for the renderings, recall.yaml and facts.rejects.jsonl.")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Chooses the held-out wordings and the dialogue lines.",
)
@click.option(
    "--held-out",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Question wordings per fact kept out of training and asked only by recall.yaml "
    "(at least one wording always trains).",
)
@click.option(
    "--speakers",
    default="Alex,Sam",
    show_default=True,
    help="The two people in the dialogue rendering.",
)
@click.option(
    "--kind",
    type=click.Choice(["domain", "general"]),
    default="domain",
    show_default=True,
    help="Kind of the recall prompts.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Keep only the first N usable facts of the table (a quicker run).",
)
def data_facts(table, out_dir, seed, held_out, speakers, kind, limit) -> None:
    """A fact table (YAML or CSV: subject, relation, object; optional sentence pattern and
    question wordings) -> statements, Question/Answer pairs, two-person dialogues, chat
    records and a recall prompt suite with trained and held-out wordings.

    Without a sentence pattern the relation is read as it stands: a name (temperature)
    gives "The temperature of S is O.", a verb phrase (was awarded to) "S was awarded to O.".

    \b
    Examples:
      cosmosage data facts samples/facts/cosmology_facts.yaml --out-dir build/data/facts
      cosmosage data facts prizes.csv --held-out 1 --seed 3 --out-dir build/data/prizes
      cosmosage data facts samples/facts/cosmology_facts.yaml --limit 8 --out-dir build/data/few
      cosmosage eval build/models/x --suite build/data/facts/recall.yaml
    """
    from cosmosage.dataprep.chat.facts import build_facts

    names = [s.strip() for s in speakers.split(",")]
    if len(names) != 2 or not all(names):
        raise click.BadParameter("give two names separated by a comma", param_hint="--speakers")
    echo_json(build_facts(table, out_dir, seed, (names[0], names[1]), kind, held_out, limit))


@click.command("structured", short_help="(text, JSON target) pairs -> extraction chats.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--schema",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="JSON Schema (.json or .yaml) every target must match.",
)
@out_file_option("Chat JSONL of the extraction pairs (manifest and rejects beside it).")
@click.option(
    "--instruction", default=None, help="System message telling the model what to extract."
)
@click.option("--include-schema", is_flag=True, help="Append the schema to the system message.")
@click.option(
    "--text-field", default="text", show_default=True, help="The field holding the source text."
)
@click.option(
    "--target-field",
    default="target",
    show_default=True,
    help="The field holding the target, checked against the schema.",
)
@click.option(
    "--indent", type=int, default=None, help="Indent the JSON answers (default: one line)."
)
def data_structured(
    inputs, schema, out, instruction, include_schema, text_field, target_field, indent
) -> None:
    """(text, JSON target) pairs -> conversations whose assistant turn is schema-valid JSON.

    \b
    Example:
      cosmosage data structured samples/structured/canto_refs.jsonl --schema samples/structured/canto_refs.schema.yaml \\
        --instruction 'List every canto and line reference in the text as JSON.' --out build/data/refs.jsonl
    """
    from cosmosage.dataprep.chat.structured import build_structured

    echo_json(
        build_structured(
            list(inputs), out, schema, instruction, include_schema, text_field, target_field, indent
        )
    )


@click.command("inspect", short_help="Show which tokens of chat files train, as Axolotl sees them.")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--model",
    default=None,
    help="Model folder (or Hub id) whose tokenizer and chat template to use.",
)
@click.option(
    "--recipe",
    "recipe_name",
    default=None,
    help="Take the model and chat_template settings from this recipe.",
)
@click.option(
    "--dataset-index",
    type=int,
    default=0,
    show_default=True,
    help="Which datasets: entry of the recipe.",
)
@click.option(
    "--limit",
    type=int,
    default=50,
    show_default=True,
    help="Check at most this many conversations.",
)
@click.option(
    "--show",
    type=int,
    default=2,
    show_default=True,
    help="Print this many conversations token by token.",
)
@click.option(
    "--train-on-inputs/--no-train-on-inputs",
    default=None,
    help="Override train_on_inputs (default false).",
)
@click.option(
    "--roles-to-train", default=None, help="Comma-separated roles (dataset key roles_to_train)."
)
@click.option(
    "--train-on-eos",
    type=click.Choice(["turn", "all", "last", "none"]),
    default=None,
    help="Override train_on_eos: which eos tokens train (default: the recipe's, else turn).",
)
@click.option(
    "--eot-token",
    "eot_tokens",
    multiple=True,
    help="End-of-turn token(s) (cfg eot_tokens); default eos.",
)
@click.option(
    "--sequence-len",
    type=click.IntRange(min=1),
    default=None,
    help="Report conversations longer than this, which Axolotl drops (default: the "
    "recipe's, else 2048).",
)
@click.option(
    "--chat-template",
    default=None,
    help="Axolotl chat_template choice (default tokenizer_default).",
)
@click.option(
    "--chat-template-jinja",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A Jinja template file to use instead.",
)
@click.option(
    "--color/--no-color",
    default=None,
    help="Colour trained tokens (default: when the terminal allows).",
)
def data_inspect(
    files,
    model,
    recipe_name,
    dataset_index,
    limit,
    show,
    train_on_inputs,
    roles_to_train,
    train_on_eos,
    eot_tokens,
    sequence_len,
    chat_template,
    chat_template_jinja,
    color,
) -> None:
    """Render chat FILES through the model's chat template with Axolotl's own tokenizing
    and show which tokens train; fail if assistant turns, or the end-of-turn token, are
    not trained, or if user turns are trained with train_on_inputs false.

    \b
    Examples:
      cosmosage data inspect build/data/quickstart/chat.jsonl --model build/models/tiny-llama
      cosmosage data inspect build/data/quickstart/chat.jsonl --recipe quickstart/instruct
    """
    from pathlib import Path

    from cosmosage.dataprep.chat import inspect as it
    from cosmosage.tools.recipe.render import render

    if not (model or recipe_name):
        raise click.UsageError("give --model PATH or --recipe NAME")
    settings, model = it.resolve_settings(
        render(recipe_name).config if recipe_name else None,
        recipe_name,
        dataset_index,
        model,
        train_on_inputs=train_on_inputs,
        roles_to_train=[r.strip() for r in roles_to_train.split(",") if r.strip()]
        if roles_to_train is not None
        else None,
        train_on_eos=train_on_eos,
        eot_tokens=list(eot_tokens) or None,
        sequence_len=sequence_len,
        chat_template="jinja" if chat_template_jinja else chat_template,
        chat_template_jinja=Path(chat_template_jinja).read_text(encoding="utf-8")
        if chat_template_jinja
        else None,
    )
    loaded = it.load(model, settings)
    summary = it.inspect_files(loaded, files, limit)

    echo_records(summary, show, color is False or (color is None and not sys.stdout.isatty()))
    click.echo(
        f"checked {len(summary.records)} conversation(s) with {model}: "
        f"end-of-turn {summary.eot_names} trained after {summary.eot_trained} of {summary.eot_total} assistant turns"
    )
    failures = summary.failures()
    if not summary.records:  # nothing checked is not a pass
        skipped = f"; {len(summary.rejects)} line(s) could not be read" if summary.rejects else ""
        raise click.ClickException(
            f"no conversation to check in {', '.join(map(str, files))}{skipped}"
        )
    if failures:
        for f in failures[:20]:
            click.echo(f"FAIL  {f}")
        raise click.ClickException(
            f"chat template check failed ({len(failures)} problem(s)); see FAIL lines above"
        )
    click.echo(
        "ok    assistant turns and end-of-turn tokens train; inputs are masked"
        if not settings.train_on_inputs
        else "ok    assistant turns and end-of-turn tokens train"
    )


def echo_records(summary, show: int, plain: bool) -> None:
    """The first `show` records with their trained tokens marked (green, or « » when
    plain), then the skipped records and the warnings."""
    from cosmosage.dataprep.chat import inspect as it

    def style(piece: str, trained: bool) -> str:
        return (
            click.style(piece, fg="green", bold=True) if trained else click.style(piece, dim=True)
        )

    for rec in summary.records[:show]:
        click.echo(
            f"--- {rec.source}:{rec.line}  ({len(rec.input_ids)} tokens, {rec.trained} trained)"
        )
        click.echo(it.render_tokens(rec, None if plain else style), color=None if plain else True)
    if summary.records[:show]:
        click.echo("--- trained tokens between « »" if plain else "--- trained tokens in green")
    for r in summary.rejects:
        click.echo(f"skip  {r.source}:{r.line}: {r.reason}")
    for w in summary.warnings()[:20]:
        click.echo(f"warn  {w}")


COMMANDS = [data_convert, data_mix, data_facts, data_structured, data_inspect]
