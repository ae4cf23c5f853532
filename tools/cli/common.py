"""What every command module shares: the error handling of the root group, common
options and JSON output. Command modules import this, never the group module."""

from __future__ import annotations

import contextlib
import difflib
import json
from pathlib import Path

import click

from cosmosage.dataprep.io import WRITE_ERRNOS, all_or_nothing, rejects_path
from cosmosage.dataprep.records import DataError
from cosmosage.tools.errors import LaunchError, PublishError, RecipeError

# The project's own error types: a user can act on their message. Anything else is a
# bug and keeps its traceback.
EXPECTED_ERRORS = (RecipeError, DataError, LaunchError, PublishError)


class Group(click.Group):
    """Turns our expected errors into one clear message unless --debug is on."""

    def invoke(self, ctx: click.Context):
        # a data command's outputs stand or fall together on a full disk; a recipe run's
        # finished stages are kept whatever happens later
        together = all_or_nothing() if ctx.info_name == "data" else contextlib.nullcontext()
        try:
            with together:
                return super().invoke(ctx)
        except EXPECTED_ERRORS as exc:
            if ctx.find_root().params.get("debug"):
                raise
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            # a full disk or a read-only folder is the user's to fix, not a bug
            if ctx.find_root().params.get("debug") or exc.errno not in WRITE_ERRNOS:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}could not be written: {exc.strerror}") from exc


def echo_json(obj: dict) -> None:
    """A command's summary as one JSON line on stdout; where records were rejected, a line
    on stderr says how many and where their reasons are."""
    rejected = obj.get("rejected")
    where = rejects_file(obj)
    if isinstance(rejected, int) and rejected > 0 and where is not None and where.is_file():
        n = f"{rejected} record{'s' if rejected != 1 else ''}"
        click.echo(f"{n} rejected: {where} gives the file, line and reason of each", err=True)
    click.echo(json.dumps(obj))  # last, so the summary is the output's last line


def rejects_file(obj: dict) -> Path | None:
    """The rejects file a summary names (`outputs.rejects`), else the one beside its
    single output (`output` or `out`)."""
    outputs = obj.get("outputs")
    if isinstance(outputs, dict) and isinstance(outputs.get("rejects"), str):
        return Path(outputs["rejects"])
    output = obj.get("output") or obj.get("out")
    return rejects_path(output) if isinstance(output, str) else None


set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a key (dotted paths for nested keys; recipe.* for the recipe block).",
)
unset_option = click.option("--unset", "unsets", multiple=True, metavar="KEY", help="Remove a key.")
runs_dir_option = click.option(
    "--runs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where run folders and the registry live [default: ./runs in the project].",
)


def input_option(help: str):
    """The required --input FILE of a command that reads one JSONL file."""
    return click.option(
        "--input",
        "input_path",
        required=True,
        type=click.Path(exists=True, dir_okay=False),
        help=help,
    )


def out_file_option(help: str | None = None):
    """The required --out FILE a command writes (its manifest and rejects go beside it)."""
    return click.option("--out", required=True, type=click.Path(dir_okay=False), help=help)


def out_folder_option(help: str | None = None):
    """The required --out FOLDER a command writes a model or a set of files into."""
    return click.option("--out", required=True, type=click.Path(file_okay=False), help=help)


def out_dir_option(help: str):
    """The required --out-dir FOLDER (also --out) of a data command that writes several files."""
    return click.option(
        "--out-dir", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help=help
    )


def shard_option(key: str):
    """The one --shard option; `key` says what decides an item's shard for this command."""
    return click.option(
        "--shard",
        default=None,
        metavar="I/N",
        help=f"Process only shard I of N (0-based); an item's shard is crc32 of {key} mod N. "
        "Outputs are named OUT.shard-0000I-of-0000N.jsonl; `data merge-shards --out OUT` joins them.",
    )


class DefaultCommandGroup(click.Group):
    """A group that runs its `default` command when the first argument names none of its
    commands: `cosmosage eval MODEL ...` is `cosmosage eval run MODEL ...`."""

    default = "run"

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            close = difflib.get_close_matches(args[0], list(self.commands), n=1, cutoff=0.75)
            if close and not Path(args[0]).exists():  # a misspelt command, not a model/recipe
                raise click.UsageError(
                    f"no command {args[0]!r}; did you mean {close[0]!r}? ({ctx.command_path} "
                    f"X ... without a command is `{ctx.command_path} {self.default} X ...`)"
                )
            args = [self.default, *args]
        return super().resolve_command(ctx, args)


def build_command_problems(meta: dict, main: click.Group | None = None) -> list[str]:
    """What is wrong with each `recipe.builds` command as the CLI `main` (default: the
    running command's root group) would parse it: a command that does not exist, an
    unknown option, a missing required one. Inputs that do not exist yet are fine
    (earlier builds make them)."""
    main = main or click.get_current_context().find_root().command
    problems = []
    for b in meta.get("builds") or []:
        argv = [str(a) for a in b.get("command") or []]
        shown = "cosmosage " + " ".join(argv[:2])
        cmd, args, words = main, list(argv), ["cosmosage"]
        while isinstance(cmd, click.Group) and args:
            sub = cmd.get_command(click.Context(cmd), args[0])
            if sub is None:
                problems.append(
                    f"{b.get('output')}: `{' '.join([*words, args[0]])}` is not a command"
                )
                break
            words.append(args.pop(0))
            cmd = sub
        else:
            try:
                with _paths_may_not_exist_yet():
                    cmd.make_context(" ".join(words), args)
            except click.UsageError as exc:
                problems.append(f"{b.get('output')}: {shown}: {exc.format_message()}")
    return problems


@contextlib.contextmanager
def _paths_may_not_exist_yet():
    """Parse as the command would, except that a path need not exist: an earlier build
    makes it."""
    convert = click.Path.convert

    def lenient(self, value, param, ctx):
        exists, self.exists = self.exists, False
        try:
            return convert(self, value, param, ctx)
        finally:
            self.exists = exists

    click.Path.convert = lenient
    try:
        yield
    finally:
        click.Path.convert = convert
