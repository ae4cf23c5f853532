"""The io module: atomic writes leave ordinary permissions; manifests say the command."""

from __future__ import annotations

import os
import sys

from cosmosage.dataprep.io import Manifest, write_json, write_jsonl


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_jsonl(tmp_path / "a.jsonl", [{"x": 1}])
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    for name in ("a.jsonl", "a.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_manifest_records_the_command_as_typed(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/x/tools/cli/main.py", "data", "corpus", "in"])
    assert Manifest(str(tmp_path / "o.jsonl")).command == ["cosmosage", "data", "corpus", "in"]
    monkeypatch.setattr(sys, "argv", ["/venv/bin/cosmosage", "data", "mix", "s.yaml"])
    assert Manifest(str(tmp_path / "o.jsonl")).command == ["cosmosage", "data", "mix", "s.yaml"]


def test_csv_with_a_byte_order_mark_keeps_its_first_column_name(tmp_path):
    """Spreadsheet programs save UTF-8 CSV with a BOM; the header must still read `subject`."""
    from cosmosage.dataprep.chat.facts import build_facts
    from cosmosage.dataprep.io import read_csv

    path = tmp_path / "facts.csv"
    path.write_bytes(
        "subject,relation,object\nthe Pell Array,first light,2031\n".encode("utf-8-sig")
    )
    assert [row for _, row in read_csv(path)] == [
        {"subject": "the Pell Array", "relation": "first light", "object": "2031"}
    ]
    assert build_facts(path, tmp_path / "out")["facts"] == 1
