"""`data entigraph`: entities of each chunk (only those in the chunk), then a passage on
each pair, refused when it misses an entity, loops or is not grounded; a seeded cap on
pairs; a second run asks nothing; the CLI through a real HTTP server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.records import DataError
from cosmosage.dataprep.synth.entigraph import EntiGraphConfig, pairs_of, run_entigraph
from cosmosage.dataprep.synth.llm import Endpoint, RetryPolicy
from cosmosage.tools.cli.main import main
from tests.helpers.scripted_server import Reply, ScriptedServer, completion, last_user

QUIET = {"echo": lambda m: None}
ARRAY = (
    "The Halvard Radio Array stands on the Sennick Salt Flats. Its signals are combined by "
    "a correlator named Kestrelin, built by the engineer Maren Tollisch."
)
SURVEY = "The Ostrel Cluster Survey used the Corvellum camera."


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def chunks(path: Path) -> Path:
    rows = [
        {"text": ARRAY, "doc_id": "halvard", "chunk": 0, "chunk_sha": "a" * 16},
        {"text": SURVEY, "doc_id": "ostrel", "chunk": 0, "chunk_sha": "b" * 16},
        {"doc_id": "empty"},  # line 3: no text
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


PASSAGES = {
    (
        "Halvard Radio Array",
        "Sennick Salt Flats",
    ): "The Halvard Radio Array stands on the Sennick Salt Flats.",
    (
        "Halvard Radio Array",
        "Kestrelin",
    ): "The signals of the Halvard Radio Array are combined by Kestrelin, a correlator.",
    (
        "Sennick Salt Flats",
        "Kestrelin",
    ): "The Sennick Salt Flats are near the sea.",  # misses Kestrelin
    (
        "Halvard Radio Array",
        "Maren Tollisch",
    ): "Maren Tollisch and the Halvard Radio Array went to the moon "
    "to sing songs about bananas, apples and oranges on holiday.",  # ungrounded
    ("Sennick Salt Flats", "Maren Tollisch"): "Maren Tollisch built it on the Sennick Salt Flats "
    + "and the array and the array and the array " * 3,  # loops
    (
        "Kestrelin",
        "Maren Tollisch",
    ): "Kestrelin, the correlator, was built by the engineer Maren Tollisch.",
}


def scripted(request: dict, n: int) -> Reply:
    text = last_user(request)
    if "List the instruments" in text:
        if "Ostrel" in text:
            return Reply(body=completion("Entity: Ostrel Cluster Survey\nEntity: Perseus"))
        return Reply(
            body=completion(
                "Entity: Halvard Radio Array\nEntity: Sennick Salt Flats\nEntity: Kestrelin\n"
                "Entity: the Moon\nEntity: Maren Tollisch\nEntity: kestrelin"
            )
        )
    a, b = re.search(r"say how (.+?) and (.+?) are related", text, re.S).groups()
    return Reply(body=completion(PASSAGES[(" ".join(a.split()), " ".join(b.split()))]))


def config(s, tmp_path, **kw) -> EntiGraphConfig:
    return EntiGraphConfig(
        input=str(chunks(tmp_path / "chunks.jsonl")),
        out=str(tmp_path / "rewrites.jsonl"),
        endpoint=Endpoint(s.base_url, "writer"),
        retry=RetryPolicy(retries=1, base=0.01, cap=0.02),
        **kw,
    )


def test_entities_in_the_chunk_then_grounded_passages_on_each_pair(tmp_path):
    with ScriptedServer(scripted) as s:
        res = run_entigraph(config(s, tmp_path), **QUIET)
    listed = lines(tmp_path / "rewrites.entities.jsonl")
    assert [r["entities"] for r in listed] == [
        ["Halvard Radio Array", "Sennick Salt Flats", "Kestrelin", "Maren Tollisch"]
    ]  # "the Moon" is not in the chunk, "kestrelin" repeats; the survey chunk names one
    ent_rejects = lines(tmp_path / "rewrites.entities.rejects.jsonl")
    assert {r["line"]: r["reason"].split(":")[0] for r in ent_rejects} == {
        2: "too few entities",
        3: "bad chunk",
    }
    kept = lines(tmp_path / "rewrites.jsonl")
    assert [tuple(r["entities"]) for r in kept] == [
        ("Halvard Radio Array", "Sennick Salt Flats"),
        ("Halvard Radio Array", "Kestrelin"),
        ("Kestrelin", "Maren Tollisch"),
    ]
    assert all(set(r) >= {"text", "doc_id", "chunk_sha", "generator"} for r in kept)
    reasons = {
        tuple(r["record"]["entities"]): r["reason"]
        for r in lines(tmp_path / "rewrites.rejects.jsonl")
    }
    assert reasons[("Sennick Salt Flats", "Kestrelin")].startswith("off the pair")
    assert reasons[("Halvard Radio Array", "Maren Tollisch")].startswith("ungrounded")
    assert reasons[("Sennick Salt Flats", "Maren Tollisch")].startswith("looping")
    assert res["pairs"] == 6 and res["passages"] == 3 and res["requests"] == 2 + 6
    assert (
        json.loads((tmp_path / "rewrites.entities.manifest.json").read_text())[
            "entities_not_in_chunk"
        ]
        == 1
    )


def test_a_second_run_asks_nothing(tmp_path):
    with ScriptedServer(scripted) as s:
        run_entigraph(config(s, tmp_path), **QUIET)
        first = (tmp_path / "rewrites.jsonl").read_text()
        s.requests.clear()
        res = run_entigraph(config(s, tmp_path), **QUIET)
        assert s.requests == [] and res["requests"] == 0 and res["resumed"] == 2 + 6
    assert (tmp_path / "rewrites.jsonl").read_text() == first


def test_pairs_are_capped_by_a_seeded_choice():
    chunk = {"chunk_sha": "c" * 16, "entities": [f"E{i}" for i in range(6)]}
    every = pairs_of(chunk, 100, 0)
    assert len(every) == 15
    some = pairs_of(chunk, 5, 0)
    assert len(some) == 5 and set(some) <= set(every) and some == pairs_of(chunk, 5, 0)
    assert pairs_of(chunk, 5, 1) != some


def test_bad_settings_are_clear_errors(tmp_path):
    with ScriptedServer(scripted) as s:
        with pytest.raises(DataError, match="--max-entities"):
            run_entigraph(config(s, tmp_path, max_entities=1), **QUIET)
        with pytest.raises(DataError, match="--min-grounding"):
            run_entigraph(config(s, tmp_path, min_grounding=2.0), **QUIET)


def test_cli_writes_the_passages(tmp_path):
    path = chunks(tmp_path / "chunks.jsonl")
    with ScriptedServer(scripted) as s:
        r = CliRunner().invoke(
            main,
            ["data", "entigraph", "--input", str(path), "--out", str(tmp_path / "r.jsonl"),
             "--base-url", s.base_url, "--model", "writer", "--max-pairs", "2"],
        )  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["pairs"] == 2 and summary["passages"] == len(lines(tmp_path / "r.jsonl"))
