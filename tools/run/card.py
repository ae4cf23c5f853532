"""Model cards and run summaries, written from the run record (never from memory).

The card states what the model was trained on, from what, for how long, what the
held-out loss did and what the prompt suite showed, how to prompt it, and what it was
not tested for. Its front matter is Hugging Face Hub metadata built with
huggingface_hub's ModelCardData: a Hub license id, base_model only when it is a Hub id,
datasets, language, tags, pipeline_tag and a model-index with the final model's scores.
Data licenses come from the data manifests; non-commercial ones are stated at the top.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from cosmosage.dataprep.io import manifest_path
from cosmosage.tools.eval.consistency import FLAG_THRESHOLD
from cosmosage.tools.eval.report import INTERVALS, rate_text
from cosmosage.tools.models.importer import RECORD as IMPORT_RECORD
from cosmosage.tools.models.merge import link_or_copy
from cosmosage.tools.paths import ROOT, RunFolder
from cosmosage.tools.recipe.render import RecipeError, Rendered
from cosmosage.tools.run.card_prompt import prompt_lines

# License identifiers the Hub knows (docs/hub/repositories-licenses); anything else is
# written as `license: other` with its name in `license_name`.
HUB_LICENSES = frozenset(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m
    bigscience-bloom-rail-1.0 bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd
    bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5
    cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0
    cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0
    cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0
    epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl
    lgpl-2.1 lgpl-3.0 isc h-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by
    odbl openmdw-1.0 openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr
    deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2
    llama3.3 llama4 grok2-community gemma unknown other""".split()
)
# CC-BY-NC-*, "by-nc-sa" in a Creative Commons URL, "non-commercial" in a name
NON_COMMERCIAL_RE = re.compile(r"(?i)(?:^|[^a-z])nc(?:[^a-z]|$)|non[- _]?commercial")


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
    """Licenses of the inputs, from the manifests beside each data file: every input's
    `license` and the per-license document counts (`licenses`) of corpus manifests."""
    found = set()
    for stage in record["stages"].values():
        for data in stage.get("data", {}):
            man = manifest_path(data)
            if man.is_file():
                manifest = json.loads(man.read_text())
                for inp in manifest.get("inputs", []):
                    if inp.get("license"):
                        found.add(str(inp["license"]))
                found.update(str(k) for k in (manifest.get("licenses") or {}))
    return sorted(found)


def non_commercial(names: list[str]) -> list[str]:
    return [n for n in names if NON_COMMERCIAL_RE.search(n)]


def hub_license(name: str) -> dict[str, str]:
    """{license: ID} for a Hub license id, else {license: other, license_name: NAME}."""
    key = name.strip().lower()
    if key in HUB_LICENSES:
        return {"license": key}
    return {"license": "other", "license_name": re.sub(r"[^a-z0-9.]+", "-", key).strip("-")}


EVAL_COLUMNS = [
    ("all", "all"),
    ("domain", "domain"),
    ("general", "general"),
    ("trained", "recall (trained wording)"),
    ("held_out", "recall (held-out wording)"),
    ("qa_fact", "closed-book (facts with trained Q&A)"),
    ("paper_only", "closed-book (facts only in the papers)"),
    ("flagged", "flagged"),
]


