"""Multiple-choice benchmarks scored by log-likelihood, the way MMLU and AstroMLab-1 are.

A benchmark is a JSONL file, one question a line:

    {"id": "q1", "question": "...", "choices": ["...", "...", "..."], "answer": 2}

The model is shown the question and asked for each choice how likely that choice is as the
continuation; the most likely one is its answer. lm-evaluation-harness does the scoring:
this module only checks the file, writes a task for it and reads the results back.

Two styles:

- ``letters``: the prompt lists the options as ``A. ...``, ``B. ...`` and ends with
  ``Answer:``; the choices scored are `` A``, `` B``, ... (as MMLU and AstroMLab-1 ask).
- ``options``: the prompt is ``Question: ...`` then ``Answer:``; the choices scored are the
  option texts themselves (as ARC). ``acc_norm`` divides each choice's log-likelihood by
  its length in characters, so long options are not penalised; at ~100M parameters this
  is the informative figure, since letter answers sit near chance.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from cosmosage.dataprep.io import read_jsonl
from cosmosage.dataprep.records import DataError, Reject, where

STYLES = ("letters", "options")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TASK_PREFIX = "cosmosage_mc_"


def load_benchmark(path: str | Path) -> list[dict]:
    """Read and check a benchmark file; a bad line raises DataError naming file:line: field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such benchmark file")
    questions: list[dict] = []
    seen: dict[str, int] = {}
    for lineno, rec in read_jsonl(path):
        if isinstance(rec, Reject):
            raise DataError(f"{where(path, lineno)}: {rec.reason}")
        at = where(path, lineno)
        qid = rec.get("id")
        if isinstance(qid, bool) or not isinstance(qid, str | int) or str(qid).strip() == "":
            raise DataError(f"{at}: id: missing, or not a non-empty string or integer")
        qid = str(qid)
        if qid in seen:
            raise DataError(f"{at}: id: {qid!r} already used on line {seen[qid]}")
        seen[qid] = lineno
        question = rec.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{at}: question: missing or not non-empty text")
        choices = rec.get("choices")
        if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS):
            raise DataError(f"{at}: choices: expected a list of 2 to {len(LETTERS)} options")
        for i, choice in enumerate(choices):
            if not isinstance(choice, str) or not choice.strip():
                raise DataError(f"{at}: choices[{i}]: missing or not non-empty text")
        stripped = [c.strip() for c in choices]
        if len(set(stripped)) != len(stripped):
            raise DataError(f"{at}: choices: two options have the same text")
        answer = rec.get("answer")
        if isinstance(answer, bool) or not isinstance(answer, int):
            raise DataError(f"{at}: answer: expected the index of the correct choice (an integer)")
        if not 0 <= answer < len(choices):
            raise DataError(f"{at}: answer: {answer} is not an index into {len(choices)} choices")
        questions.append(
            {"id": qid, "question": question.strip(), "choices": stripped, "answer": answer}
        )
    if not questions:
        raise DataError(f"{path}: no questions")
    return questions


def prompt_for(question: dict, style: str) -> tuple[str, list[str]]:
    """The context shown to the model and the choices scored after it (lm-eval puts one
    space between them)."""
    if style == "letters":
        lines = [question["question"]]
        lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(question["choices"])]
        lines.append("Answer:")
        return "\n".join(lines), list(LETTERS[: len(question["choices"])])
    if style == "options":
        return f"Question: {question['question']}\nAnswer:", list(question["choices"])
    raise ValueError(f"style must be one of {', '.join(STYLES)}, not {style!r}")


