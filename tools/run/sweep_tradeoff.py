"""`sweep tradeoff`: the configurations of one or more sweeps placed on two metrics (what
a run learned against what it forgot), seeds of one configuration pooled, the
configurations no other beats on both drawn as the front and listed in a table.

A configuration is a run's settings (the sweep's --set overrides and the combination's
grid values) without its seed; the settings that differ between the points name them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from cosmosage.dataprep.io import write_text
from cosmosage.tools.eval.plots import COLORS, save_figure
from cosmosage.tools.eval.report import interval, rate_text
from cosmosage.tools.recipe.render import parse_value
from cosmosage.tools.run.sweep import FINISHED, SweepError, load, runs_dir_of
from cosmosage.tools.run.sweep_report import (
    REPEAT_AXES,
    collect,
    columns,
    fmt,
    lower_is_better,
    resolve_metric,
)

CHOICE_PREFIX = "recipe.choose."


@dataclass
class Point:
    """One configuration: its settings and, per run, the two metrics and their counts."""

    settings: dict[str, str]
    runs: list[str] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    x_counts: list[list[int] | None] = field(default_factory=list)
    y_counts: list[list[int] | None] = field(default_factory=list)
    label: str = ""
    front: bool = False

    @property
    def x(self) -> float:
        return sum(self.xs) / len(self.xs)

    @property
    def y(self) -> float:
        return sum(self.ys) / len(self.ys)


def run_settings(doc: dict, combo: dict) -> dict[str, str]:
    """KEY -> VALUE of every --set a combination ran with (its own grid values last)."""
    out: dict[str, str] = {}
    for item in [*doc.get("sets", []), *combo.get("sets", [])]:
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    for key in doc.get("unsets", []):
        out[key] = "(unset)"
    return out


def _metric_pair(folder: Path, rows: list[dict], doc: dict, x: str, y: str) -> tuple[str, str]:
    cols = columns(rows, doc)
    try:
        return resolve_metric(x, cols, doc), resolve_metric(y, cols, doc)
    except SweepError as exc:
        raise SweepError(f"{folder}: " + str(exc).replace("--sort", "--x/--y", 1)) from None


def same_value(a: str | None, b: str | None) -> bool:
    """Two settings as typed mean the same (`1.0e-4` and `0.0001`, `true` and `True`)."""
    return a is not None and b is not None and parse_value(a) == parse_value(b)


def skipped(settings: dict[str, str], skip: list[str]) -> bool:
    """Whether a run's settings hold one of the KEY=VALUE pairs of `skip` (a choice may be
    named without `recipe.choose.`)."""
    for item in skip:
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if any(same_value(value, settings.get(k)) for k in (key, CHOICE_PREFIX + key)):
            return True
    return False


def gather(
    folders: list[Path], x: str, y: str, skip: list[str] | None = None
) -> tuple[list[Point], dict, tuple[str, str]]:
    """(points, the base model's {column: value}, (x column, y column)): every finished run
    of every sweep with both metrics, grouped by configuration, but the runs `skip` names
    (KEY=VALUE settings, e.g. a diverged learning rate)."""
    points: dict[tuple, Point] = {}
    base: dict[str, float] = {}
    pair: tuple[str, str] | None = None
    for folder in folders:
        doc = load(folder)
        rows = [r for r in collect(doc, runs_dir_of(folder, doc)) if r["status"] in FINISHED]
        if not rows:
            continue  # a sweep still running its first combination has nothing to place
        xcol, ycol = _metric_pair(folder, rows, doc, x, y)
        if pair and pair != (xcol, ycol):
            raise SweepError(
                f"{folder}: --x/--y mean {xcol}/{ycol} here, {pair[0]}/{pair[1]} before"
            )
        pair = (xcol, ycol)
        by_index = {c["index"]: c for c in doc["combinations"]}
        for row in rows:
            xv, yv = row.get(xcol), row.get(ycol)
            if not _number(xv) or not _number(yv):
                continue
            settings = run_settings(doc, by_index[row["combination"]])
            if skipped(settings, skip or []):
                continue
            seed = next((settings.pop(k) for k in REPEAT_AXES if k in settings), "")
            key = (
                doc["recipe"],
                tuple(sorted((k, repr(parse_value(v))) for k, v in settings.items())),
            )
            point = points.setdefault(key, Point(settings={"recipe": doc["recipe"], **settings}))
            point.runs.append(row["run"])
            point.seeds.append(seed)
            point.xs.append(float(xv))
            point.ys.append(float(yv))
            point.x_counts.append(row["_counts"].get(xcol))
            point.y_counts.append(row["_counts"].get(ycol))
            for col in (xcol, ycol):
                base_col = "base." + col.split(".", 1)[1] if col.startswith("final.") else ""
                if _number(row.get(base_col)):
                    base.setdefault(col, float(row[base_col]))
    if pair is None or not points:
        raise SweepError("no finished run with both metrics in " + ", ".join(map(str, folders)))
    out = list(points.values())
    name_points(out)
    return out, base, pair


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def name_points(points: list[Point]) -> None:
    """Label each point by the settings that differ between points and that it sets
    (`recipe.choose.` left off); settings every point shares say nothing."""
    keys = list(dict.fromkeys(k for p in points for k in p.settings))
    varying = [k for k in keys if len({p.settings.get(k) for p in points}) > 1]
    for p in points:
        parts = [
            f"{k.removeprefix(CHOICE_PREFIX)}={p.settings[k]}" for k in varying if k in p.settings
        ]
        p.label = ", ".join(parts) or p.settings["recipe"]


def mark_front(points: list[Point], x_lower: bool, y_lower: bool) -> list[Point]:
    """Flag the points no other point matches or beats on both means while beating on one;
    return them ordered along x."""
    sx, sy = (-1 if x_lower else 1), (-1 if y_lower else 1)
    for p in points:
        p.front = not any(
            sx * q.x >= sx * p.x and sy * q.y >= sy * p.y and (q.x != p.x or q.y != p.y)
            for q in points
        )
    return sorted((p for p in points if p.front), key=lambda p: p.x)


def spread_bar(values: list[float], counts: list[list[int] | None]) -> tuple[float, float, str]:
    """(low, high, kind) of a point's error bar: the lowest and highest run over several
    seeds, the 95% interval of one run's counts, or none."""
    if len(values) > 1:
        return min(values), max(values), "runs"
    if counts and counts[0] and counts[0][1]:
        lo, hi = interval(*counts[0])
        return lo, hi, "95% interval"
    return values[0], values[0], ""


NOT_RATES = ("kl", "ppl", "wall_s")


def _value_text(column: str, values: list[float], counts: list[list[int] | None]) -> str:
    """`mean [low-high]`, the bar the plot draws: shares in percent as every report writes
    them (`rate_text`), other metrics as the sweep table does."""
    last = column.rsplit(".", 1)[-1]
    rate = last not in NOT_RATES and not last.endswith("_loss") and all(0 <= v <= 1 for v in values)
    mean = sum(values) / len(values)
    lo, hi, kind = spread_bar(values, counts)
    if kind == "95% interval":
        return (
            rate_text(mean, counts[0])
            if rate
            else f"{fmt(column, mean)} [{fmt(column, lo)}-{fmt(column, hi)}]"
        )
    if rate:
        return f"{mean:.0%}" + (f" [{lo * 100:.0f}-{hi * 100:.0f} over runs]" if kind else "")
    return fmt(column, mean) + (f" [{fmt(column, lo)}-{fmt(column, hi)} over runs]" if kind else "")


def ordered(points: list[Point]) -> list[Point]:
    """The table's and the plot's order (and numbering): most learned first."""
    return sorted(points, key=lambda p: (-p.y, -p.x, p.label))


def table_markdown(points: list[Point], base: dict, pair: tuple[str, str]) -> str:
    """One row per configuration, numbered as on the plot: runs (seeds), both metrics with
    their bars (the range over runs, or one run's 95% interval), and whether it is on the
    front."""
    xcol, ycol = pair
    lines = [
        f"| # | configuration | runs (seeds) | {ycol} | {xcol} | on the front |",
        "|---|---|---|---|---|---|",
    ]
    if xcol in base or ycol in base:
        bx = _value_text(xcol, [base[xcol]], [None]) if xcol in base else "-"
        by = _value_text(ycol, [base[ycol]], [None]) if ycol in base else "-"
        lines.append(f"| | base model | - | {by} | {bx} | |")
    for i, p in enumerate(ordered(points), start=1):
        seeds = ", ".join(s for s in p.seeds if s)
        lines.append(
            f"| {i} | {p.label} | {len(p.runs)}{f' ({seeds})' if seeds else ''} | "
            f"{_value_text(ycol, p.ys, p.y_counts)} | {_value_text(xcol, p.xs, p.x_counts)} | "
            f"{'yes' if p.front else ''} |"
        )
    return "\n".join(lines) + "\n"


MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


def _lower(column: str) -> bool:
    """Lower is better for this score column (no grid key is ever an axis here)."""
    return lower_is_better(column, {"grid": {}})


def _direction(column: str) -> str:
    return "lower" if _lower(column) else "higher"


def _draw_goal(ax, pair: tuple[str, str], goal: tuple[float | None, float | None]) -> None:
    """Dashed lines at the goal's thresholds and the corner that meets both shaded."""
    (xcol, ycol), (gx, gy) = pair, goal
    if gx is not None:
        ax.axvline(gx, ls="--", color="black", lw=0.9)
    if gy is not None:
        ax.axhline(gy, ls="--", color="black", lw=0.9)
    if gx is not None and gy is not None:
        x0, x1 = ax.get_xlim()
        y0, y1 = ax.get_ylim()
        xs = (x0, gx) if _direction(xcol) == "lower" else (gx, x1)
        ys = (y0, gy) if _direction(ycol) == "lower" else (gy, y1)
        ax.fill_between(xs, *ys, color="#66a182", alpha=0.15, lw=0, label="goal")
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)


