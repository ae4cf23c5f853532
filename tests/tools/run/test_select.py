"""recipe.select: a stage's checkpoint chosen by what it answers and how far it drifted."""

from __future__ import annotations

import json
import shutil

import pytest

from cosmosage.dataprep.records import DataError
from cosmosage.tools.run import metrics
from cosmosage.tools.run import select as sel

RULE = {"suites": ["s.yaml"], "maximize": "held_out", "general_drop": 0.05, "kl": 0.5}


def row(step, held_out, drop, kl=0.1):
    return {"step": step, "scores": {"held_out": held_out}, "general_drop": drop, "kl": kl}


def test_the_best_score_within_the_limits_wins_not_the_last_checkpoint():
    rows = [row(10, 0.50, 0.00), row(20, 0.75, 0.04), row(30, 0.90, 0.12), row(40, 0.95, 0.20)]
    chosen, ok = sel.choose(rows, RULE)
    assert chosen["step"] == 20 and ok
    # a tie goes to the earlier step, which has drifted less
    chosen, _ = sel.choose([row(10, 0.75, 0.0), row(20, 0.75, 0.0)], RULE)
    assert chosen["step"] == 10
    # the KL limit counts too
    chosen, ok = sel.choose([row(10, 0.5, 0.0, kl=0.1), row(20, 0.9, 0.0, kl=0.9)], RULE)
    assert chosen["step"] == 10 and ok


def test_when_nothing_is_within_the_limits_the_least_breaking_one_is_kept_and_said():
    chosen, ok = sel.choose([row(10, 0.9, 0.30), row(20, 0.2, 0.10), row(30, 0.95, 0.40)], RULE)
    assert chosen["step"] == 20 and not ok


def test_otherwise_best_keeps_the_highest_score_past_the_limits():
    rows = [row(10, 0.0, 0.1202), row(20, 0.26, 0.125), row(30, 0.83, 0.1731)]
    # the soups of docs/study.md: past the limit, least-over keeps a model with no recall
    assert sel.choose(rows, RULE)[0]["step"] == 10
    chosen, ok = sel.choose(rows, {**RULE, "otherwise": "best"})
    assert chosen["step"] == 30 and not ok
    # within the limits the rule is the same whatever `otherwise` says
    rows.append(row(40, 0.5, 0.01))
    assert sel.choose(rows, {**RULE, "otherwise": "best"}) == (rows[-1], True)


def test_otherwise_stop_stops_with_the_table_written(stage, tiny_model, tmp_path, monkeypatch):
    m = metrics.collect(stage / "output")
    monkeypatch.setattr(
        sel, "score_checkpoints", lambda *a: ({}, [row(2, 0.6, 0.3), row(4, 0.8, 0.25)])
    )
    rule = {**RULE, "otherwise": "stop"}
    echoed = []
    with pytest.raises(
        DataError, match="no checkpoint keeps within the limits .*otherwise is stop"
    ):
        sel.select_checkpoint(
            {"base_model": str(tiny_model)}, rule, stage, m, tmp_path, echoed.append
        )
    table = json.loads((stage / "select.json").read_text())
    assert table["chosen"] is None and table["within"] is False
    assert [r["step"] for r in table["checkpoints"]] == [2, 4]
    assert any("kept: none: the run stops" in e for e in echoed)


def test_a_bad_rule_is_refused():
    for bad, msg in [
        ({"suites": ["a"]}, "needs `suites`"),
        ({**RULE, "maximise": "x"}, "unknown key"),
        ({**RULE, "otherwise": "last"}, "otherwise must be one of least-over, best, stop"),
    ]:
        with pytest.raises(DataError, match=msg):
            sel.check_rule(bad)


@pytest.fixture
def stage(tmp_path, tiny_model):
    """A stage folder with two full-weight checkpoints of the tiny model."""
    out = tmp_path / "stage" / "output"
    for step in (2, 4):
        shutil.copytree(tiny_model, out / f"checkpoint-{step}")
    for f in tiny_model.iterdir():
        if "token" in f.name:
            shutil.copy(f, out / f.name)
    return tmp_path / "stage"


