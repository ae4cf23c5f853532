"""`sweep report`: a sweep's runs as one table (results.md, results.csv), the spread over
seeds, and one plot (results.png). tools/run/sweep.py runs the sweep."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from cosmosage.dataprep.io import write_text
from cosmosage.tools.eval.plots import COLORS, save_figure
from cosmosage.tools.recipe.render import parse_value
from cosmosage.tools.run.stage import Echo
from cosmosage.tools.run.sweep import (
    FINISHED,
    SweepError,
    load,
    read_counts,
    read_run,
    runs_dir_of,
    values_text,
)

# the drift from the base (KL, share of general answers changed) is forgetting too
LOWER_IS_BETTER = {"eval_loss", "loss", "ppl", "wall_s", "flagged", "kl", "changed"}
LOWER_IS_BETTER_SUFFIXES = ("_loss", "_rise", "_drop", "_flag")

STATUS_NOTE = {"failed thresholds": "thresholds not met"}
LINE_STYLES = ["-", "--", ":", "-."]

# --------------------------------------------------------------------------- results


def collect(doc: dict, runs_dir: Path) -> list[dict]:
    """One row per combination: index, grid values (as typed), status, each stage's best
    eval loss, wall time, every score of the final model (`final.X`) and of the base
    (`base.X`), forgetting per stage (`STAGE.general_drop`, ...), error and run folder."""
    stages = doc["stages"]
    rows = []
    for combo in doc["combinations"]:
        record = read_run(runs_dir, combo.get("run"))
        done = record.get("stages") or {}
        row: dict[str, Any] = {"combination": combo["index"], **combo["values"]}
        row["status"] = combo["status"]
        for key in stages:
            row[f"{key}.eval_loss"] = (done.get(key) or {}).get("metrics", {}).get("eval_loss_best")
        stage_wall = [(s.get("metrics") or {}).get("wall_s") for s in done.values()]
        row["wall_s"] = (
            combo["wall_s"]
            if combo.get("wall_s") is not None
            else (round(sum(w for w in stage_wall if w), 1) if any(stage_wall) else None)
        )
        scores = record.get("eval") or {}
        counts = read_counts(runs_dir, combo.get("run"))
        row["_counts"] = {}
        for label, prefix in ((stages[-1], "final"), ("base", "base")):
            for metric, value in (scores.get(label) or {}).items():
                row[f"{prefix}.{metric}"] = value
            for metric, got in (counts.get(label) or {}).items():
                row["_counts"][f"{prefix}.{metric}"] = got
        for f in record.get("forgetting") or []:
            for key, value in f.items():
                if key not in ("before", "after"):
                    row[f"{f['after']}.{key}"] = value
        row["error"] = combo.get("error") or ""
        row["run"] = combo.get("run") or ""
        rows.append(row)
    return rows


def columns(rows: list[dict], doc: dict) -> list[str]:
    """Column order: index, axes, status, eval losses, wall time, final.*, base.*, the
    forgetting columns, error, run."""
    head = ["combination", *doc["grid"], "status", *(f"{k}.eval_loss" for k in doc["stages"])]
    head.append("wall_s")
    seen = list(dict.fromkeys(k for row in rows for k in row if k not in head and k[0] != "_"))
    rest = [k for k in seen if k not in ("error", "run")]
    final = [k for k in rest if k.startswith("final.")]
    base = [k for k in rest if k.startswith("base.")]
    other = [k for k in rest if k not in final and k not in base]
    return [*head, *final, *base, *other, "error", "run"]


def lower_is_better(column: str, doc: dict) -> bool:
    if column in doc["grid"] or column == "combination":
        return True
    last = column.rsplit(".", 1)[-1]
    return last in LOWER_IS_BETTER or last.endswith(LOWER_IS_BETTER_SUFFIXES)


def resolve_metric(name: str | None, cols: list[str], doc: dict) -> str:
    """A --sort name -> a column: exact names, `held_out` for `final.held_out`, and
    `eval_loss` / `loss` / `final.eval_loss` for the last stage's eval loss (the default)."""
    last = f"{doc['stages'][-1]}.eval_loss"
    name = (name or last).strip()
    aliases = {"eval_loss": last, "loss": last, "final.eval_loss": last, "final.loss": last}
    aliases |= {f"{k}.loss": f"{k}.eval_loss" for k in doc["stages"]}
    aliases |= {"wall": "wall_s", "time": "wall_s"}
    for candidate in (name, aliases.get(name), f"final.{name}"):
        if candidate in cols and candidate not in ("status", "error", "run"):
            return candidate
    choices = [c for c in cols if c not in ("status", "error", "run")]
    raise SweepError(f"--sort {name}: no such column; one of: {', '.join(choices)}")


