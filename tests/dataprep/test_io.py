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


def laughs(levels: int = 9) -> str:
    """A "billion laughs" YAML: each level is a list of ten aliases of the one before, so
    a few hundred bytes stand for 10**levels strings."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_a_yaml_bomb_is_refused_everywhere_yaml_is_read_and_fast(tmp_path):
    import time

    import pytest
    from click.testing import CliRunner

    from cosmosage.dataprep.io import read_yaml
    from cosmosage.dataprep.records import DataError, expanded_nodes, load_yaml_text
    from cosmosage.tools.cli.main import main
    from cosmosage.tools.eval.suites import load_suite

    # anchors that stay small load as usual, aliases and all
    assert load_yaml_text("a: &x [1, 2]\nb: *x\n", "small.yaml") == {"a": [1, 2], "b": [1, 2]}
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("prompts: []\n" + laughs())
    t0 = time.monotonic()
    with pytest.raises(DataError, match=r"bomb.yaml:1: the YAML expands to more than 1,000,000"):
        read_yaml(bomb)
    with pytest.raises(DataError, match="expands to more than"):
        load_suite(bomb)
    recipe = tmp_path / "bomb_recipe.yaml"
    recipe.write_text("base_model: x\n" + laughs())
    res = CliRunner().invoke(main, ["recipe", "check", str(recipe)])
    assert res.exit_code != 0 and "expands to more than 1,000,000 values" in res.output
    assert "Traceback" not in res.output
    assert time.monotonic() - t0 < 10
    import yaml

    assert expanded_nodes(yaml.compose(laughs(3))) == 1 + 3 * 2 + 10 + 10 * 11 + 10 * (1 + 10 * 11)


def test_a_killed_runs_temporary_files_are_removed_by_the_next_write(tmp_path):
    import time

    out = tmp_path / "out.jsonl"
    dead = tmp_path / ".out.jsonl.abc123.tmp"  # what a SIGKILL leaves behind
    dead.write_text("")
    live = tmp_path / ".out.jsonl.def456.tmp"  # another run's, still being written
    live.write_text("")
    other = tmp_path / ".other.jsonl.abc123.tmp"
    other.write_text("")
    hours_ago = time.time() - 2 * 3600
    for p in (dead, other):
        os.utime(p, (hours_ago, hours_ago))
    write_jsonl(out, [{"a": 1}])
    assert not dead.exists() and live.exists() and other.exists()
    assert out.read_text() == '{"a": 1}\n'


def test_a_bom_starts_a_jsonl_file_without_costing_its_first_record(tmp_path):
    from cosmosage.dataprep.io import read_jsonl

    path = tmp_path / "qa.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"b": 2}\n')
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (2, {"b": 2})]


def test_a_binary_file_read_as_yaml_is_one_error_naming_file_and_line(tmp_path):
    import pytest

    from cosmosage.dataprep.io import read_yaml
    from cosmosage.dataprep.records import DataError

    path = tmp_path / "spec.yaml"
    path.write_bytes(b"sources:\n  - \x01\x02binary\n")
    with pytest.raises(DataError, match=rf"^{path}:2: not a YAML text file: character U\+0001"):
        read_yaml(path)