def test_the_scripted_metric_decides_and_the_table_is_written(
    stage, tiny_model, tmp_path, monkeypatch
):
    m = metrics.collect(stage / "output")
    assert [c["step"] for c in m["checkpoints"]] == [2, 4]

    def scripted(parent, candidates, rule, root):
        assert [s for s, _ in candidates] == [2, 4] and parent == str(tiny_model)
        return {"held_out": 0.0}, [row(2, 0.6, 0.02), row(4, 0.8, 0.25)]

    monkeypatch.setattr(sel, "score_checkpoints", scripted)
    echoed = []
    best = sel.select_checkpoint(
        {"base_model": str(tiny_model)}, RULE, stage, m, tmp_path, echoed.append
    )
    assert best["step"] == 2 and best["within_limits"] and best["path"].endswith("checkpoint-2")
    table = json.loads((stage / "select.json").read_text())
    assert table["chosen"] == 2 and [r["step"] for r in table["checkpoints"]] == [2, 4]
    assert any("<- chosen" in e and "step 2" in e for e in echoed)
    assert not (stage / "select").exists()  # the merged candidates are not kept


def test_checkpoints_are_really_asked_and_their_drift_measured(stage, tiny_model, tmp_path):
    suite = tmp_path / "g.yaml"
    suite.write_text("prompts:\n  - {id: a, prompt: 'Hi?', expect: ['zz'], kind: general}\n")
    rule = {"suites": [str(suite)], "maximize": "all", "max_new_tokens": 3}
    m = metrics.collect(stage / "output")
    best = sel.select_checkpoint(
        {"base_model": str(tiny_model)}, rule, stage, m, tmp_path, lambda s: None
    )
    table = json.loads((stage / "select.json").read_text())
    # the same weights as the parent: no drop, no drift, so the earlier step wins
    assert [r["kl"] for r in table["checkpoints"]] == [0.0, 0.0]
    assert [r["general_drop"] for r in table["checkpoints"]] == [0.0, 0.0]
    assert best["step"] == 2


def test_recipe_check_reports_a_bad_rule_and_too_few_kept_checkpoints():
    from cosmosage.tools.recipe.check import check_select
    from cosmosage.tools.recipe.render import Rendered

    ok = {"suites": ["s.yaml"], "maximize": "all"}
    cfg = {"max_steps": 60, "save_steps": 20, "save_total_limit": 1}
    got = check_select(Rendered("r", cfg, {"select": ok}))
    assert (
        len(got) == 1
        and got[0].severity == "warning"
        and "fewer checkpoints than the 3" in got[0].message
    )
    assert check_select(Rendered("r", {**cfg, "save_total_limit": 3}, {"select": ok})) == []
    # unset, Axolotl keeps 4: enough for 3, not for 6
    assert check_select(Rendered("r", {"max_steps": 60, "save_steps": 20}, {"select": ok})) == []
    unset = check_select(Rendered("r", {"max_steps": 120, "save_steps": 20}, {"select": ok}))
    assert "save_total_limit 4 keeps fewer checkpoints than the 6" in unset[0].message
    got = check_select(Rendered("r", cfg, {"select": {"maximize": "all"}}))
    assert got[0].severity == "error" and "needs `suites`" in got[0].message


def test_early_stopping_rules_are_checked():
    from cosmosage.tools.recipe.check import check_select
    from cosmosage.tools.recipe.render import Rendered
    from cosmosage.tools.run.early_stop import should_stop

    rule = {"suites": ["s.yaml"], "maximize": "held_out", "general_drop": 0.05, "patience": 2}
    cfg = {"max_steps": 100, "save_steps": 10, "save_total_limit": 2}
    got = check_select(Rendered("r", cfg, {"select": rule}))
    assert "save_total_limit 2 is below 3" in got[0].message and got[0].severity == "error"
    assert check_select(Rendered("r", {**cfg, "save_total_limit": 10}, {"select": rule})) == []
    multi = Rendered(
        "r", {**cfg, "save_total_limit": 10}, {"select": rule, "hardware": {"gpus": 8}}
    )
    assert "one training process" in check_select(multi)[0].message
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(DataError, match="patience"):
            sel.check_rule({**rule, "patience": bad})
    with pytest.raises(DataError, match="module:function"):
        sel.check_rule({**rule, "scorer": "nocolon"})
    # the best within the limits, then `patience` rows that do not beat it: stop
    rows = [row(10, 0.5, 0.0), row(20, 0.7, 0.0), row(30, 0.6, 0.0)]
    assert should_stop(rows, rule) == (False, rows[1])
    rows.append(row(40, 0.9, 0.2))  # higher, but past the general limit
    assert should_stop(rows, rule) == (True, rows[1])


def test_a_soup_rule_has_no_patience():
    with pytest.raises(DataError, match="unknown key.*patience"):
        sel.check_rule({**RULE, "patience": 2}, "recipe.soup.select", soup=True)
    sel.check_rule({**RULE, "parent": "m"}, "recipe.soup.select", soup=True)
