"""Structured-output sets: JSON assistant turns that parse and match the user's schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.chat.structured import build_structured, load_schema
from cosmosage.dataprep.records import DataError
from cosmosage.tools.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "samples/structured/canto_refs.schema.yaml"


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_pairs_become_json_conversations_and_bad_targets_are_rejected(tmp_path):
    src = tmp_path / "pairs.jsonl"
    src.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "text": "In the fourth line of the first Canto",
                        "target": {"references": [{"canto": 1, "lines": [4]}]},
                    }
                ),
                json.dumps(
                    {
                        "text": "Canto 2, lines 3 and 4",
                        "target": '{"references": [{"canto": 2, "lines": [3, 4]}]}',
                    }
                ),
                json.dumps(
                    {"text": "broken target string", "target": '{"references": [{"canto": 2,'}
                ),
                json.dumps(
                    {
                        "text": "canto as a word",
                        "target": {"references": [{"canto": "two", "lines": [1]}]},
                    }
                ),
                json.dumps({"text": "extra key", "target": {"references": [], "note": "x"}}),
                '{"text": "broken line", "target": ',
                json.dumps({"text": "", "target": {"references": []}}),
                json.dumps({"target": {"references": []}}),
                json.dumps({"text": ["a"], "target": {"references": []}}),
                json.dumps({"text": 17, "target": {"references": []}}),
            ]
        )
        + "\n"
    )
    out = tmp_path / "refs.jsonl"
    res = build_structured([str(src)], out, SCHEMA, instruction="List the references as JSON.")
    assert res == {"output": str(out), "records": 2, "rejected": 8}
    recs = lines(out)
    assert recs[0]["messages"] == [
        {"role": "system", "content": "List the references as JSON."},
        {"role": "user", "content": "In the fourth line of the first Canto"},
        {"role": "assistant", "content": '{"references": [{"canto": 1, "lines": [4]}]}'},
    ]
    assert json.loads(recs[1]["messages"][-1]["content"]) == {
        "references": [{"canto": 2, "lines": [3, 4]}]
    }
    rejects = {r["line"]: r["reason"] for r in lines(tmp_path / "refs.rejects.jsonl")}
    assert rejects[3].startswith("target: invalid JSON")
    assert "at /references/0/canto" in rejects[4] and "'two' is not of type 'integer'" in rejects[4]
    assert "Additional properties" in rejects[5]
    assert "invalid JSON" in rejects[6]
    assert "empty user turn" in rejects[7]
    assert "field 'text': missing" in rejects[8]
    assert rejects[9] == "field 'text': expected text, got list"  # never the text "['a']"
    assert rejects[10] == "field 'text': expected text, got int"


def test_schema_itself_is_checked(tmp_path):
    bad = tmp_path / "bad.schema.json"
    bad.write_text('{"type": "objekt"}')
    with pytest.raises(DataError, match="not a valid JSON Schema"):
        load_schema(bad)


def test_cli_structured_on_bundled_sample_with_schema_in_prompt(tmp_path):
    out = tmp_path / "refs.jsonl"
    result = CliRunner().invoke(
        main,
        ["data", "structured", str(ROOT / "samples/structured/canto_refs.jsonl"), "--schema", str(SCHEMA),
         "--instruction", "List every canto and line reference as JSON.", "--include-schema", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    recs = lines(out)
    assert len(recs) == 16
    assert "JSON Schema:" in recs[0]["messages"][0]["content"]
    for rec in recs:
        assert "references" in json.loads(rec["messages"][-1]["content"])
