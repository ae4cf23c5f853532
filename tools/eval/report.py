"""Markdown for evaluation results: the scores table, the self-consistency check and
every answer, for people to read (plots are in tools/eval/plots.py)."""

from __future__ import annotations

COLUMNS = [
    ("all", "all"),
    ("domain", "domain"),
    ("general", "general"),
    ("trained", "recall, trained wording"),
    ("held_out", "recall, held-out wording"),
    ("conversation", "recall, held-out wording in a conversation"),
    ("qa_fact", "closed-book, facts with trained Q&A"),
    ("paper_only", "closed-book, paper-only facts"),
    ("held_out_sentence", "cloze, held-out sentences"),
    ("flagged", "flagged by self-consistency"),
]


INTERVALS = "Pass rates with their 95% Wilson intervals in brackets, in percent."


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def interval(passed: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a pass rate (scipy's), sound at 0/n and n/n where the
    normal approximation gives a zero-width interval."""
    from scipy.stats import binomtest

    ci = binomtest(passed, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def rate_text(rate: float | None, got: list[int] | None = None) -> str:
    """A score as `62% [43-79]`: the rate and its 95% interval where the counts [passed,
    scored] are known (a suite of 24 prompts cannot tell 62% from 50%, and a table should
    say so)."""
    if rate is None or not got or not got[1]:
        return pct(rate)
    lo, hi = interval(*got)
    return f"{rate:.0%} [{lo * 100:.0f}-{hi * 100:.0f}]"


def cell(result: dict, label: str, key: str) -> str:
    """`rate_text` of one model's score in an evaluation result."""
    got = (result.get("counts") or {}).get(label, {}).get(key)
    return rate_text(result["scores"][label].get(key), got)


def scores_table(result: dict) -> list[str]:
    labels = list(result["models"])
    cols = [(k, name) for k, name in COLUMNS if any(k in result["scores"][m] for m in labels)]
    lines = ["| model | " + " | ".join(name for _, name in cols) + " |"]
    lines.append("|---" * (len(cols) + 1) + "|")
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(cell(result, label, k) for k, _ in cols) + " |")
    return lines


def suites_table(result: dict) -> list[str]:
    labels = list(result["models"])
    suites = sorted({k for m in labels for k in result["scores"][m] if k.startswith("suite:")})
    lines = ["| suite | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for key in suites:
        cells = [cell(result, m, key) for m in labels]
        lines.append(f"| {key.removeprefix('suite:')} | " + " | ".join(cells) + " |")
    return lines


def documents_table(result: dict) -> list[str]:
    """Closed-book recall per document, where prompts name their document."""
    labels = list(result["models"])
    docs = sorted({k for m in labels for k in result["scores"][m] if k.startswith("doc:")})
    if not docs:
        return []
    lines = ["| document | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for key in docs:
        cells = [cell(result, m, key) for m in labels]
        lines.append(f"| {key.removeprefix('doc:')} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def consistency_lines(result: dict) -> list[str]:
    c = result.get("consistency")
    if not c:
        return []
    auc = "-" if c["auroc"] is None else f"{c['auroc']:.2f}"
    lines = [
        "## Self-consistency",
        "",
        f"Each prompt asked {c['samples']} more times with sampling "
        f"(temperature {c['settings'].get('temperature')}, top_p {c['settings'].get('top_p')}); "
        f"agreement = mean pairwise overlap of the samples' content words; an answer is "
        f"flagged below {c['threshold']}.",
        "",
        f"- AUROC of agreement against correctness, all models' answers together: **{auc}** "
        f"({c['answers']} answers)",
        f"- wrong answers flagged: {c['flagged_wrong']} of {c['wrong']}",
        "",
        "| agreement | answers | share correct |",
        "|---|---|---|",
    ]
    lines += [
        f"| {b['lo']:.1f}-{b['hi']:.1f} | {b['n']} | {b['accuracy']:.0%} |"
        for b in c["calibration"]
    ]
    return lines + [""]


def report_markdown(result: dict, title: str = "Evaluation") -> str:
    labels = list(result["models"])
    p = result["preset"]
    lines = [f"# {title}", "", f"Suites: {', '.join(f'`{s}`' for s in result['suites'])}  "]
    if limit := result.get("limit"):
        lines.append(
            f"Limited (--limit {limit}): only the first {limit} prompts of each suite were "
            f"asked, {len(result['answers'])} in all  "
        )
    lines.append(
        f"Generation: preset `{p.get('name')}`"
        + "".join(f", {k} {v}" for k, v in p.items() if k not in ("name",))
    )
    lines += ["", *scores_table(result), "", INTERVALS, "", *suites_table(result), ""]
    lines += documents_table(result)
    for label in labels:
        lines.append(f"- {label}: `{result['models'][label]}`")
    lines += ["", *consistency_lines(result)]
    lines += ["## Answers", ""]
    for row in result["answers"]:
        extra = f", {row['wording']} wording" if row.get("wording") else ""
        extra += f", {row['group']}, {row['document']}" if row.get("group") else ""
        lines.append(f"### {row['id']} ({row['kind']}, {row['score']}{extra})")
        lines.append(f"**Prompt:** {row['prompt']}  ")
        if row.get("expect"):
            lines.append(f"**Expect:** {', '.join(map(str, row['expect']))}")
        for label in labels:
            ok = row.get(f"{label}_pass")
            mark = "pass" if ok else ("not scored" if ok is None else "fail")
            flag = " [flagged]" if row.get(f"{label}_flagged") else ""
            agree = row.get(f"{label}_agreement")
            agree_s = f" (agreement {agree:.2f})" if agree is not None else ""
            lines.append(f"- {label} [{mark}]{flag}{agree_s}: {row[label]!r}")
        lines.append("")
    return "\n".join(lines)
