"""The options every model-driven data command shares (`data synth|grade|replay|questions|
entigraph`): the endpoint (or a local server with --serve), sampling, retries and the
journal's settings, and the one way they become a job's endpoint and config."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import click


def endpoint_options(f):
    for opt in reversed(
        [
            click.option(
                "--base-url",
                default=None,
                help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (or --serve).",
            ),
            click.option("--model", default=None, help="Model name the server knows."),
            click.option(
                "--serve",
                "serve_dir",
                default=None,
                type=click.Path(exists=True, file_okay=False),
                help="Instead of --base-url/--model: serve this local model folder with "
                "`transformers serve` on 127.0.0.1 for the length of the run.",
            ),
            click.option(
                "--api-key-env",
                default="OPENAI_API_KEY",
                show_default=True,
                help="Environment variable holding the API key (local servers need none).",
            ),
            click.option(
                "--concurrency",
                type=int,
                default=8,
                show_default=True,
                help="Requests in flight at once.",
            ),
            click.option(
                "--timeout",
                type=float,
                default=120.0,
                show_default=True,
                help="Seconds per request.",
            ),
            click.option(
                "--retries",
                type=int,
                default=5,
                show_default=True,
                help="Retries on 408/409/429/5xx/timeouts/malformed answers before rejecting.",
            ),
            click.option(
                "--backoff",
                type=float,
                default=1.0,
                show_default=True,
                help="Base of the exponential backoff, seconds (full jitter, capped at 60).",
            ),
            click.option(
                "--prompt-change",
                type=click.Choice(["stop", "continue", "regenerate"]),
                default="stop",
                show_default=True,
                help="When the journal holds items from an older prompt version: stop and report, "
                "keep them and use the new version for the rest, or make them again.",
            ),
            click.option(
                "--retry-failed",
                is_flag=True,
                help="On resume, try again the items whose requests failed.",
            ),
        ]
    ):
        f = opt(f)
    return f


def sampling_options(f):
    for opt in reversed(
        [
            click.option(
                "--temperature",
                type=float,
                default=None,
                help="Sampling temperature (default: the prompt's `sampling`, else the command's own: "
                "synth 0.7, grade and the others 0).",
            ),
            click.option(
                "--top-p",
                type=click.FloatRange(0.0, 1.0),
                default=None,
                help="Nucleus sampling: keep the smallest set of tokens whose probability "
                "reaches P (default: the prompt's, else the server's).",
            ),
            click.option(
                "--max-tokens",
                type=int,
                default=None,
                help="Most tokens per answer (default: the prompt's `sampling`, else the command's "
                "own, e.g. synth 1024, grade 512).",
            ),
            click.option(
                "--sampling-seed",
                type=int,
                default=None,
                help="The model's sampling seed, sent with each request (servers that take one).",
            ),
            click.option(
                "--json-mode",
                is_flag=True,
                help="Ask for response_format json_object (servers that support it).",
            ),
        ]
    ):
        f = opt(f)
    return f


def build_sampling(temperature, top_p, max_tokens, sampling_seed, json_mode) -> dict:
    """The sampling settings given on the command line; they override the prompt's
    `sampling` and the command's defaults (synth 0.7/1024, grade 0/512)."""
    s = {}
    if temperature is not None:
        s["temperature"] = temperature
    if max_tokens is not None:
        s["max_tokens"] = max_tokens
    if top_p is not None:
        s["top_p"] = top_p
    if sampling_seed is not None:
        s["seed"] = sampling_seed
    if json_mode:
        s["response_format"] = {"type": "json_object"}
    return s


@contextlib.contextmanager
def endpoint_for(base_url, model, serve_dir, api_key_env, timeout):
    """The endpoint the options name; with --serve, a local `transformers serve` of the
    folder, started here, healthy before the first request, and stopped afterwards."""
    from cosmosage.dataprep.synth.llm import Endpoint

    if serve_dir and (base_url or model):
        raise click.UsageError("--serve starts its own server: leave out --base-url and --model")
    if not serve_dir:
        if not base_url or not model:
            raise click.UsageError(
                "give --base-url and --model (a running server), or --serve MODEL_DIR"
            )
        yield Endpoint(base_url, model, api_key_env, timeout)
        return
    from cosmosage.dataprep.synth.serve import transformers_serve

    folder = Path(serve_dir).resolve()
    cache = Path(tempfile.mkdtemp(prefix="cosmosage-serve-"))
    log = cache / "serve.log"
    click.echo(f"serving {folder} with transformers serve (log: {log}, kept if it fails)", err=True)
    done = False
    try:
        with transformers_serve(folder, cache, continuous_batching=True) as server:
            yield Endpoint(server.base_url, server.model, api_key_env, timeout)
        done = True
    finally:
        if done:
            shutil.rmtree(cache, ignore_errors=True)
        elif log.exists():
            click.echo(f"the server's log is kept: {log}", err=True)


@contextlib.contextmanager
def journaled_job(job: dict):
    """From the options every model-driven command shares (endpoint_options,
    sampling_options): the endpoint (a local server with --serve) and the settings every
    journaled job's config takes."""
    from cosmosage.dataprep.synth.llm import RetryPolicy

    with endpoint_for(
        job["base_url"], job["model"], job["serve_dir"], job["api_key_env"], job["timeout"]
    ) as endpoint:
        yield (
            endpoint,
            {
                "sampling": build_sampling(
                    job["temperature"],
                    job["top_p"],
                    job["max_tokens"],
                    job["sampling_seed"],
                    job["json_mode"],
                ),
                "concurrency": job["concurrency"],
                "retry": RetryPolicy(retries=job["retries"], base=job["backoff"]),
                "prompt_change": job["prompt_change"],
                "retry_failed": job["retry_failed"],
            },
        )


def run_journaled(job: dict, run, make_config) -> None:
    """A journaled job from the shared options: its endpoint (a local server with
    --serve), its config (`make_config(endpoint, common settings)`), the run with its
    notes on stderr, its summary printed as JSON. Ctrl-C says how to continue."""
    import json

    with journaled_job(job) as (endpoint, common):
        cfg = make_config(endpoint, common)
        try:
            res = run(cfg, echo=lambda m: click.echo(m, err=True))
        except KeyboardInterrupt:
            raise click.ClickException(
                "stopped; every finished item is in the journal: run the same command again "
                "to continue"
            ) from None
    click.echo(json.dumps(res))
