"""PNG plots for run reports and model cards: loss curves per stage, scores per model,
and the calibration of the self-consistency flag. matplotlib with the Agg backend (no
screen needed); every function writes one file and returns its path."""

from __future__ import annotations

import textwrap
from pathlib import Path

COLORS = ["#1f5f8b", "#d1495b", "#edae49", "#00798c", "#66a182", "#8d96a3"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(stages: dict[str, dict], out: str | Path) -> Path:
    """Train loss (thin) and held-out loss (markers) per step, one panel per stage, from
    each stage's metrics.json (`train_loss`, `eval_loss`)."""
    plt = _pyplot()
    n = max(len(stages), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False)
    for ax, (name, m) in zip(axes[0], stages.items(), strict=False):
        train, evals = m.get("train_loss") or [], m.get("eval_loss") or []
        if train:
            ax.plot(
                [t["step"] for t in train],
                [t["loss"] for t in train],
                color=COLORS[0],
                lw=1.2,
                label="train loss",
            )
        if evals:
            ax.plot(
                [e["step"] for e in evals],
                [e["eval_loss"] for e in evals],
                "o-",
                color=COLORS[1],
                lw=1.5,
                label="held-out loss",
            )
        best = m.get("best_checkpoint") or {}
        if best.get("eval_loss") is not None:
            ax.axvline(best["step"], color="grey", ls=":", lw=1)
            ax.annotate(
                "selected",
                (best["step"], best["eval_loss"]),
                textcoords="offset points",
                xytext=(4, 8),
                fontsize=8,
                color="grey",
            )
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_scores(
    scores: dict[str, dict[str, float]],
    metrics: list[tuple[str, str]],
    out: str | Path,
    title: str = "Scores per model",
) -> Path:
    """Grouped bars: one group per metric (key, label), one bar per model, values in [0, 1]."""
    plt = _pyplot()
    models = list(scores)
    shown = [(k, label) for k, label in metrics if any(k in scores[m] for m in models)]
    # wide enough for the bars, never wider than a page; more models than COLORS take
    # distinct colours from a qualitative colour map instead of repeating
    fig, ax = plt.subplots(
        figsize=(min(14.0, max(5.0, 1.3 * len(shown) * max(len(models), 1) / 2 + 2)), 3.8)
    )
    width = 0.8 / max(len(models), 1)
    if len(models) <= len(COLORS):
        colors = COLORS
    else:
        cmap = plt.get_cmap("tab20" if len(models) > 10 else "tab10")
        colors = [cmap(i) for i in range(len(models))]
    for j, model in enumerate(models):
        xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(shown))]
        vals = [scores[model].get(k, 0.0) or 0.0 for k, _ in shown]
        bars = ax.bar(xs, vals, width * 0.95, color=colors[j % len(colors)], label=model)
        for b, v in zip(bars, vals, strict=True):
            ax.annotate(
                f"{v:.0%}",
                (b.get_x() + b.get_width() / 2, v),
                ha="center",
                va="bottom",
                fontsize=7 if len(models) <= 4 else 5.5,
                xytext=(0, 1),
                textcoords="offset points",
            )
    # long labels wrap onto a second line instead of running into their neighbours
    ax.set_xticks(range(len(shown)), [textwrap.fill(label, 18) for _, label in shown], fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("share passed")
    ax.set_title(title, fontsize=10)
    if len(models) <= 4:
        ax.legend(fontsize=8, ncols=len(models), loc="upper left")
    else:  # beside the bars, where it hides none of them
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_calibration(bins: list[dict], out: str | Path, auroc: float | None = None) -> Path:
    """Share of correct answers per self-consistency agreement bin, with the answer counts."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    mids = [(b["lo"] + b["hi"]) / 2 for b in bins]
    acc = [b["accuracy"] for b in bins]
    ax.bar(
        mids,
        acc,
        width=[b["hi"] - b["lo"] for b in bins],
        color=COLORS[3],
        alpha=0.8,
        edgecolor="white",
    )
    for x, a, b in zip(mids, acc, bins, strict=True):
        ax.annotate(f"n={b['n']}", (x, a), ha="center", va="bottom", fontsize=7)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("agreement between samples")
    ax.set_ylabel("share of answers correct")
    title = "Self-consistency calibration"
    if auroc is not None:
        title += f" (AUROC {auroc:.2f})"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out)


def save_figure(fig, out: str | Path) -> Path:
    """Write a figure as PNG atomically (a reader never sees half a file) and close it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    tmp.replace(out)
    return out