def _sortable(value: Any) -> tuple[int, Any]:
    """(kind, value) so that numbers, and then text, compare among themselves."""
    if isinstance(value, str):
        value = parse_value(value)
    if isinstance(value, bool | int | float) and not (
        isinstance(value, float) and math.isnan(value)
    ):
        return 0, float(value)
    return 1, str(value)


def sort_rows(rows: list[dict], metric: str, descending: bool) -> list[dict]:
    """Best first by `metric`; rows without a value last, each group by combination."""

    def key(row: dict) -> tuple:
        value = row.get(metric)
        if value is None or value == "":
            return (1, 0, 0.0, row["combination"])
        kind, v = _sortable(value)
        if kind == 0 and descending:
            v = -v
        return (0, kind, v, row["combination"])

    return sorted(rows, key=key)


def fmt(column: str, value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if column.endswith("eval_loss"):
            return f"{value:.4f}"
        if column == "wall_s":
            return f"{value:.1f}"
        return f"{value:.4g}"
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 100 else text[:99] + "…"


def counts_text(doc: dict) -> str:
    counts: dict[str, int] = {}
    for combo in doc["combinations"]:
        counts[combo["status"]] = counts.get(combo["status"], 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def table_markdown(rows: list[dict], cols: list[str], doc: dict, metric: str) -> str:
    """results.md: what was swept, the best combination, the table, the plot, failures."""
    lower = lower_is_better(metric, doc)
    grid = "; ".join(f"`{k}` = {', '.join(v)}" for k, v in doc["grid"].items())
    lines = [f"# Sweep {doc['recipe']} / {doc['name']}", ""]
    lines.append(f"Grid: {grid} ({len(doc['combinations'])} combinations: {counts_text(doc)}).")
    fixed = [f"--set {s}" for s in doc["sets"]] + [f"--unset {u}" for u in doc["unsets"]]
    if fixed:
        lines.append(f"Every run also: `{' '.join(fixed)}`.")
    lines.append(f"Sorted by `{metric}`, {'lower' if lower else 'higher'} is better.")
    best = next((r for r in rows if r.get(metric) not in (None, "")), None)
    if best is not None:
        values = values_text({k: best[k] for k in doc["grid"]})
        lines.append(
            f"Best: combination {best['combination']} ({values}): {fmt(metric, best[metric])}."
        )
    lines += interval_lines(rows, metric)
    header = [("#" if c == "combination" else c) for c in cols]
    lines += ["", "| " + " | ".join(header) + " |", "|---" * len(cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c, row.get(c)) for c in cols) + " |")
    lines += seed_lines(rows, cols, doc, metric)
    lines += ["", "![results](results.png)", ""]
    failed = [r for r in rows if r.get("error")]
    if failed:
        lines += ["## Combinations that did not complete", ""]
        for r in sorted(failed, key=lambda r: r["combination"]):
            values = values_text({k: r[k] for k in doc["grid"]})
            lines.append(f"- {r['combination']} ({values}): {r['status']}: {r['error']}")
        lines.append("")
    return "\n".join(lines)


def interval_lines(rows: list[dict], metric: str) -> list[str]:
    """The sort metric of every combination with its 95% Wilson interval, where the run
    kept the counts: two runs whose intervals overlap are not told apart by this suite."""
    from cosmosage.tools.eval.report import rate_text

    shown = [(r, (r.get("_counts") or {}).get(metric)) for r in rows]
    shown = [(r, got) for r, got in shown if got and got[1]]
    if not shown:
        return []
    lines = ["", f"| # | {metric} [95% interval] | passed |", "|---|---|---|"]
    for r, (passed, n) in shown:
        lines.append(
            f"| {r['combination']} | {rate_text(passed / n, [passed, n])} | {passed}/{n} |"
        )
    return lines


# grid axes whose values are repeats of one configuration, not settings to compare
REPEAT_AXES = ("seed", "recipe.seed")


def seed_groups(rows: list[dict], doc: dict) -> tuple[str, list[str], list[tuple[dict, list]]]:
    """(seed axis, the other axes, [(their values, the finished rows)]) in first-seen
    order; an empty axis name when the grid repeats nothing."""
    axis = next((a for a in REPEAT_AXES if len(doc["grid"].get(a) or []) > 1), "")
    if not axis:
        return "", [], []
    others = [a for a in doc["grid"] if a != axis]
    groups: dict[tuple, list[dict]] = {}
    for row in sorted(rows, key=lambda r: r["combination"]):
        if row.get("status") in FINISHED:
            groups.setdefault(tuple(str(row.get(a)) for a in others), []).append(row)
    return axis, others, [(dict(zip(others, k, strict=True)), v) for k, v in groups.items()]


def spread(values: list[float]) -> dict[str, float]:
    """n, mean, sample standard deviation (0 for one value), min and max."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {
        "n": len(values),
        "mean": mean,
        "sd": math.sqrt(var),
        "min": min(values),
        "max": max(values),
    }


def seed_spread(rows: list[dict], cols: list[str], doc: dict, metric: str) -> list[dict]:
    """Per configuration (every axis but the seed): each numeric metric's spread over
    the finished seeds, the sort metric first, then the final model's, the forgetting
    and the base's."""
    axis, others, groups = seed_groups(rows, doc)
    if not axis:
        return []
    skip = {"combination", "status", "error", "run", axis, *others}
    metrics = [metric] + [c for c in cols if c not in skip and c != metric]
    out = []
    for values, members in groups:
        entry: dict[str, Any] = {**values, "seeds": [m.get(axis) for m in members]}
        for c in metrics:
            nums = [
                float(v)
                for m in members
                if (v := m.get(c)) is not None and _sortable(v)[0] == 0 and not isinstance(v, bool)
            ]
            if nums:
                entry[c] = spread(nums)
        out.append(entry)
    return out


def spread_text(column: str, s: dict[str, float]) -> str:
    if s["n"] == 1:
        return fmt(column, s["mean"])
    return (
        f"{fmt(column, s['mean'])} ± {fmt(column, s['sd'])} "
        f"[{fmt(column, s['min'])}-{fmt(column, s['max'])}]"
    )


def seed_lines(rows: list[dict], cols: list[str], doc: dict, metric: str) -> list[str]:
    """results.md's spread over seeds: one row per configuration, mean ± sample standard
    deviation [min-max] of the sort metric and of every final-model score."""
    table = seed_spread(rows, cols, doc, metric)
    if not table:
        return []
    axis, others, _ = seed_groups(rows, doc)
    shown = list(
        dict.fromkeys([metric] + [c for c in cols if c.startswith("final.") or c.endswith("_drop")])
    )
    shown = [c for c in shown if any(c in e for e in table)]
    lines = [
        "",
        f"## Over seeds (`{axis}`)",
        "",
        "Mean ± sample standard deviation [lowest-highest] over the finished runs of each "
        "configuration; two runs of one configuration differ, so compare configurations by "
        "these, not by one run.",
        "",
        "| " + " | ".join([*others, "seeds", *shown]) + " |",
        "|---" * (len(others) + 1 + len(shown)) + "|",
    ]
    for e in table:
        cells = [fmt(a, e[a]) for a in others] + [", ".join(map(str, e["seeds"]))]
        cells += [spread_text(c, e[c]) if c in e else "-" for c in shown]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def table_csv(rows: list[dict], cols: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        cells = {}
        for c in cols:
            v = row.get(c)
            cells[c] = "" if v is None else str(v).lower() if isinstance(v, bool) else v
        writer.writerow(cells)
    return out.getvalue()


# --------------------------------------------------------------------------- plot


def _numeric(values: list[str]) -> list[float] | None:
    parsed = [parse_value(v) for v in values]
    if all(isinstance(p, int | float) and not isinstance(p, bool) for p in parsed):
        return [float(p) for p in parsed]
    return None


def _plot_against_axis(
    ax2, rows: list[dict], metric: str, doc: dict, varying: list[str], x_axis: str,
    present: list[tuple[int, dict]],
) -> None:  # fmt: skip
    """The metric against the numeric axis `x_axis`, one line per combination of the other
    varying axes, the best point ringed."""
    others = [k for k in varying if k != x_axis]
    groups: dict[tuple, list[tuple[float, float, str]]] = {}
    for row in rows:
        value = row.get(metric)
        group = tuple(row[k] for k in others)
        groups.setdefault(group, [])
        if isinstance(value, int | float):
            groups[group].append((float(parse_value(row[x_axis])), float(value), row[x_axis]))
    palette = [c for c in COLORS if c != COLORS[1]]  # red marks the best
    order = {k: {v: i for i, v in enumerate(doc["grid"][k])} for k in others}

    def grid_order(item: tuple[tuple, list]) -> list[int]:
        return [order[k][v] for k, v in zip(others, item[0], strict=True)]

    for j, (group, points) in enumerate(sorted(groups.items(), key=grid_order)):
        points.sort()
        label = ", ".join(f"{k}={v}" for k, v in zip(others, group, strict=True)) or metric
        ax2.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            ls=LINE_STYLES[j % len(LINE_STYLES)],  # identical lines stay visible
            color=palette[j % len(palette)],
            label=label,
            lw=1.8 if j == 0 else 1.4,
            ms=6,
        )
    xs = _numeric(doc["grid"][x_axis]) or []
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax2.set_xscale("log")
    ax2.set_xticks(xs, doc["grid"][x_axis], fontsize=8)
    ax2.minorticks_off()
    if present:
        best = rows[present[0][0]]
        ax2.plot(
            [float(parse_value(best[x_axis]))],
            [float(best[metric])],
            "o",
            ms=14,
            markerfacecolor="none",
            markeredgecolor=COLORS[1],
            markeredgewidth=2,
            label="best",
        )
    ax2.set_xlabel(x_axis)
    ax2.set_ylabel(metric)
    ax2.set_title(f"{metric} against {x_axis}", fontsize=10)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, title=", ".join(others) or None, title_fontsize=8)


