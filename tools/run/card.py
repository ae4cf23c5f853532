"""Model cards and run summaries, written from the run record (never from memory).

The card states what the model was trained on, from what, for how long, what the
held-out loss did and what the prompt suite showed, and what it was not tested for.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from cosmosage.dataprep.io import manifest_path
from cosmosage.tools.models.merge import link_or_copy
from cosmosage.tools.recipe.render import ROOT, Rendered


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else ("-" if x is None else str(x))


def is_hub_id(name: str) -> bool:
    return (
        name.count("/") == 1
        and not name.startswith((".", "/", "build/", "runs/"))
        and not Path(name).exists()
    )


def public_path(name: str, run_dir: Path | None = None) -> str:
    """How a card names a model or data file: a Hub id as it is; a path inside the run
    folder relative to it (`pretrain/model`), one inside the project relative to the
    project (`build/models/tiny-llama`); any other machine path by its last part only."""
    if is_hub_id(name) or not Path(name).is_absolute():
        return name
    path = Path(name).resolve()
    for base in (run_dir, ROOT):
        if base is not None and path.is_relative_to(Path(base).resolve()):
            return path.relative_to(Path(base).resolve()).as_posix()
    return f".../{path.name}"


def licenses(record: dict) -> list[str]:
    """Licenses of the inputs, from the manifests beside each data file."""
    found = set()
    for stage in record["stages"].values():
        for data in stage.get("data", {}):
            man = manifest_path(data)
            if man.is_file():
                for inp in json.loads(man.read_text()).get("inputs", []):
                    if inp.get("license"):
                        found.add(inp["license"])
    return sorted(found)


EVAL_COLUMNS = [
    ("all", "all"),
    ("domain", "domain"),
    ("general", "general"),
    ("trained", "recall (trained wording)"),
    ("held_out", "recall (held-out wording)"),
    ("flagged", "flagged"),
]


def eval_table(scores: dict[str, dict]) -> list[str]:
    cols = [(k, n) for k, n in EVAL_COLUMNS if any(k in s for s in scores.values())]
    mc = sorted({k for s in scores.values() for k in s if k.startswith("mc:")})
    ppl = any("ppl" in s for s in scores.values())
    head = (
        [n for _, n in cols] + [k.removeprefix("mc:") for k in mc] + (["perplexity"] if ppl else [])
    )
    lines = ["| model | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for label, s in scores.items():
        cells = [f"{s[k]:.0%}" if k in s else "-" for k, _ in cols]
        cells += [f"{s[k]:.0%}" if k in s else "-" for k in mc]
        if ppl:
            cells.append(f"{s['ppl']:.2f}" if "ppl" in s else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def card_markdown(record: dict, top: Rendered, run_dir: Path | None = None) -> str:
    meta = top.meta.get("card") or {}
    stages = list(record["stages"].values())
    base = stages[0]["parent_model"] if stages else ""
    front = {
        "license": meta.get("license", "apache-2.0"),
        # only a Hub id means something to readers of the card; local paths do not
        **({"base_model": base} if is_hub_id(base) else {}),
        "tags": ["cosmosage", "axolotl", *meta.get("tags", [])],
        "language": meta.get("language", ["en"]),
        "pipeline_tag": "text-generation",
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", ""]
    lines.append(f"# {meta.get('title', record['recipe'])}")
    lines.append("")
    lines.append(top.meta.get("description", ""))
    lines.append("")
    if meta.get("warning"):
        lines += [f"> {meta['warning']}", ""]
    lines += ["## Lineage", ""]
    for s in stages:
        lines.append(
            f"- `{s['recipe']}`: from `{public_path(s['parent_model'], run_dir)}`, best checkpoint at step {(s.get('best_checkpoint') or {}).get('step', '-')}"
        )
    lines += ["", "## Training data", ""]
    for s in stages:
        for path, digest in s.get("data", {}).items():
            lines.append(
                f"- `{public_path(path, run_dir)}` (sha256 {digest[:12]}...), stage `{s['recipe']}`"
            )
    lic = licenses(record)
    if lic:
        lines += ["", f"Source licenses recorded in the data manifests: {', '.join(lic)}."]
    lines += ["", "## Held-out loss", "", "| stage | before | best | steps |", "|---|---|---|---|"]
    for s in stages:
        m = s["metrics"]
        lines.append(
            f"| {s['recipe']} | {_fmt(m['eval_loss_before'])} | {_fmt(m['eval_loss_best'])} | {m['steps']} |"
        )
    if record.get("eval"):
        lines += ["", "## Evaluation", ""]
        lines += [
            "Share of prompts passed per model (`base` is the starting model; recall is asked in",
            "the wordings used in training and in held-out wordings never trained on):",
            "",
        ]
        lines += eval_table(record["eval"])
        if (run_dir is not None) and (run_dir / "eval" / "scores.png").is_file():
            lines += ["", "![scores](scores.png)", "", "![loss](loss.png)"]
        for r in record.get("forgetting") or []:
            bits = []
            if "general_drop" in r:
                bits.append(f"general suite {-r['general_drop'] * 100:+.0f} pts")
            if "ppl_rise" in r:
                bits.append(f"general-text perplexity {r['ppl_rise']:+.1%}")
            if bits:
                lines.append(f"- Forgetting {r['before']} -> {r['after']}: {', '.join(bits)}")
        if record.get("consistency_auroc") is not None:
            lines.append(
                f"- Self-consistency (regenerating answers to spot invented ones): agreement "
                f"predicts correctness with AUROC {record['consistency_auroc']:.2f}"
            )
    lines += [
        "",
        "## Limitations",
        "",
        "- Answers can be wrong or invented; check them against the literature.",
        "- Not evaluated for safety, bias or long-form generation.",
        f"- Produced by `cosmosage recipe run {record['recipe']}` (run `{record['run_id']}`, recipe hash `{record['recipe_hash']}`).",
        "",
    ]
    return "\n".join(lines)


def write_publish_folder(run_dir: Path, record: dict, top: Rendered, model_dir: str) -> Path:
    """<run>/publish: the final model's files plus README.md (the card)."""
    dst = run_dir / "publish"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for f in Path(model_dir).iterdir():
        if f.is_file() and f.name != "README.md":
            link_or_copy(f, dst / f.name)
    for png in ("scores.png", "loss.png", "calibration.png"):
        if (run_dir / "eval" / png).is_file():
            shutil.copyfile(run_dir / "eval" / png, dst / png)
    (dst / "README.md").write_text(card_markdown(record, top, run_dir))
    return dst


def summary_markdown(run_dir: Path, record: dict) -> str:
    lines = [f"# Run {record['recipe']} / {record['run_id']}", "", f"Folder: `{run_dir}`", ""]
    lines += [
        "| stage | eval loss before | best | best step | steps | wall s | model |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, s in record["stages"].items():
        m = s["metrics"]
        best = (s.get("best_checkpoint") or {}).get("step", "-")
        lines.append(
            f"| {key} | {_fmt(m['eval_loss_before'])} | {_fmt(m['eval_loss_best'])} | {best} | {m['steps']} | {m['wall_s']} | `{s['model']}` |"
        )
    scores_file = run_dir / "eval" / "scores.json"
    if record.get("eval") and scores_file.is_file():
        from cosmosage.tools.run.evaluation import summary_lines

        lines += ["", *summary_lines(json.loads(scores_file.read_text()))]
        lines.append(
            f"\nReport with every answer and the plots: `{run_dir / 'eval' / 'report.md'}`"
        )
    for failure in record.get("threshold_failures") or []:
        lines.append(f"\nThreshold not met: {failure}")
    lines += ["", f"Publishable folder (model + card): `{record.get('publish')}`", ""]
    return "\n".join(lines)
