"""The evaluation stage of a run: the base model and every stage's model on the recipe's
prompt suites, multiple-choice benchmarks, a held-out general text (perplexity), the
self-consistency flag and a judge; forgetting before vs after each stage; plots; and
the thresholds a recipe declares.

    recipe:
      eval:
        suites: [samples/eval/prompts.yaml, build/data/quickstart/facts/recall.yaml]
        preset: greedy                  # or {preset: sample, temperature: 0.5}
        models: [base, instruct]        # which models (default: base and every stage)
        samples: 5                      # self-consistency samples per prompt (0: off)
        consistency_suites: [recall]    # only these suites' prompts are sampled
        multiple_choice: [samples/eval/mc_general.jsonl]
        mc_style: options               # or letters (AstroMLab-1 / MMLU style)
        perplexity: samples/eval/general_text.md
        judge: {base_url: http://127.0.0.1:8000/v1, model: judge}
        drift: true                     # KL to the base on general prompts (default on)
        forgetting: {general: 0.10, perplexity: 0.10}   # allowed drop / relative rise
        thresholds: {final.held_out: ">= 0.9"}          # fail the run when not met

Metric names, per model label (`base`, each stage key, `final`): all, domain, general,
trained, held_out, flagged, suite:NAME, mc:NAME (acc_norm), ppl; and, for every model
but the base, kl (mean per-token KL(base || model) over the base's greedy answers to the
general prompts, tools/eval/drift.py) and changed (the share of those answers that are
no longer the base's, word for word).
"""

from __future__ import annotations

import json
import operator
import re
from pathlib import Path

from cosmosage.dataprep.io import write_json, write_text
from cosmosage.dataprep.records import DataError
from cosmosage.tools.eval import plots
from cosmosage.tools.eval.evaluate import score_models
from cosmosage.tools.eval.report import INTERVALS, cell, report_markdown
from cosmosage.tools.paths import RunFolder

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_THRESHOLD_RE = re.compile(r"\s*(>=|<=|>|<)\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*(%?)\s*")
SCORE_PLOT = [
    ("all", "all prompts"),
    ("general", "general"),
    ("trained", "recall, trained"),
    ("held_out", "recall, held-out"),
    ("conversation", "recall, in conversation"),
    ("qa_fact", "closed-book, Q&A facts"),
    ("paper_only", "closed-book, paper-only"),
    ("held_out_sentence", "cloze, held-out sentences"),
]
# columns the summary always shows; the others only where some model has them
ALWAYS = ("all", "general", "trained", "held_out")


def models_to_evaluate(record: dict, base: str) -> dict[str, str]:
    """`base`, then each stage's model in order (the last one is the final model)."""
    models = {"base": base}
    for key, stage in record["stages"].items():
        models[key] = stage["model"]
    return models


def forgetting(scores: dict[str, dict], labels: list[str], limits: dict) -> list[dict]:
    """General-suite drop (points) and perplexity rise (relative) of each model against the
    model before it; a row is flagged when it passes the recipe's limit."""
    rows = []
    for before, after in zip(labels, labels[1:], strict=False):
        sb, sa = scores[before], scores[after]
        row = {"before": before, "after": after}
        if "general" in sb and "general" in sa:
            row["general_drop"] = round(sb["general"] - sa["general"], 4)
            row["general_flag"] = row["general_drop"] > float(limits.get("general", 0.10))
        for key in [k for k in sb if k.startswith("mc:") and k in sa]:
            row[f"{key}_drop"] = round(sb[key] - sa[key], 4)
        if sb.get("ppl") and sa.get("ppl"):
            row["ppl_rise"] = round(sa["ppl"] / sb["ppl"] - 1, 4)
            row["ppl_flag"] = row["ppl_rise"] > float(limits.get("perplexity", 0.10))
        rows.append(row)
    return rows


def check_thresholds(scores: dict[str, dict], thresholds: dict) -> list[str]:
    """Each failed `MODEL.METRIC: "OP VALUE"` as a sentence (missing metrics fail too)."""
    failed = []
    for name, spec in (thresholds or {}).items():
        label, _, metric = str(name).partition(".")
        m = _THRESHOLD_RE.fullmatch(str(spec))
        if not m or not metric:
            raise DataError(f"recipe.eval.thresholds.{name}: expected MODEL.METRIC: '>= 0.9'")
        op, value = m.group(1), float(m.group(2)) / (100 if m.group(3) else 1)
        got = scores.get(label, {}).get(metric)
        if got is None or not _OPS[op](got, value):
            failed.append(
                f"{name} {op} {value:g}: got {'nothing' if got is None else f'{got:.4g}'}"
            )
    return failed


