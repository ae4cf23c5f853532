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


def test_rerecording_a_model_replaces_its_record(tmp_path):
    (tmp_path / "m").mkdir()
    registry.append(tmp_path, rec("r", "r/1", "base", str(tmp_path / "m"), 3.0))
    registry.append(tmp_path, rec("r", "r/1", "base", str(tmp_path / "m"), 2.0))
    recs = registry.records(tmp_path)
    assert len(recs) == 1 and recs[0]["metrics"]["eval_loss_best"] == 2.0


def test_latest_model_skips_models_deleted_from_disk(tmp_path):
    registry.append(tmp_path, rec("r", "r/1", "base", str(tmp_path / "gone"), 3.0))
    assert registry.latest_model(tmp_path, "r") is None
