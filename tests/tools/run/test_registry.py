"""The run registry: records per finished stage, latest model per recipe, family tree."""

from __future__ import annotations

from click.testing import CliRunner

from cosmosage.tools.cli.main import main
from cosmosage.tools.run import registry


def rec(recipe, run_id, parent, model, loss):
    return {
        "recipe": recipe,
        "run_id": run_id,
        "parent_model": parent,
        "model": model,
        "metrics": {"eval_loss_best": loss},
    }


def test_tree_hangs_each_model_under_its_parent(tmp_path):
    a, b, c = (tmp_path / n for n in ("a", "b", "c"))
    for p in (a, b, c):
        p.mkdir()
    registry.append(tmp_path, rec("fam/pretrain", "fam/1", "org/base-7b", str(a), 2.0))
    registry.append(tmp_path, rec("fam/instruct", "fam/1", str(a), str(b), 1.5))
    registry.append(tmp_path, rec("fam/instruct", "fam/2", str(a), str(c), 1.25))
    lines = registry.tree(tmp_path)
    assert lines[0] == "org/base-7b"
    assert lines[1].startswith("  └─ fam/pretrain [fam/1] eval_loss=2.0000")
    assert [line.startswith("    └─ fam/instruct") for line in lines[2:]] == [True, True]
    assert registry.latest_model(tmp_path, "fam/instruct") == str(c)
    assert registry.latest_model(tmp_path, "fam/other") is None
    out = CliRunner().invoke(main, ["runs", "list", "--runs-dir", str(tmp_path)]).output
    assert out.count("fam/instruct") == 2 and "eval_loss=1.25" in out


def test_a_project_folder_spelt_two_ways_is_one_root_printed_relative(tmp_path, monkeypatch):
    """A soup records its parents resolved, a stage as given: the tree joins them and
    prints project folders relative to the project, outside folders as recorded."""
    project = tmp_path / "project"
    base = project / "build" / "models" / "base"
    base.mkdir(parents=True)
    outside = tmp_path / "elsewhere" / "tuned"
    outside.mkdir(parents=True)
    monkeypatch.setattr(registry, "ROOT", project)
    runs = tmp_path / "runs"
    registry.append(runs, rec("fam/tuned", "fam/1", "build/models/base", str(outside), 1.5))
    soup = {**rec("soup", "soup/1", str(base.resolve()), str(project / "soup"), None)}
    soup |= {"parents": [str(base.resolve())], "soup": {"method": "linear", "weights": [1.0]}}
    registry.append(runs, soup)
    lines = registry.tree(runs)
    assert lines[0] == "build/models/base" and len([x for x in lines if "└" not in x]) == 1
    assert lines[1].endswith(f"  {outside}")
    assert lines[2].endswith("  soup")


def test_rerecording_a_model_replaces_its_record(tmp_path):
    (tmp_path / "m").mkdir()
    registry.append(tmp_path, rec("r", "r/1", "base", str(tmp_path / "m"), 3.0))
    registry.append(tmp_path, rec("r", "r/1", "base", str(tmp_path / "m"), 2.0))
    recs = registry.records(tmp_path)
    assert len(recs) == 1 and recs[0]["metrics"]["eval_loss_best"] == 2.0


def test_latest_model_skips_models_deleted_from_disk(tmp_path):
    registry.append(tmp_path, rec("r", "r/1", "base", str(tmp_path / "gone"), 3.0))
    assert registry.latest_model(tmp_path, "r") is None


def test_a_bad_line_is_skipped_with_its_line_kept_and_named(tmp_path, capsys):
    """A half-written or hand-edited line never crashes `runs list`/`tree`, and adding or
    annotating records keeps it as it was (the user's to mend, not ours to lose)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    registry.append(tmp_path, rec("fam/pretrain", "fam/1", "org/base", str(tmp_path / "a"), 2.0))
    path = registry.registry_path(tmp_path)
    path.write_text(path.read_text() + '{"recipe": "fam/inst\n[1, 2]\n')
    registry.append(
        tmp_path, rec("fam/instruct", "fam/2", str(tmp_path / "a"), str(tmp_path / "b"), 1.5)
    )
    registry.annotate(tmp_path, str(tmp_path / "b"), scores={"paper_only": 0.5})
    err = capsys.readouterr().err
    assert f"{path}:2: not a registry record, skipped" in err and f"{path}:3:" in err
    lines = path.read_text().splitlines()
    assert lines[1:3] == ['{"recipe": "fam/inst', "[1, 2]"]
    recs = registry.records(tmp_path)
    assert [r["run_id"] for r in recs] == ["fam/1", "fam/2"]
    assert recs[1]["scores"] == {"paper_only": 0.5}
    res = CliRunner().invoke(main, ["runs", "tree", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 0 and "paper_only=50%" in res.output
    res = CliRunner().invoke(main, ["runs", "list", "--runs-dir", str(tmp_path)])
    assert (
        res.exit_code == 0
        and "fam/2" in res.output
        and "registry.jsonl:2: not a registry" in res.output
    )


def test_losses_print_rounded_and_a_soup_prints_no_loss(tmp_path):
    """`runs list` and the checkpoint choice print a loss as `runs tree` does (4 decimals),
    and a record without one (a soup) shows no `eval_loss=None`."""
    from cosmosage.tools.recipe.render import Rendered
    from cosmosage.tools.run.launcher import choose_checkpoint, relora_final
    from cosmosage.tools.run.stage import Stage

    (tmp_path / "a").mkdir()
    (tmp_path / "s").mkdir()
    registry.append(
        tmp_path, rec("fam/tuned", "fam/1", "base", str(tmp_path / "a"), 1.7869982719421387)
    )
    registry.append(tmp_path, rec("soup", "soup/1", str(tmp_path / "a"), str(tmp_path / "s"), None))
    out = CliRunner().invoke(main, ["runs", "list", "--runs-dir", str(tmp_path)]).output
    tuned, soup = out.splitlines()
    assert "  eval_loss=1.7870  " in tuned and "1.78699" not in tuned
    assert "eval_loss" not in soup and "None" not in soup and soup.endswith(f"  {tmp_path / 's'}")

    said: list[str] = []
    stage = Stage("fam/tuned", "lora-facts", Rendered("fam/tuned", {}, {}))
    m = {
        "best_checkpoint": {"step": 2, "path": "x"},
        "eval_loss_before": 2.015995740890503,
        "eval_loss_best": 1.7869982719421387,
        "eval_loss": [{"step": 2, "eval_loss": 1.7869982719421387}],
        "steps": 2,
    }
    choose_checkpoint(stage, {}, tmp_path, m, tmp_path, said.append)
    assert said == ["select lora-facts: checkpoint step 2 (eval loss 2.0160 -> 1.7870)"]
    relora_final({**m, "eval_loss_before": None}, tmp_path, "lora-facts", said.append)
    assert said[-1].endswith("restart; eval loss - -> 1.7870)")