def eval_table(scores: dict[str, dict], counts: dict[str, dict] | None = None) -> list[str]:
    """The scores per model; a pass rate whose counts are known carries its 95% interval."""
    counts = counts or {}

    cols = [(k, n) for k, n in EVAL_COLUMNS if any(k in s for s in scores.values())]
    mc = sorted({k for s in scores.values() for k in s if k.startswith("mc:")})
    ppl = any("ppl" in s for s in scores.values())
    head = (
        [n for _, n in cols] + [k.removeprefix("mc:") for k in mc] + (["perplexity"] if ppl else [])
    )
    lines = ["| model | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for label, s in scores.items():
        cells = [rate_text(s.get(k), (counts.get(label) or {}).get(k)) for k, _ in cols]
        cells += [f"{s[k]:.0%}" if k in s else "-" for k in mc]
        if ppl:
            cells.append(f"{s['ppl']:.2f}" if "ppl" in s else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


# score key -> (dataset type, dataset name, metric type, metric name) in the model-index;
# `all` and `suite:NAME` pass rates repeat these and stay in the card's table only
INDEX_METRICS = {
    "domain": ("domain-prompts", "domain prompts", "accuracy", "share passed"),
    "general": ("general-prompts", "general prompt suite", "accuracy", "share passed"),
    "trained": ("fact-recall", "fact recall", "accuracy", "recall (trained wording)"),
    "held_out": ("fact-recall", "fact recall", "accuracy", "recall (held-out wording)"),
    "paper_only": ("closed-book", "closed-book questions", "accuracy", "paper-only facts"),
    "ppl": ("general-text", "held-out general text", "perplexity", "perplexity"),
}


def final_label(record: dict) -> str | None:
    """The evaluation label of the published model: the last stage's key, else the last
    label that is not the base model."""
    scores = record.get("eval") or {}
    keys = list(record["stages"])
    if keys and keys[-1] in scores:
        return keys[-1]
    rest = [k for k in scores if k != "base"]
    return rest[-1] if rest else None


def eval_results(record: dict) -> list:
    """huggingface_hub EvalResults of the final model (the card's model-index)."""
    from huggingface_hub import EvalResult

    label = final_label(record)
    if label is None:
        return []
    out = []
    for key, value in record["eval"][label].items():
        if not isinstance(value, int | float):
            continue
        if key in INDEX_METRICS:
            dtype, dname, mtype, mname = INDEX_METRICS[key]
        elif key.startswith("mc:"):
            name = key.removeprefix("mc:")
            dtype, dname, mtype, mname = name, f"{name} (multiple choice)", "acc_norm", "acc_norm"
        else:
            continue
        out.append(
            EvalResult(
                task_type="text-generation",
                task_name="Text Generation",
                dataset_type=dtype,
                dataset_name=dname,
                metric_type=mtype,
                metric_name=mname,
                metric_value=round(float(value), 4),
            )
        )
    return out


def hub_parents(record: dict) -> list[str]:
    """Hub ids among the models the first stage started from (a soup has several)."""
    stages = list(record["stages"].values())
    if not stages:
        return []
    first = stages[0]
    names = first.get("parents") or [first.get("parent_model", "")]
    return [hub for n in names if (hub := hub_id_of(n))]


def hub_id_of(model: str) -> str | None:
    """The Hub id of a model: itself when it is one, or what `model import --hub-id`
    recorded in a local folder's cosmosage_import.json."""
    if not model:
        return None
    if is_hub_id(model):
        return model
    folder = Path(model) if Path(model).is_absolute() else ROOT / model
    record = folder / IMPORT_RECORD
    if record.is_file():
        try:
            hub = json.loads(record.read_text()).get("hub_id")
        except ValueError:
            return None
        return hub if isinstance(hub, str) and is_hub_id(hub) else None
    return None


def card_base_models(record: dict, top: Rendered) -> list[str]:
    """The Hub ids the card names as `base_model`: `recipe.card.base_model` when it is one,
    else the Hub ids of the models the first stage started from (a local folder counts
    by the Hub id its import recorded). A card without one fails, unless the recipe says
    `card: {base_model: none}` (a model trained from scratch): the Hub files a model
    without its parent as a new one, and a reader cannot tell what was fine-tuned."""
    meta = top.meta.get("card") or {}
    declared = meta.get("base_model")
    if isinstance(declared, str) and declared.strip().lower() == "none":
        return []
    base = [b for b in ([declared] if declared else []) if is_hub_id(b)]
    base = base or hub_parents(record)
    if not base:
        stages = list(record["stages"].values())
        first = stages[0] if stages else {}
        parents = first.get("parents") or [first.get("parent_model") or "?"]
        raise RecipeError(
            f"{record['recipe']}: the model card has no base_model: the run started from "
            f"{', '.join(map(str, parents))}: no Hub id, and none recorded by `cosmosage model "
            "import --hub-id`. Set `recipe.card.base_model` to the Hub id "
            "it came from, import it with --hub-id, or set `recipe.card.base_model: none` for "
            "a model trained from scratch"
        )
    return base


def card_data(record: dict, top: Rendered):
    """The card's front matter as huggingface_hub ModelCardData (checked as it is built)."""
    from huggingface_hub import ModelCardData

    meta = top.meta.get("card") or {}
    base = card_base_models(record, top)
    datasets = [d for d in meta.get("datasets") or [] if is_hub_id(d)]
    language = meta.get("language", ["en"])
    results = eval_results(record)
    return ModelCardData(
        **hub_license(str(meta.get("license", "apache-2.0"))),
        base_model=(base[0] if len(base) == 1 else base) or None,
        datasets=datasets or None,
        language=[language] if isinstance(language, str) else list(language),
        library_name="transformers",
        tags=["cosmosage", "axolotl", *meta.get("tags", [])],
        pipeline_tag="text-generation",
        model_name=meta.get("title", record["recipe"]) if results else None,
        eval_results=results or None,
        ignore_metadata_errors=False,
    )


def lineage_line(s: dict, run_dir: Path | None) -> str:
    soup = s.get("soup")
    if soup:
        mix = " + ".join(
            f"{w:g} x `{public_path(p, run_dir)}`"
            for w, p in zip(soup.get("weights") or [], s.get("parents") or [], strict=False)
        )
        base = f" (base `{public_path(soup['base'], run_dir)}`)" if soup.get("base") else ""
        return f"- `{s['recipe']}`: model soup ({soup.get('method')}) of {mix}{base}"
    return (
        f"- `{s['recipe']}`: from `{public_path(s['parent_model'], run_dir)}`, best checkpoint "
        f"at step {(s.get('best_checkpoint') or {}).get('step', '-')}"
    )


def limitation_lines(record: dict) -> list[str]:
    """What the evaluation measured that limits the model, in sentences."""
    lines = []
    label = final_label(record)
    final = (record.get("eval") or {}).get(label or "", {})
    base = (record.get("eval") or {}).get("base", {})
    if "held_out" in final:
        trained = f" ({final['trained']:.0%} in the trained wordings)" if "trained" in final else ""
        lines.append(
            f"- Recalls {final['held_out']:.0%} of the trained facts when asked in wordings it "
            f"never saw{trained}."
        )
    if "paper_only" in final:
        lines.append(
            f"- Answers {final['paper_only']:.0%} of closed-book questions about facts that were "
            "only in its training papers (no Q&A about them was trained)"
            + (
                f", {final['qa_fact']:.0%} about facts with trained Q&A."
                if "qa_fact" in final
                else "."
            )
        )
    if "general" in final and "general" in base:
        lines.append(
            f"- General prompt suite: {final['general']:.0%} passed, against "
            f"{base['general']:.0%} for the starting model."
        )
    if "flagged" in final:
        lines.append(
            f"- Self-consistency flags {final['flagged']:.0%} of its scored answers (regenerated "
            f"answers agree below {FLAG_THRESHOLD:g}); treat flagged answers as likely invented."
        )
    for failure in record.get("threshold_failures") or []:
        lines.append(f"- Evaluation threshold not met: {failure}.")
    return lines


def evaluation_lines(record: dict, run_dir: Path | None) -> list[str]:
    """The card's Evaluation section: scores with intervals, plots, forgetting and the
    self-consistency check; nothing for a run without an evaluation."""
    if not record.get("eval"):
        return []
    lines: list[str] = []
    lines += ["## Evaluation", ""]
    lines += [
        "Share of prompts passed per model (`base` is the starting model; recall is asked in",
        "the wordings used in training and in held-out wordings never trained on):",
        "",
    ]
    scores_file = None if run_dir is None else RunFolder(run_dir).scores
    counts = None
    if scores_file is not None and scores_file.is_file():
        counts = json.loads(scores_file.read_text()).get("counts")
    if counts:
        lines += [INTERVALS, ""]
    lines += eval_table(record["eval"], counts)
    if (run_dir is not None) and (RunFolder(run_dir).eval_dir / "scores.png").is_file():
        lines += ["", "![scores](scores.png)", "", "![loss](loss.png)", ""]
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
    lines.append("")
    return lines


def card_markdown(
    record: dict, top: Rendered, run_dir: Path | None = None, model_dir: str | Path | None = None
) -> str:
    meta = top.meta.get("card") or {}
    stages = list(record["stages"].values())
    data = card_data(record, top)
    lines = ["---", data.to_yaml().strip(), "---", ""]
    lines.append(f"# {meta.get('title', record['recipe'])}")
    lines.append("")
    lic = licenses(record)
    nc = non_commercial(lic)
    if nc:
        lines += [
            f"> **Non-commercial use only.** Part of the training data is licensed "
            f"{', '.join(nc)}: this model and its outputs may not be used commercially.",
            "",
        ]
    lines.append(top.meta.get("description", ""))
    lines.append("")
    if meta.get("warning"):
        lines += [f"> {meta['warning']}", ""]
    lines += ["## Lineage", ""]
    for s in stages:
        lines.append(lineage_line(s, run_dir))
    lines += ["", "## Training data", ""]
    for s in stages:
        for path, digest in s.get("data", {}).items():
            lines.append(
                f"- `{public_path(path, run_dir)}` (sha256 {digest[:12]}...), stage `{s['recipe']}`"
            )
    if not any(s.get("data") for s in stages):
        lines.append("- None recorded for this run's own stages (see the lineage).")
    if lic:
        lines += ["", f"Source licenses recorded in the data manifests: {', '.join(lic)}."]
    lines += ["", "## Held-out loss", "", "| stage | before | best | steps |", "|---|---|---|---|"]
    for s in stages:
        m = s["metrics"]
        lines.append(
            f"| {s['recipe']} | {_fmt(m['eval_loss_before'])} | {_fmt(m['eval_loss_best'])} | {m['steps']} |"
        )
    lines.append("")
    lines += prompt_lines(model_dir)
    lines += evaluation_lines(record, run_dir)
    lines += [
        "## Limitations",
        "",
        *limitation_lines(record),
        "- Answers can be wrong or invented; check them against the literature.",
        "- Not evaluated for safety, bias or long-form generation.",
        f"- Produced by `cosmosage recipe run {record['recipe']}` (run `{record['run_id']}`, recipe hash `{record['recipe_hash']}`).",
        "",
    ]
    return "\n".join(lines)


def write_publish_folder(run_dir: Path, record: dict, top: Rendered, model_dir: str) -> Path:
    """<run>/publish: the final model's files plus README.md (the card)."""
    dst = RunFolder(run_dir).publish
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for f in Path(model_dir).iterdir():
        if f.is_file() and f.name != "README.md":
            link_or_copy(f, dst / f.name)
    for png in ("scores.png", "loss.png", "calibration.png"):
        if (RunFolder(run_dir).eval_dir / png).is_file():
            shutil.copyfile(RunFolder(run_dir).eval_dir / png, dst / png)
    (dst / "README.md").write_text(card_markdown(record, top, run_dir, model_dir))
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
    scores_file = RunFolder(run_dir).scores
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
