"""Ask a prompt suite of several models and score the answers against expected substrings.

A suite is YAML: `prompts: [{id, prompt, expect: [substrings], kind: domain|general}]`.
Scoring is deliberately simple and visible: an answer passes when it contains one of
the expected substrings (they are alternatives, e.g. "1100" or "1090"; case-insensitive).
Several suites can be asked together. The answers themselves are kept for reading.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from tqdm import tqdm

from cosmosage.dataprep.io import DataError


def load_suite(path: str | Path) -> list[dict]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise DataError(f"{path}:{mark.line + 1 if mark else '?'}: {exc.problem}") from exc
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(prompts, list) or not prompts:
        raise DataError(f"{path}: expected a top-level `prompts:` list")
    for i, p in enumerate(prompts):
        if not isinstance(p, dict) or not isinstance(p.get("prompt"), str):
            raise DataError(f"{path}: prompts[{i}].prompt: missing or not text")
        p.setdefault("id", f"p{i}")
        p.setdefault("expect", [])
        p.setdefault("kind", "domain")
    return prompts


def load_suites(paths: list[str | Path]) -> list[dict]:
    """Prompts of several suites; ids are prefixed with the suite's name where they clash."""
    prompts: list[dict] = []
    seen: set[str] = set()
    for path in paths:
        for p in load_suite(path):
            if p["id"] in seen:
                p["id"] = f"{Path(path).stem}/{p['id']}"
            seen.add(p["id"])
            prompts.append(p)
    return prompts


def passes(answer: str, expect: list[str]) -> bool:
    low = answer.lower()
    return any(str(e).lower() in low for e in expect)


def generate(model_path: str | Path, prompts: list[dict], max_new_tokens: int = 48) -> list[str]:
    """Greedy answers from a local model, through its chat template when it has one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.eval()
    answers = []
    for p in tqdm(prompts, desc=f"ask {Path(model_path).name}", unit="prompt", disable=None):
        if tok.chat_template:
            ids = tok.apply_chat_template(
                [{"role": "user", "content": p["prompt"]}],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )["input_ids"]
        else:
            ids = tok(p["prompt"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )
        answers.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return answers


def evaluate(
    models: dict[str, str | Path], suites: str | Path | list[str | Path], max_new_tokens: int = 48
) -> dict:
    """{label: model path} -> per-prompt answers and per-model pass rates by kind."""
    suites = [suites] if isinstance(suites, (str, Path)) else list(suites)
    prompts = load_suites(suites)
    rows = [
        {"id": p["id"], "kind": p["kind"], "prompt": p["prompt"], "expect": p["expect"]}
        for p in prompts
    ]
    scores = {}
    for label, path in models.items():
        answers = generate(path, prompts, max_new_tokens)
        for row, ans in zip(rows, answers, strict=True):
            row[label] = ans
            row[f"{label}_pass"] = passes(ans, row["expect"])
        by_kind: dict[str, list[bool]] = {}
        for row in rows:
            by_kind.setdefault(row["kind"], []).append(row[f"{label}_pass"])
        scores[label] = {k: sum(v) / len(v) for k, v in by_kind.items()}
        scores[label]["all"] = sum(r[f"{label}_pass"] for r in rows) / len(rows)
    return {
        "suite": ", ".join(map(str, suites)),
        "models": {k: str(v) for k, v in models.items()},
        "scores": scores,
        "answers": rows,
    }


def report_markdown(result: dict) -> str:
    labels = list(result["models"])
    lines = [
        "# Prompt suite",
        "",
        f"Suite: `{result['suite']}`",
        "",
        "| model | " + " | ".join(["all", "domain", "general"]) + " |",
    ]
    lines.append("|---|---|---|---|")
    for label in labels:
        s = result["scores"][label]
        cells = [
            f"{s.get(k, float('nan')):.0%}" if k in s else "-" for k in ("all", "domain", "general")
        ]
        lines.append(f"| {label} ({result['models'][label]}) | " + " | ".join(cells) + " |")
    lines += ["", "Pass = the answer contains one of the expected substrings.", ""]
    for row in result["answers"]:
        lines.append(f"## {row['id']} ({row['kind']})")
        lines.append(f"**Prompt:** {row['prompt']}  ")
        lines.append(f"**Expect:** {', '.join(map(str, row['expect']))}")
        for label in labels:
            mark = "pass" if row[f"{label}_pass"] else "fail"
            lines.append(f"- {label} [{mark}]: {row[label]!r}")
        lines.append("")
    return "\n".join(lines)