def plot_tradeoff(
    points: list[Point], base: dict, pair: tuple[str, str], front: list[Point], out: Path,
    goal: tuple[float | None, float | None] = (None, None),
) -> Path:  # fmt: skip
    """Each configuration at its means with bars (range over seeds, or a run's 95%
    interval) and its table number, every run of a pooled one as a faint dot, the front
    joined, the base model as a star, the goal's corner shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xcol, ycol = pair
    fig, ax = plt.subplots(figsize=(12.5, 6.5))
    for i, p in enumerate(ordered(points)):
        color = COLORS[i % len(COLORS)]
        xlo, xhi, _ = spread_bar(p.xs, p.x_counts)
        ylo, yhi, _ = spread_bar(p.ys, p.y_counts)
        ax.errorbar(
            [p.x], [p.y], xerr=[[p.x - xlo], [xhi - p.x]], yerr=[[p.y - ylo], [yhi - p.y]],
            fmt=MARKERS[(i // len(COLORS)) % len(MARKERS)], ms=9 if p.front else 6,
            mec="black" if p.front else color, color=color, capsize=3, lw=1.0, alpha=0.9,
            label=f"{i + 1}: {p.label} (n={len(p.runs)})",
        )  # fmt: skip
        ax.annotate(str(i + 1), (p.x, p.y), xytext=(5, 4), textcoords="offset points", fontsize=8)
        if len(p.runs) > 1:
            ax.plot(p.xs, p.ys, ".", color=color, alpha=0.45, ms=5)
    if len(front) > 1:
        ax.plot([p.x for p in front], [p.y for p in front], "-", color="grey", lw=1, zorder=0,
                label="front: no configuration better on both")  # fmt: skip
    if xcol in base and ycol in base:
        ax.plot([base[xcol]], [base[ycol]], "*", ms=14, color="black", label="base model")
    _draw_goal(ax, pair, goal)
    ax.set_xlabel(f"{xcol} ({_direction(xcol)} is better)")
    ax.set_ylabel(f"{ycol} ({_direction(ycol)} is better)")
    ax.set_title(f"{ycol} against {xcol}; bars: range over seeds, or one run's 95% interval",
                 fontsize=10)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return save_figure(fig, out)


def tradeoff(
    folders: list[Path], x: str, y: str, out: Path,
    goal: tuple[float | None, float | None] = (None, None), skip: list[str] | None = None,
) -> dict:  # fmt: skip
    """Write OUT (the plot) and OUT with .md (the table) for the runs of `folders` but
    those `skip` names; `goal` (x, y thresholds, either None) is drawn on the plot."""
    if out.suffix.lower() != ".png":
        raise SweepError(f"--out {out}: the plot is a .png file (the table goes beside it as .md)")
    points, base, pair = gather(folders, x, y, skip)
    front = mark_front(points, _lower(pair[0]), _lower(pair[1]))
    table = out.with_suffix(".md")
    write_text(table, table_markdown(points, base, pair))
    plot_tradeoff(points, base, pair, front, out, goal)
    return {"points": points, "front": front, "base": base, "columns": pair, "files": [out, table]}
