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