def plot_sweep(rows: list[dict], metric: str, doc: dict, out: Path) -> Path:
    """Left: the metric per combination, best at the top. Right, when an axis has two or more
    numeric values: the metric against the first such axis, one line per combination of
    the other varying axes. Unfinished or failed combinations are named without a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lower = lower_is_better(metric, doc)
    varying = [k for k, v in doc["grid"].items() if len(v) > 1] or list(doc["grid"])[:1]
    x_axis = next((k for k in varying if _numeric(doc["grid"][k])), None)
    n = len(rows)
    height = max(3.4, 0.34 * n + 1.6)
    fig, axes = plt.subplots(
        1, 2 if x_axis else 1, figsize=(11.5 if x_axis else 6.2, height), squeeze=False
    )
    ax = axes[0][0]
    present = [(i, r) for i, r in enumerate(rows) if isinstance(r.get(metric), int | float)]
    vals = [float(r[metric]) for _, r in present]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    span = (hi - lo) or abs(hi) * 0.1 or 1.0
    ax.set_xlim(lo - 0.2 * span, hi + 0.35 * span)
    ys = list(range(n - 1, -1, -1))  # first row (the best) at the top
    for i, row in enumerate(rows):
        y = ys[i]
        ax.axhline(y, color="#dddddd", lw=0.6, zorder=0)
        value = row.get(metric)
        if not isinstance(value, int | float):
            ax.text(
                lo - 0.15 * span,
                y,
                f"no value ({row['status']})",
                va="center",
                fontsize=8,
                color="grey",
            )
            continue
        best = i == present[0][0]
        color = COLORS[1] if best else COLORS[0]
        hollow = row["status"] != "complete"
        ax.plot(
            [value],
            [y],
            "o",
            ms=9 if best else 7,
            color=color,
            markerfacecolor="white" if hollow else color,
            markeredgewidth=1.6,
        )
        ax.annotate(
            f"{value:.4g}"
            + (f" ({STATUS_NOTE.get(row['status'], row['status'])})" if hollow else ""),
            (value, y),
            xytext=(7, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    labels = [f"{r['combination']}: " + ", ".join(f"{k}={r[k]}" for k in varying) for r in rows]
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(f"{metric} ({'lower' if lower else 'higher'} is better)")
    ax.set_title("per combination, best first", fontsize=10)
    ax.grid(axis="x", alpha=0.3)

    if x_axis:
        _plot_against_axis(axes[0][1], rows, metric, doc, varying, x_axis, present)
    fig.suptitle(f"Sweep {doc['recipe']} / {doc['name']}", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out)


# --------------------------------------------------------------------------- report


def report(folder: Path, sort: str | None = None, echo: Echo | None = None) -> dict:
    """Rebuild results.md, results.csv and results.png of a sweep folder from its sweep.json
    and the run folders. An unknown --sort falls back to the eval loss when `echo` is given
    (after a sweep, so its results are still written) and is an error otherwise."""
    doc = load(folder)
    runs_dir = runs_dir_of(folder, doc)
    rows = collect(doc, runs_dir)
    cols = columns(rows, doc)
    try:
        metric = resolve_metric(sort, cols, doc)
    except SweepError as exc:
        if echo is None:
            raise
        echo(f"{exc}; sorting by the eval loss")
        metric = resolve_metric(None, cols, doc)
    rows = sort_rows(rows, metric, descending=not lower_is_better(metric, doc))
    files = [folder / "results.md", folder / "results.csv", folder / "results.png"]
    write_text(files[0], table_markdown(rows, cols, doc, metric))
    write_text(files[1], table_csv(rows, cols))
    plot_sweep(rows, metric, doc, files[2])
    return {
        "dir": folder,
        "doc": doc,
        "rows": rows,
        "columns": cols,
        "sort": metric,
        "files": files,
    }
