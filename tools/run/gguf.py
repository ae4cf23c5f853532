"""`cosmosage model quantize`: a run's model (or any model folder) as GGUF files, each
loaded by llama.cpp, then asked the run's own suites with its own settings, so the
table shows what quantization cost next to the run's transformers scores."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cosmosage.dataprep.records import DataError
from cosmosage.tools.paths import RunFolder


def quantize_source(
    source: str,
    kinds: str,
    out: Path | None,
    suites: list[str],
    evaluate: bool,
    runs_dir: Path,
    echo: Callable[[str], None] = print,
) -> dict:
    """GGUF files of a run (its publish/ folder, into RUN/gguf) or a model folder (into
    FOLDER-gguf), evaluated on `suites` or the run's own; quantize.json beside them."""
    from cosmosage.tools.eval.generation import preset
    from cosmosage.tools.eval.report import pct
    from cosmosage.tools.models.quantize import parse_types, quantize_model

    types = parse_types(kinds)
    run_scores = None
    if run := RunFolder.of(source, runs_dir):
        model_dir, name = run.publish, run.record()["recipe"].rsplit("/", 1)[-1]
        out = out or run.gguf
        run_scores = run.read_scores()
    else:
        path = Path(source)
        if not path.is_dir():
            raise DataError(f"{source}: no such run or folder")
        model_dir, name = path, path.name
        out = out or path.with_name(path.name + "-gguf")
    info = quantize_model(model_dir, out, types, name, echo=echo)
    for f in info["files"].values():
        echo(f"  {f['file']:40} {f['bytes'] / 1e6:8.1f} MB  generates: {f['smoke'].strip()!r}")
    suite_list = list(suites) or list((run_scores or {}).get("suites") or [])
    if evaluate and suite_list:
        settings = preset((run_scores or {}).get("preset") or {"preset": "greedy"})
        files = {k: Path(out) / f["file"] for k, f in info["files"].items()}
        scores = evaluate_gguf(files, model_dir, suite_list, settings)
        if run_scores and not suites:
            final = list(run_scores["models"])[-1]
            scores = {f"{final} (transformers)": run_scores["scores"][final], **scores}
        info["eval"] = {"suites": suite_list, "settings": settings, "scores": scores}
        (Path(out) / "quantize.json").write_text(json.dumps(info, indent=2) + "\n")
        keys = ["general", "trained", "held_out", "all"]
        echo("| model | " + " | ".join(keys) + " |")
        echo("|---" * (len(keys) + 1) + "|")
        for label, s in scores.items():
            echo(f"| {label} | " + " | ".join(pct(s.get(k)) for k in keys) + " |")
    echo(f"wrote {out} (Modelfile for {info['files'][types[-1]]['file']})")
    return info


def evaluate_gguf(
    files: dict[str, Path], tokenizer_dir: Path, suites: list[str], settings: dict
) -> dict[str, dict]:
    """Pass rates of each GGUF on the prompt suites, scored as `cosmosage eval` scores."""
    from cosmosage.tools.eval.evaluate import ROW_KEYS, rates
    from cosmosage.tools.eval.scorers import score
    from cosmosage.tools.eval.suites import load_suites
    from cosmosage.tools.models.quantize import GgufGenerator

    prompts = [p for p in load_suites(suites) if p["score"] != "judge"]
    rows = [{k: p[k] for k in ROW_KEYS if k in p} for p in prompts]
    out = {}
    for kind, path in files.items():
        gen = GgufGenerator(path, tokenizer_dir)
        answers = [a[0] for a in gen.answers(prompts, settings)]
        for row, prompt, answer in zip(rows, prompts, answers, strict=True):
            row[f"{kind}_pass"], _ = score(answer, prompt)
        out[kind] = rates(rows, kind)
        del gen
    return out
