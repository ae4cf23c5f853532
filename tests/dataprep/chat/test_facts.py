"""Fact sets: renderings of the same facts, a chat set, and a recall suite whose prompts
come in trained and held-out wordings."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cosmosage.dataprep.chat.facts import build_facts, read_facts, relation_patterns
from cosmosage.dataprep.records import DataError, Reject
from cosmosage.tools.cli.main import main
from cosmosage.tools.eval.suites import load_suite

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "samples/facts/cosmology_facts.yaml"
TRAINING = ("statements.jsonl", "qa.jsonl", "dialogue.jsonl", "chat.jsonl")

TABLE = """\
relations:
  orbits:
    statement: "{subject} orbits {object}."
    question: "What does {subject} orbit?"
  radius:
    statement: "{subject} has a radius of about {object}."
    questions:
      - "What is the radius of {subject}?"
      - "How big across is {subject}, as a radius?"
      - "What radius does {subject} have?"
facts:
  - {subject: the Moon, relation: orbits, object: the Earth}
  - {subject: the Moon, relation: radius, object: 1737 km, expect: ["1737"]}
  - {subject: Phobos, relation: orbits, object: Mars}
  - {subject: Deimos, relation: orbits}
  - {subject: Titan, relation: density, object: 1.88 g/cm3}
  - {subject: Io, relation: orbits, object: Jupiter, pattern: "Io is a moon."}
  - {subject: Phobos, relation: orbits, object: Mars}
