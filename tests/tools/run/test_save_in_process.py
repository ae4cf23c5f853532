"""The save-in-process plugin (tools/run/save_in_process.py): a one-process save_to_disk
starts no pool and writes what the plain call writes; larger num_proc is left alone."""

from __future__ import annotations

import pytest
from datasets import Dataset, load_from_disk

from cosmosage.tools.run import save_in_process


class NoPool:
    """Stands in for datasets' multiprocess module: any pool is a test failure."""

    def get_context(self, method):
        raise AssertionError(f"a {method} pool was started")


@pytest.fixture
def unpatched(monkeypatch):
    """Dataset.save_to_disk as datasets has it, restored after the test."""
    monkeypatch.setattr(Dataset, "save_to_disk", Dataset.save_to_disk)
    save = Dataset.save_to_disk
    while getattr(save, save_in_process.MARK, False):
        save = save.__wrapped__
    monkeypatch.setattr(Dataset, "save_to_disk", save)
    return Dataset.save_to_disk


def test_one_process_saves_start_no_pool_and_write_the_same_rows(tmp_path, monkeypatch, unpatched):
    import datasets.arrow_dataset as arrow

    ds = Dataset.from_dict({"input_ids": [[1, 2, 3]] * 40, "labels": [[1, -100, 3]] * 40})
    monkeypatch.setattr(arrow, "mp", NoPool())
    with pytest.raises(AssertionError, match="spawn pool"):  # what datasets does unpatched
        ds.save_to_disk(str(tmp_path / "plain"), num_proc=1)

    assert save_in_process.patch() is True
    assert save_in_process.patch() is False  # once
    ds.save_to_disk(str(tmp_path / "one"), num_proc=1)
    back = load_from_disk(str(tmp_path / "one"))
    assert back.to_dict() == ds.to_dict()
    assert len(list((tmp_path / "one").glob("*.arrow"))) == 1


def test_more_processes_are_left_to_datasets(tmp_path, monkeypatch, unpatched):
    import datasets.arrow_dataset as arrow

    save_in_process.patch()
    monkeypatch.setattr(arrow, "mp", NoPool())
    ds = Dataset.from_dict({"x": list(range(8))})
    with pytest.raises(AssertionError, match="spawn pool"):
        ds.save_to_disk(str(tmp_path / "two"), num_proc=2)