def recipe_eval(run_dir: Path, record: dict, meta: dict, base: str, root: Path, echo) -> dict:
    """The recipe's `eval:` block on every model of a finished run (the launcher's
    `evaluate_models` step); writes eval/ (scores.json, report.md, PNGs)."""
    cfg = dict(meta.get("eval") or {})
    suites = cfg.get("suites") or cfg.get("prompts") or []
    suites = [root / s for s in ([suites] if isinstance(suites, str) else suites)]
    models = models_to_evaluate(record, base)
    if cfg.get("models"):
        unknown = [m for m in cfg["models"] if m not in models]
        if unknown:
            raise DataError(
                f"recipe.eval.models: no model {', '.join(unknown)} (this run has {', '.join(models)})"
            )
        models = {m: p for m, p in models.items() if m in cfg["models"]}
    out = RunFolder(run_dir).eval_dir
    judge = None
    if cfg.get("judge"):
        from cosmosage.tools.eval.judge import make_judge

        judge = make_judge(cfg["judge"]["base_url"], cfg["judge"]["model"], out / "judge.jsonl")
    result: dict = {"suites": [], "models": models, "scores": {m: {} for m in models}}
    if suites:
        echo(f"eval   {', '.join(s.name for s in suites)}: {', '.join(models)}")
        result = score_models(
            models,
            suites,
            cfg.get("preset"),
            samples=int(cfg.get("samples", 0)),
            judge=judge,
            sample_suites=cfg.get("consistency_suites"),
            cache_dir=root / "build" / "cache" / "answers",
        )
        if result.get("cached_requests"):
            echo(f"eval   {result['cached_requests']} request(s) answered from build/cache/answers")
    measure_drift(result, models, cfg, echo)
    for bench in cfg.get("multiple_choice") or []:
        from cosmosage.tools.eval.multiple_choice import run_mc

        name = Path(bench).stem
        echo(f"eval   multiple choice {name}: {', '.join(models)}")
        result.setdefault("multiple_choice", {})[name] = {}
        for label, path in models.items():
            mc = run_mc(path, root / bench, style=cfg.get("mc_style", "options"))
            result["multiple_choice"][name][label] = mc
            result["scores"][label][f"mc:{name}"] = mc["acc_norm"]
    if cfg.get("perplexity"):
        from cosmosage.tools.eval.perplexity import perplexity

        echo(f"eval   perplexity on {cfg['perplexity']}: {', '.join(models)}")
        for label, path in models.items():
            ppl = perplexity(path, root / cfg["perplexity"])
            result["scores"][label]["ppl"] = round(ppl["perplexity"], 4)
    labels = list(models)
    result["forgetting"] = forgetting(result["scores"], labels, cfg.get("forgetting") or {})
    result["threshold_failures"] = check_thresholds(
        {**result["scores"], "final": result["scores"][labels[-1]]}, cfg.get("thresholds") or {}
    )
    write_json(RunFolder(run_dir).scores, result)
    stage_metrics = {
        key: json.loads((RunFolder(run_dir).stage(key).metrics).read_text())
        for key in record["stages"]
        if (RunFolder(run_dir).stage(key).metrics).is_file()
    }
    plots.plot_losses(stage_metrics, out / "loss.png")
    plots.plot_scores(result["scores"], SCORE_PLOT + mc_metrics(result), out / "scores.png")
    if result.get("consistency", {}).get("calibration"):
        c = result["consistency"]
        plots.plot_calibration(c["calibration"], out / "calibration.png", c["auroc"])
    write_text(out / "report.md", run_report(result))
    return result


def measure_drift(result: dict, models: dict[str, str], cfg: dict, echo) -> None:
    """KL to the base and the share of changed answers, on the suites' general prompts."""
    from cosmosage.tools.eval.drift import changed_share, general_items, kl_to_base

    items = general_items(result.get("answers") or [])
    if not cfg.get("drift", True) or "base" not in models or not items:
        return
    others = [m for m in models if m != "base"]
    echo(f"eval   drift from base on {len(items)} general prompts: {', '.join(others)}")
    for label in others:
        try:
            got = kl_to_base(models["base"], models[label], items)
        except ValueError as exc:
            echo(f"eval   drift of {label} not measured: {exc}")
            continue
        result["scores"][label]["kl"] = round(got["kl"], 5)
        result["scores"][label]["changed"] = changed_share(result["answers"], label)


def drift_table(result: dict) -> list[str]:
    rows = [(m, s) for m, s in result["scores"].items() if "kl" in s]
    if not rows:
        return []
    lines = [
        "## Drift from the base on the general prompts",
        "",
        "Mean per-token KL(base || model) over the base model's own greedy answers (nats; 0",
        "for an unchanged model), and the share of those answers the model no longer gives.",
        "",
        "| model | KL to base | answers changed |",
        "|---|---|---|",
    ]
    for m, s in rows:
        changed = "-" if s.get("changed") is None else f"{s['changed']:.0%}"
        lines.append(f"| {m} | {s['kl']:.4f} | {changed} |")
    return [*lines, ""]