def task_name(benchmark: str | Path, style: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", Path(benchmark).stem).strip("_") or "benchmark"
    return f"{TASK_PREFIX}{stem}_{style}"


def write_task(benchmark: str | Path, style: str, folder: str | Path) -> str:
    """Check `benchmark` and write an lm-eval task for it into `folder` (a YAML file and the
    questions with their prompts); return the task's name, to run with include_path=folder."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, not {style!r}")
    return _write_task(load_benchmark(benchmark), task_name(benchmark, style), style, folder)


def _write_task(questions: list[dict], name: str, style: str, folder: str | Path) -> str:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for q in questions:
            context, labels = prompt_for(q, style)
            row = {**q, "prompt": context, "labels": labels}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    task = {
        "task": name,
        "dataset_path": "json",
        # the datasets cache stays in the folder, so nothing is left behind in ~/.cache
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "cache")},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",
        "doc_to_choice": "labels",
        "doc_to_target": "answer",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return name


@contextlib.contextmanager
def quiet_lm_eval() -> Iterator[None]:
    """Keep lm-eval's info and warning messages out of the way; errors still show.

    Its progress bars (and datasets' "Generating test split") go to a buffer instead of
    the terminal: on a 20-question file they last a second and, in a log, each is a line
    of carriage-returned fragments. Where lm-eval fails, what it wrote is printed first."""
    loggers = [logging.getLogger(n) for n in ("lm_eval", "lm-eval")]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise
    finally:
        for lg, level in zip(loggers, before, strict=True):
            lg.setLevel(level)


def _number(value: Any) -> float | None:
    """A metric as a float; None where lm-eval has none (its "N/A", or NaN)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _per_question(samples: list[dict]) -> list[dict]:
    """One row per question from lm-eval's logged samples, in file order."""
    rows = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        doc = s["doc"]
        lls = [float(r[0]) for r in s["filtered_resps"]]
        lengths = [float(len(c)) for c in doc["labels"]]
        predicted = max(range(len(lls)), key=lambda i: (lls[i], -i))
        predicted_norm = max(range(len(lls)), key=lambda i: (lls[i] / lengths[i], -i))
        rows.append(
            {
                "id": doc["id"],
                "answer": doc["answer"],
                "predicted": predicted,
                "correct": bool(s["acc"]),
                "predicted_norm": predicted_norm,
                "correct_norm": bool(s["acc_norm"]),
                "loglikelihoods": lls,
            }
        )
    return rows


def run_mc(
    model_path: str | Path,
    benchmark: str | Path,
    *,
    style: str = "options",
    limit: int | None = None,
    batch_size: int = 8,
) -> dict:
    """Score a causal LM on a multiple-choice benchmark file with lm-evaluation-harness.

    Returns {"benchmark", "style", "n", "acc", "acc_stderr", "acc_norm", "acc_norm_stderr",
    "questions": [{"id", "answer", "predicted", "correct", "predicted_norm", "correct_norm",
    "loglikelihoods"}]}: `predicted` is the choice with the highest summed log-probability
    (what `acc` counts), `predicted_norm` the highest per character (what `acc_norm` counts).
    `limit` scores only the first questions of the file.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, not {style!r}")
    if limit is not None and limit < 1:
        raise ValueError("limit must be a positive number of questions")
    model_path = Path(model_path)
    if not (model_path / "config.json").is_file():
        raise DataError(f"{model_path}: not a model folder (no config.json)")
    questions = load_benchmark(benchmark)

    import lm_eval
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="cosmosage-mc-") as tmp:
        name = _write_task(questions, task_name(benchmark, style), style, tmp)
        with quiet_lm_eval():
            manager = TaskManager(include_path=tmp, include_defaults=False)
            out = lm_eval.simple_evaluate(
                model="hf",
                model_args={"pretrained": str(model_path), "dtype": "float32"},
                tasks=[name],
                device="cpu",
                batch_size=batch_size,
                limit=limit,
                task_manager=manager,
                log_samples=True,
            )
    if out is None:  # only on a non-zero rank of a distributed run
        raise RuntimeError("lm-evaluation-harness returned no results")
    res = out["results"][name]
    questions = _per_question(out["samples"][name])
    return {
        "benchmark": Path(benchmark).stem,
        "style": style,
        "n": len(questions),
        "acc": _number(res.get("acc,none")),
        "acc_stderr": _number(res.get("acc_stderr,none")),
        "acc_norm": _number(res.get("acc_norm,none")),
        "acc_norm_stderr": _number(res.get("acc_norm_stderr,none")),
        "questions": questions,
    }
