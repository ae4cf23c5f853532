"""`sweep tradeoff`: configurations of several sweeps on two metrics, seeds pooled, the
front marked, the table and plot written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmosage.tools.run.sweep import SweepError
from cosmosage.tools.run.sweep_tradeoff import gather, mark_front, spread_bar, tradeoff


def make_sweep(runs: Path, name: str, sets: list[str], combos: list[dict]) -> Path:
    """A sweep folder of study/facts under `runs` whose combinations ran (or not) with the
    given grid sets and final scores ({"sets": [...], "general": .., "held_out": ..})."""
    folder = runs / "sweeps" / "study" / "facts" / name
    folder.mkdir(parents=True)
    doc = {"recipe": "study/facts", "grid": {}, "sets": sets, "unsets": [], "name": name,
           "stages": ["facts"], "combinations": []}  # fmt: skip
    for i, c in enumerate(combos, start=1):
        run = f"study/facts/{name}-{i}"
        status = c.get("status", "complete")
        doc["combinations"].append(
            {"index": i, "values": {}, "sets": c["sets"], "status": status, "run": run}
        )
        for s in c["sets"]:
            key, _, value = s.partition("=")
            doc["grid"].setdefault(key, []).append(value)
        (runs / run / "eval").mkdir(parents=True)
        scores = {"general": c["general"], "held_out": c["held_out"]}
        record = {
            "stages": {},
            "eval": {"facts": scores, "base": {"general": 1.0, "held_out": 0.0}},
        }
        (runs / run / "run.json").write_text(json.dumps(record))
        counts = {"facts": {"held_out": [round(c["held_out"] * 23), 23]}}
        (runs / run / "eval" / "scores.json").write_text(json.dumps({"counts": counts}))
    (folder / "sweep.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture
def sweeps(tmp_path) -> list[Path]:
    seeds = make_sweep(
        tmp_path, "seeds", ["recipe.choose.method=full"],
        [
            {"sets": ["seed=1", "recipe.choose.format=a"], "general": 0.80, "held_out": 0.90},
            {"sets": ["seed=2", "recipe.choose.format=a"], "general": 0.70, "held_out": 1.00},
            {"sets": ["seed=1", "recipe.choose.format=b"], "general": 0.90, "held_out": 0.50},
            {"sets": ["seed=2", "recipe.choose.format=b"], "general": 0.0, "held_out": 0.0,
             "status": "failed"},
        ],
    )  # fmt: skip
    other = make_sweep(
        tmp_path, "lr", ["recipe.choose.method=full", "seed=1"],
        [
            # worse than `a` on both means: not on the front
            {"sets": ["recipe.choose.format=a", "learning_rate=0.3"], "general": 0.70,
             "held_out": 0.60},
        ],
    )  # fmt: skip
    return [seeds, other]


def test_seeds_of_one_configuration_pool_and_failed_runs_are_left_out(sweeps):
    points, base, pair = gather(sweeps, "general", "held_out")
    assert pair == ("final.general", "final.held_out")
    assert base == {"final.general": 1.0, "final.held_out": 0.0}
    by_label = {p.label: p for p in points}
    assert set(by_label) == {"format=a", "format=b", "format=a, learning_rate=0.3"}
    a = by_label["format=a"]
    assert a.seeds == ["1", "2"] and a.x == pytest.approx(0.75) and a.y == pytest.approx(0.95)
    assert by_label["format=b"].seeds == ["1"]  # seed 2 failed
    # several runs: the bar is their range; one run: its 95% interval from the counts
    assert spread_bar(a.ys, a.y_counts) == (0.9, 1.0, "runs")
    lo, hi, kind = spread_bar(by_label["format=b"].ys, by_label["format=b"].y_counts)
    assert kind == "95% interval" and lo < 0.5 < hi
    assert spread_bar([0.9], [None]) == (0.9, 0.9, "")
    # --skip leaves out runs by a setting, a choice named with or without its prefix
    # (values compare as values: 3.0e-1 is the run's 0.3)
    kept, _, _ = gather(sweeps, "general", "held_out", skip=["format=b", "learning_rate=3.0e-1"])
    assert [p.label for p in kept] == ["study/facts"]  # one point left: named by its recipe
    assert kept[0].seeds == ["1", "2"]


def test_the_front_holds_what_no_other_beats_on_both(sweeps):
    points, _, _ = gather(sweeps, "general", "held_out")
    front = mark_front(points, x_lower=False, y_lower=False)
    assert [p.label for p in front] == ["format=a", "format=b"]  # ordered along x
    # with KL on x, lower is better (as for any drift from the base): the check turns
    from cosmosage.tools.run.sweep_report import lower_is_better

    assert lower_is_better("final.kl", {"grid": {}}) and lower_is_better(
        "final.changed", {"grid": {}}
    )
    p = {q.label: q for q in points}
    p["format=a, learning_rate=0.3"].xs = [0.1]
    front = mark_front(points, x_lower=True, y_lower=False)
    assert {q.label for q in front} == {"format=a", "format=a, learning_rate=0.3"}


def test_tradeoff_writes_the_table_and_plot_and_the_cli_prints_the_front(sweeps, tmp_path):
    from cosmosage.tools.cli.main import main

    out = tmp_path / "plots" / "t.png"
    result = CliRunner().invoke(
        main, ["sweep", "tradeoff", *map(str, sweeps), "--out", str(out), "--goal-x", "0.95",
              "--goal-y", "0.95"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000
    table = out.with_suffix(".md").read_text().splitlines()
    assert table[2] == "| | base model | - | 0% | 100% | |"
    assert (
        table[3]
        == "| 1 | format=a | 2 (1, 2) | 95% [90-100 over runs] | 75% [70-80 over runs] | yes |"
    )
    assert table[4].startswith("| 2 | format=a, learning_rate=0.3 | 1 (1) | 60% [")
    assert table[4].endswith("| 70% |  |")
    assert "front: format=a; format=b" in result.output


def test_unknown_metric_and_nothing_finished_are_errors_naming_the_folder(sweeps, tmp_path):
    with pytest.raises(SweepError, match=r"seeds: --x/--y nothing: no such column"):
        gather(sweeps, "nothing", "held_out")
    empty = make_sweep(tmp_path / "e", "empty", [], [
        {"sets": ["seed=1"], "general": 0.5, "held_out": 0.5, "status": "failed"}
    ])  # fmt: skip
    with pytest.raises(SweepError, match="no finished run with both metrics"):
        gather([empty], "general", "held_out")
    with pytest.raises(SweepError, match=r"\.png"):
        tradeoff(sweeps, "general", "held_out", tmp_path / "t.svg")


def test_one_setting_typed_two_ways_is_one_configuration(tmp_path):
    one = make_sweep(tmp_path, "a", ["learning_rate=3e-4"],
                     [{"sets": ["seed=1"], "general": 0.8, "held_out": 0.9}])  # fmt: skip
    two = make_sweep(tmp_path, "b", ["seed=2"],
                     [{"sets": ["learning_rate=3.0e-4"], "general": 0.6, "held_out": 0.7}])  # fmt: skip
    (point,), _, _ = gather([one, two], "general", "held_out")
    assert point.seeds == ["1", "2"] and point.x == pytest.approx(0.7)