"""

VERB_CSV = """\
subject,relation,object
the Halvorsen Prize,was awarded to,Mira Okonkwo
Keplar-9,orbits,the star Vessa
Keplar-9,has a radius of,3100 km
the Tolmir comet,was discovered by,the Odrin Survey
the Tolmir comet,belongs to,the Ashby family
the Odrin Survey,temperature,41 K
"""


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines()]


def strings(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in strings(v)]
    return []


def training_text(out: Path) -> str:
    """Every string of every training file written into `out`, lower-cased."""
    files = [p for p in out.glob("*.jsonl") if not p.name.endswith(".rejects.jsonl")]
    assert {p.name for p in files} == set(TRAINING)
    return "\n".join(s.lower() for p in files for rec in lines(p) for s in strings(rec))


def by_wording(suite: list[dict]) -> dict[str, dict[str, list[str]]]:
    """fact id -> {"trained": [prompts], "held_out": [prompts]}."""
    out: dict[str, dict[str, list[str]]] = {}
    for p in suite:
        out.setdefault(p["fact"], {"trained": [], "held_out": []})[p["wording"]].append(p["prompt"])
    return out


def check_held_out(out: Path) -> dict[str, dict[str, list[str]]]:
    """Each fact has trained and held-out prompts; no held-out prompt is in any training
    file; every trained prompt is a chat question."""
    suite = load_suite(out / "recall.yaml")
    assert {p["wording"] for p in suite} == {"trained", "held_out"}
    assert len({p["id"] for p in suite}) == len(suite)
    text = training_text(out)
    chat_questions = {r["messages"][0]["content"] for r in lines(out / "chat.jsonl")}
    wordings = by_wording(suite)
    for fact, w in wordings.items():
        assert w["trained"] and w["held_out"], fact
        for q in w["held_out"]:
            assert q.lower() not in text, q
        assert set(w["trained"]) <= chat_questions
    return wordings


def test_bad_rows_rejected_with_line(tmp_path):
    table = tmp_path / "facts.yaml"
    table.write_text(TABLE)
    items = list(read_facts(table))
    facts = [i for i in items if not isinstance(i, Reject)]
    rejects = {r.line: r.reason for r in items if isinstance(r, Reject)}
    assert [f.object for f in facts] == ["the Earth", "1737 km", "Mars"]
    assert "'object'" in rejects[15]
    assert "no sentence pattern" in rejects[16]  # density is not under relations:
    assert "does not mention {object}" in rejects[17]
    assert rejects[18] == "duplicate fact"


def test_an_entry_that_is_not_a_mapping_is_rejected_with_its_line(tmp_path):
    table = tmp_path / "facts.yaml"
    table.write_text(TABLE + "  - the Moon orbits the Earth\n  - [Io, orbits, Jupiter]\n")
    rejects = {r.line: r.reason for r in read_facts(table) if isinstance(r, Reject)}
    assert "expected a mapping" in rejects[19] and "expected a mapping" in rejects[20]


def test_renderings_dialogue_and_recall_suite(tmp_path):
    table = tmp_path / "facts.yaml"
    table.write_text(TABLE)
    res = build_facts(table, tmp_path / "out", seed=1, speakers=("Ana", "Ben"))
    out = tmp_path / "out"
    assert res["facts"] == 3 and res["rejected"] == 4
    statements = [r["text"] for r in lines(out / "statements.jsonl")]
    assert statements == [
        "The Moon orbits the Earth.",
        "The Moon has a radius of about 1737 km.",
        "Phobos orbits Mars.",
    ]
    facts = [f for f in read_facts(table, seed=1) if not isinstance(f, Reject)]
    # `orbits` gives one question: two derived wordings are added; `radius` gives three
    assert [len(f.questions) + len(f.held_out) for f in facts] == [3, 3, 3]
    assert all(len(f.held_out) == 1 for f in facts)
    orbit_wordings = {*facts[0].questions, *facts[0].held_out}
    assert orbit_wordings == {
        "What does the Moon orbit?",
        "The Moon orbits what?",
        "Fill in the blank: The Moon orbits ___.",
    }
    # facts of one relation hold out the same wording
    assert (
        facts[0].held_out[0].replace("the Moon", "Phobos").replace("The Moon", "Phobos")
        == (facts[2].held_out[0])
    )
    qa = lines(out / "qa.jsonl")
    chat = lines(out / "chat.jsonl")
    assert len(qa) == len(chat) == sum(len(f.questions) for f in facts) == 6
    for f in facts:
        asked = [r["messages"][0]["content"] for r in chat if r["fact"] == f.id]
        assert asked == f.questions
        assert all(r["messages"][1]["content"] == f.statement for r in chat if r["fact"] == f.id)
        assert [r["text"] for r in qa if r["fact"] == f.id] == [
            f"Question: {q}\nAnswer: {f.statement}" for q in f.questions
        ]
    dialogues = lines(out / "dialogue.jsonl")
    assert [d["subject"] for d in dialogues] == ["the Moon", "Phobos"]
    text = "\n".join(d["text"] for d in dialogues)
    for sentence in statements:
        assert text.count(sentence) == 1  # each fact mentioned exactly once
    assert all(line.split(":")[0] in ("Ana", "Ben") for line in text.splitlines())
    suite = load_suite(out / "recall.yaml")  # the format `cosmosage eval` reads
    assert len(suite) == 9 and all(p["kind"] == "domain" for p in suite)
    assert [p["expect"] for p in suite if p["wording"] == "held_out"] == [
        ["the Earth"],
        ["1737"],
        ["Mars"],
    ]
    assert suite[0]["id"] == f"{facts[0].id}/trained-1" and suite[0]["fact"] == facts[0].id
    check_held_out(out)
    rejects = lines(out / "facts.rejects.jsonl")
    assert len(rejects) == 4 and all(r["source"] == str(table) for r in rejects)
    manifest = json.loads((out / "qa.manifest.json").read_text())
    assert manifest["kept"] == 6 and manifest["dropped_total"] == 4


def test_csv_verb_phrases_without_patterns(tmp_path):
    table = tmp_path / "prizes.csv"
    table.write_text(VERB_CSV, encoding="utf-8")
    out = tmp_path / "out"
    res = build_facts(table, out)
    assert res["facts"] == 6 and res["rejected"] == 0
    assert (out / "facts.rejects.jsonl").read_text() == ""
    assert [r["text"] for r in lines(out / "statements.jsonl")] == [
        "The Halvorsen Prize was awarded to Mira Okonkwo.",
        "Keplar-9 orbits the star Vessa.",
        "Keplar-9 has a radius of 3100 km.",
        "The Tolmir comet was discovered by the Odrin Survey.",
        "The Tolmir comet belongs to the Ashby family.",
        "The temperature of the Odrin Survey is 41 K.",  # a name, not a verb phrase
    ]
    facts = [f for f in read_facts(table) if not isinstance(f, Reject)]
    wordings = [{*f.questions, *f.held_out} for f in facts]
    assert "What was the Halvorsen Prize awarded to?" in wordings[0]
    assert "The Halvorsen Prize was awarded to what?" in wordings[0]
    assert "Fill in the blank: The Halvorsen Prize was awarded to ___." in wordings[0]
    assert "What does Keplar-9 orbit?" in wordings[1]
    assert "What is the radius of Keplar-9?" in wordings[2]
    assert "Who was the Tolmir comet discovered by?" in wordings[3]
    assert "What does the Tolmir comet belong to?" in wordings[4]
    assert "What is the temperature of the Odrin Survey?" in wordings[5]
    assert all(f.questions and f.held_out for f in facts)
    assert len(lines(out / "qa.jsonl")) == sum(len(f.questions) for f in facts)
    check_held_out(out)


def test_yaml_without_relations_reads_relations_as_phrases(tmp_path):
    table = tmp_path / "facts.yaml"
    table.write_text("facts:\n  - {subject: the Prize, relation: was awarded to, object: Ada}\n")
    (fact,) = read_facts(table)
    assert fact.statement == "The Prize was awarded to Ada."
    assert fact.held_out


@pytest.mark.parametrize(
    "relation, sentence, direct",
    [
        (
            "temperature",
            "The {relation} of {subject} is {object}.",
            "What is the {relation} of {subject}?",
        ),
        (
            "comoving_size",
            "The {relation} of {subject} is {object}.",
            "What is the {relation} of {subject}?",
        ),
        ("was named after", "{subject} {relation} {object}.", "What was {subject} named after?"),
        ("is observed by", "{subject} {relation} {object}.", "Who is {subject} observed by?"),
        ("had a mass of", "{subject} {relation} {object}.", "What was the mass of {subject}?"),
        ("carries", "{subject} {relation} {object}.", "What does {subject} carry?"),
        ("reaches into", "{subject} {relation} {object}.", "What does {subject} reach into?"),
        ("discovered", "{subject} {relation} {object}.", None),
        ("born_in", "{subject} {relation} {object}.", None),
    ],
)
def test_relation_shapes(relation, sentence, direct):
    got_sentence, got_direct = relation_patterns(relation)
    assert got_sentence == sentence
    assert (got_direct[0] if got_direct else None) == direct


def test_csv_table(tmp_path):
    table = tmp_path / "facts.csv"
    table.write_text(
        "subject,relation,object,pattern,question,expect\n"
        'the CMB,temperature,2.725 K,"{subject} has a temperature of {object}.",,2.7|2.73\n'
        "the CMB,colour\n"
        "the CMB,age,13.8 Gyr,,How old is {subject}?|What age has {subject} reached?,\n",
        encoding="utf-8",
    )
    fact, reject, fact2 = read_facts(table)
    assert fact.statement == "The CMB has a temperature of 2.725 K."
    assert "What is the temperature of the CMB?" in fact.questions + fact.held_out
    assert fact.expect == ["2.7", "2.73"]
    assert isinstance(reject, Reject) and reject.line == 3
    # two wordings given: none derived, one held out
    assert sorted(fact2.questions + fact2.held_out) == [
        "How old is the CMB?",
        "What age has the CMB reached?",
    ]
    assert len(fact2.held_out) == 1 and fact2.expect == ["13.8 Gyr"]


def test_held_out_wording_found_in_training_text_is_left_out(tmp_path):
    table = tmp_path / "facts.yaml"
    table.write_text(
        "relations:\n"
        "  r:\n"
        '    statement: "{subject} is {object}."\n'
        '    questions: ["What is special about {subject}?", "Tell me about {subject}."]\n'
        "facts:\n"
        "  - {subject: Alpha, relation: r, object: bright}\n"
        "  - {subject: Beta, relation: r, object: dim,\n"
        "     pattern: \"{subject} answers 'What is special about Alpha?' and "
        "'Tell me about Alpha.' with {object}.\"}\n"
    )
    res = build_facts(table, tmp_path / "out")
    assert res["held_out_overlap"] == 1
    suite = load_suite(tmp_path / "out/recall.yaml")
    text = training_text(tmp_path / "out")
    held = [p["prompt"] for p in suite if p["wording"] == "held_out"]
    assert held and not any(q.lower() in text for q in held)
    assert not [p for p in suite if p["fact"].endswith("alpha-r") and p["wording"] == "held_out"]


def test_deterministic_with_seed(tmp_path):
    def run(seed: int, name: str) -> dict[str, bytes]:
        out = tmp_path / name
        build_facts(SAMPLE, out, seed=seed)
        return {p.name: p.read_bytes() for p in out.iterdir() if not p.name.endswith(".json")}

    first = run(5, "a")
    assert first == run(5, "b")

    def held(files: dict[str, bytes]) -> list[str]:
        suite = yaml.safe_load(files["recall.yaml"])["prompts"]
        return [p["prompt"] for p in suite if p["wording"] == "held_out"]

    assert any(held(run(seed, f"s{seed}")) != held(first) for seed in range(6, 12))


def test_a_misspelt_facts_key_and_an_empty_table_say_so(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("fact:\n  - {subject: a, relation: r, object: b}\n")
    with pytest.raises(DataError, match=r"unknown top-level key\(s\) \['fact'\]"):
        list(read_facts(typo))
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(DataError, match="empty.yaml: empty file"):
        list(read_facts(empty))


def path_like(message: str) -> list[str]:
    """Tokens of an error message that look like paths (":LINE" suffixes removed)."""
    found = []
    for token in message.split():
        token = re.sub(r":\d+$", "", token.strip("()[],;'\"").rstrip(":.,;"))
        if os.sep in token or re.search(r"\.(jsonl|json|yaml|yml|csv|tsv)$", token):
            found.append(token)
    return found


@pytest.mark.parametrize(
    "name, content, out",
    [
        ("all_rejected.csv", "subject,relation,object\nA,,x\nB,orbits,\n", "out"),
        ("all_rejected.yaml", "facts:\n  - {subject: A}\n  - 5\n", "out"),
        ("no_facts.yaml", "relations: {}\nfacts: []\n", "out"),
        ("empty.csv", "", "out"),
        ("columns.csv", "name,rel,value\nA,b,c\n", "out"),
        ("bad.yaml", "facts: [\n", "out"),
        ("shape.yaml", "- just a list\n", "out"),
        (
            "relations.yaml",
            "relations:\n  r: 5\nfacts: [{subject: a, relation: r, object: b}]\n",
            "out",
        ),
        ("typo.yaml", "relations:\n  r: {statment: x}\nfacts: []\n", "out"),
        (
            "top_typo.yaml",
            "relatoins:\n  r: {statement: x}\nfacts: [{subject: a, relation: r, object: b}]\n",
            "out",
        ),
        ("ok.csv", "subject,relation,object\nA,orbits,B\n", "a_file/out"),
    ],
)
def test_errors_never_name_a_missing_file(tmp_path, monkeypatch, name, content, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    table = tmp_path / name
    table.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(
        main, ["data", "facts", str(table), "--out-dir", str(tmp_path / out)]
    )
    assert result.exit_code == 1, result.output
    message = result.output
    assert message.startswith("Error: ") and "Traceback" not in message
    paths = path_like(message)
    assert paths, message
    for p in paths:
        assert os.path.exists(p), (p, message)
    if name.startswith("all_rejected"):
        rejects = tmp_path / "out/facts.failed.rejects.jsonl"  # a good run's set is not touched
        assert str(rejects) in message and len(lines(rejects)) == 2
        assert not (tmp_path / "out/facts.rejects.jsonl").exists()


def test_cli_facts_on_bundled_sample(tmp_path):
    out = tmp_path / "facts"
    result = CliRunner().invoke(main, ["data", "facts", str(SAMPLE), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    res = json.loads(result.output.strip().splitlines()[-1])
    assert res["facts"] >= 15 and res["rejected"] == 0 and res["held_out_overlap"] == 0
    table = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    assert all(len(r["questions"]) >= 3 for r in table["relations"].values())
    wordings = check_held_out(out)
    assert len(wordings) == res["facts"]
    assert res["wordings"] == {"trained": 2 * res["facts"], "held_out": res["facts"]}
    assert len(lines(out / "chat.jsonl")) == res["wordings"]["trained"]
    # one held-out wording per relation, shared by all its facts
    facts = [f for f in read_facts(SAMPLE) if not isinstance(f, Reject)]
    per_relation: dict[str, set[str]] = {}
    for f in facts:
        pattern = f.held_out[0].replace(f.subject, "{subject}")
        pattern = pattern[:1].upper() + pattern[1:]
        per_relation.setdefault(f.relation, set()).add(pattern)
    assert all(len(v) == 1 for v in per_relation.values()), per_relation


def test_held_out_zero_keeps_every_wording_in_training(tmp_path):
    res = build_facts(SAMPLE, tmp_path / "out", held_out=0)
    assert res["wordings"]["held_out"] == 0
    suite = load_suite(tmp_path / "out/recall.yaml")
    assert {p["wording"] for p in suite} == {"trained"}


def test_conversation_suite_asks_each_held_out_wording_after_a_system_message_and_a_turn(tmp_path):
    out = tmp_path / "facts"
    res = build_facts(SAMPLE, out)
    recall = load_suite(out / "recall.yaml")
    conv = load_suite(out / "recall_conversation.yaml")
    assert res["outputs"]["recall_conversation"] == str(out / "recall_conversation.yaml")
    held = {(p["fact"], p["prompt"]) for p in recall if p["wording"] == "held_out"}
    assert {(p["fact"], p["prompt"]) for p in conv} == held
    facts = {f.id: f for f in read_facts(SAMPLE) if not isinstance(f, Reject)}
    for p in conv:
        assert p["wording"] == "conversation" and p["system"]
        assert [t["role"] for t in p["history"]] == ["user", "assistant"]
        assert facts[p["fact"]].subject in p["history"][0]["content"]
        assert p["expect"] == list(facts[p["fact"]].expect)
    # the earlier turn is not something any training rendering contains
    assert conv[0]["history"][0]["content"].lower() not in training_text(out)


def test_limit_keeps_the_first_facts_and_counts_the_rest(tmp_path):
    everything = build_facts(SAMPLE, tmp_path / "all")
    few = build_facts(SAMPLE, tmp_path / "few", limit=5)
    assert few["facts"] == 5 and few["over_limit"] == everything["facts"] - 5
    first = [f.id for f in read_facts(SAMPLE) if not isinstance(f, Reject)][:5]
    assert sorted({p["fact"] for p in load_suite(tmp_path / "few" / "recall.yaml")}) == sorted(
        first
    )
    manifest = json.loads((tmp_path / "few" / "chat.manifest.json").read_text())
    assert manifest["dropped"]["over limit"] == everything["facts"] - 5
    result = CliRunner().invoke(
        main, ["data", "facts", str(SAMPLE), "--limit", "0", "--out-dir", str(tmp_path / "x")]
    )
    assert result.exit_code != 0 and "--limit" in result.output


def test_a_contradicting_fact_is_rejected_naming_the_first(tmp_path):
    table = tmp_path / "facts.yaml"
    table.write_text(
        "facts:\n"
        "  - {subject: the Pell Array, relation: first_light, object: '2031'}\n"
        "  - {subject: The Pell Array, relation: first_light, object: '2033'}\n"
        "  - {subject: the Pell Array, relation: site, object: Mount Orr}\n"
    )
    items = list(read_facts(table))
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [f.object for f in items if not isinstance(f, Reject)] == ["2031", "Mount Orr"]
    assert rejects[0].line == 3
    assert rejects[0].reason == "contradiction: the Pell Array first light is '2031' at line 2"
