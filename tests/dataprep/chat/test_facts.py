"""Fact sets: three renderings of the same facts, a chat set and a recall suite."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cosmosage.dataprep.chat.facts import build_facts, read_facts
from cosmosage.dataprep.io import Reject
from cosmosage.tools.cli.main import main
from cosmosage.tools.models.evaluate import load_suite

ROOT = Path(__file__).resolve().parents[3]

TABLE = """\
relations:
  orbits:
    statement: "{subject} orbits {object}."
    question: "What does {subject} orbit?"
  radius:
    statement: "{subject} has a radius of about {object}."
    question: "What is the radius of {subject}?"
facts:
  - {subject: the Moon, relation: orbits, object: the Earth}
  - {subject: the Moon, relation: radius, object: 1737 km, expect: ["1737"]}
  - {subject: Phobos, relation: orbits, object: Mars}
  - {subject: Deimos, relation: orbits}
  - {subject: Titan, relation: density, object: 1.88 g/cm3}
  - {subject: Io, relation: orbits, object: Jupiter, pattern: "Io is a moon."}
  - {subject: Phobos, relation: orbits, object: Mars}
"""


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_bad_rows_rejected_with_line(tmp_path):
    table = tmp_path / "facts.yaml"
    table.write_text(TABLE)
    items = list(read_facts(table))
    facts = [i for i in items if not isinstance(i, Reject)]
    rejects = {r.line: r.reason for r in items if isinstance(r, Reject)}
    assert [f.object for f in facts] == ["the Earth", "1737 km", "Mars"]
    assert "'object'" in rejects[12]
    assert "no sentence pattern" in rejects[13]
    assert "does not mention {object}" in rejects[14]
    assert rejects[15] == "duplicate fact"


def test_renderings_dialogue_and_recall_suite(tmp_path):
    table = tmp_path / "facts.yaml"
    table.write_text(TABLE)
    res = build_facts(table, tmp_path / "out", seed=1, speakers=("Ana", "Ben"))
    assert res["facts"] == 3 and res["rejected"] == 4
    statements = [r["text"] for r in lines(tmp_path / "out/statements.jsonl")]
    assert statements == [
        "The Moon orbits the Earth.",
        "The Moon has a radius of about 1737 km.",
        "Phobos orbits Mars.",
    ]
    qa = lines(tmp_path / "out/qa.jsonl")
    assert (
        qa[1]["text"]
        == "Question: What is the radius of the Moon?\nAnswer: The Moon has a radius of about 1737 km."
    )
    dialogues = lines(tmp_path / "out/dialogue.jsonl")
    assert [d["subject"] for d in dialogues] == ["the Moon", "Phobos"]
    text = "\n".join(d["text"] for d in dialogues)
    for sentence in statements:
        assert text.count(sentence) == 1  # each fact mentioned exactly once
    assert all(line.split(":")[0] in ("Ana", "Ben") for line in text.splitlines())
    chat = lines(tmp_path / "out/chat.jsonl")
    assert chat[2]["messages"] == [
        {"role": "user", "content": "What does Phobos orbit?"},
        {"role": "assistant", "content": "Phobos orbits Mars."},
    ]
    suite = load_suite(tmp_path / "out/recall.yaml")  # the format `model eval` reads
    assert [p["expect"] for p in suite] == [["the Earth"], ["1737"], ["Mars"]]
    assert suite[0]["prompt"] == "What does the Moon orbit?" and suite[0]["kind"] == "domain"
    rejects = lines(tmp_path / "out/facts.rejects.jsonl")
    assert len(rejects) == 4 and all(r["source"] == str(table) for r in rejects)
    manifest = json.loads((tmp_path / "out/qa.manifest.json").read_text())
    assert manifest["kept"] == 3 and manifest["dropped_total"] == 4


def test_csv_table(tmp_path):
    table = tmp_path / "facts.csv"
    table.write_text(
        "subject,relation,object,pattern,question,expect\n"
        'the CMB,temperature,2.725 K,"{subject} has a temperature of {object}.",,2.7|2.73\n'
        "the CMB,colour\n",
        encoding="utf-8",
    )
    items = list(read_facts(table))
    fact, reject = items
    assert fact.statement == "The CMB has a temperature of 2.725 K."
    assert fact.question == "What is the temperature of the CMB?"
    assert fact.expect == ["2.7", "2.73"]
    assert isinstance(reject, Reject) and reject.line == 3


def test_cli_facts_on_bundled_sample(tmp_path):
    out = tmp_path / "facts"
    result = CliRunner().invoke(
        main,
        ["data", "facts", str(ROOT / "samples/facts/cosmology_facts.yaml"), "--out-dir", str(out)],
    )
    assert result.exit_code == 0, result.output
    res = json.loads(result.output.strip().splitlines()[-1])
    assert res["facts"] == 10 and res["rejected"] == 0
    assert len(load_suite(out / "recall.yaml")) == 10
    assert len(lines(out / "chat.jsonl")) == 10