def mc_metrics(result: dict) -> list[tuple[str, str]]:
    return [(f"mc:{n}", f"{n} (multiple choice)") for n in result.get("multiple_choice", {})]


def forgetting_lines(result: dict) -> list[str]:
    rows = result.get("forgetting") or []
    if not rows:
        return []
    lines = [
        "## Forgetting",
        "",
        "| before -> after | general suite drop | perplexity rise | flagged |",
        "|---|---|---|---|",
    ]
    for r in rows:
        drop = f"{r['general_drop'] * 100:+.0f} pts" if "general_drop" in r else "-"
        rise = f"{r['ppl_rise']:+.1%}" if "ppl_rise" in r else "-"
        flags = [k for k in ("general_flag", "ppl_flag") if r.get(k)]
        lines.append(
            f"| {r['before']} -> {r['after']} | {drop} | {rise} | "
            f"{', '.join(f.removesuffix('_flag') for f in flags) or 'no'} |"
        )
    return [*lines, ""]


def extra_tables(result: dict) -> list[str]:
    labels = list(result["models"])
    lines = []
    if result.get("multiple_choice"):
        lines += ["## Multiple choice (log-likelihood, lm-evaluation-harness)", ""]
        lines += ["| benchmark | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for name, per in result["multiple_choice"].items():
            cells = [
                f"{per[m]['acc_norm']:.0%} ± {per[m]['acc_norm_stderr']:.0%}"
                for m in labels
                if m in per
            ]
            lines.append(
                f"| {name} (n={next(iter(per.values()))['n']}) | " + " | ".join(cells) + " |"
            )
        lines.append("")
    lines += drift_table(result)
    if any("ppl" in result["scores"][m] for m in labels):
        lines += ["## Perplexity on the held-out general text", ""]
        lines += ["| " + " | ".join(labels) + " |", "|---" * len(labels) + "|"]
        lines.append(
            "| " + " | ".join(f"{result['scores'][m].get('ppl', 0):.2f}" for m in labels) + " |"
        )
        lines.append("")
    return lines


def run_report(result: dict) -> str:
    head = (
        report_markdown(result, "Evaluation of every model in the run")
        if result.get("answers")
        else "# Evaluation\n"
    )
    body = head.split("## Answers", 1)
    lines = [body[0].rstrip(), "", "![scores](scores.png)", "", "![loss](loss.png)", ""]
    if result.get("consistency"):
        lines += ["![calibration](calibration.png)", ""]
    lines += extra_tables(result) + forgetting_lines(result)
    if result.get("threshold_failures"):
        lines += (
            ["## Thresholds not met", ""] + [f"- {f}" for f in result["threshold_failures"]] + [""]
        )
    if len(body) > 1:
        lines += ["## Answers", body[1]]
    return "\n".join(lines)


def summary_lines(result: dict) -> list[str]:
    """What the run summary says about evaluation, in a few lines."""
    labels = list(result["models"])
    cols = [
        (k, n)
        for k, n in SCORE_PLOT
        if k in ALWAYS or any(k in result["scores"][m] for m in labels)
    ]
    lines = ["| model | " + " | ".join(n for _, n in cols) + " | perplexity |"]
    lines.append("|---" * (len(cols) + 2) + "|")
    for m in labels:
        s = result["scores"][m]
        ppl = f"{s['ppl']:.2f}" if "ppl" in s else "-"
        lines.append(f"| {m} | " + " | ".join(cell(result, m, k) for k, _ in cols) + f" | {ppl} |")
    if result.get("counts"):
        lines.append(f"\n{INTERVALS}")
    drift = [
        f"{m} KL {s['kl']:.4f}, {s['changed']:.0%} of answers changed"
        for m, s in result["scores"].items()
        if "kl" in s and s.get("changed") is not None
    ]
    if drift:
        lines.append("\nDrift from the base on the general prompts: " + "; ".join(drift))
    for r in result.get("forgetting") or []:
        if r.get("general_flag") or r.get("ppl_flag"):
            bits = []
            if "general_drop" in r:
                bits.append(f"general suite {-r['general_drop'] * 100:+.0f} pts")
            if "ppl_rise" in r:
                bits.append(f"perplexity {r['ppl_rise']:+.1%}")
            lines.append(f"\nForgetting flagged {r['before']} -> {r['after']}: {', '.join(bits)}")
    if c := result.get("consistency"):
        auc = (
            "- (undefined: the sampled answers were all right or all wrong)"
            if c["auroc"] is None
            else f"{c['auroc']:.2f}"
        )
        lines.append(f"\nSelf-consistency AUROC (agreement predicts correctness): {auc}")
    return lines
