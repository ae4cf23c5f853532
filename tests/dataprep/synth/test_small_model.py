"""`data synth` and `data grade` with the bundled small-model prompts against `transformers
serve` serving SmolLM2-135M-Instruct (docs/synthetic-qa.md, "A small model as generator").

Four chunks of the bundled papers and textbook on which the model, decoding greedily,
wrote a grounded pair in the measured run; the test checks that the model keeps to the
`Question:`/`Answer:` form on every chunk, that the grounding check keeps pairs from at
least half of them, and that the small judge's `Score:` lines are read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.synth.generate import SynthConfig, run_synth
from cosmosage.dataprep.synth.grade import GradeConfig, run_grade
from cosmosage.dataprep.synth.llm import Endpoint
from cosmosage.dataprep.synth.serve import transformers_serve
from cosmosage.tools.cli.main import main

pytestmark = [pytest.mark.server, pytest.mark.real_model]

ROOT = Path(__file__).resolve().parents[3]
QUIET = {"echo": lambda m: None}
CHOSEN = {
    ("2401.00002", 6),
    ("2401.00001", 4),
    ("2401.00003", 0),
    ("textbook/expanding_universe.md", 13),
}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def test_small_model_writes_grounded_pairs_and_score_lines(smollm2, tmp_path):
    server = transformers_serve(smollm2, tmp_path / "hf-cache").start()
    try:
        every = tmp_path / "all.jsonl"
        r = CliRunner().invoke(
            main,
            [
                "data",
                "corpus",
                str(ROOT / "samples" / "papers"),
                str(ROOT / "samples" / "textbook"),
                "--tokenizer",
                str(smollm2),
                "--sequence-len",
                "256",
                "--paragraph-align",
                "--out",
                str(every),
            ],
        )
        assert r.exit_code == 0, r.output
        chunks = tmp_path / "chunks.jsonl"
        picked = [x for x in lines(every) if (x["doc_id"], x["chunk"]) in CHOSEN]
        assert len(picked) == 4
        chunks.write_text("".join(json.dumps(x) + "\n" for x in picked))
        try:
            server.wait(timeout=180)
        except RuntimeError as exc:
            pytest.fail(f"transformers serve did not come up: {exc}")
        endpoint = Endpoint(server.base_url, server.model, timeout=300)
        out = tmp_path / "qa.jsonl"
        res = run_synth(
            SynthConfig(
                input=str(chunks),
                out=str(out),
                endpoint=endpoint,
                prompt="synth_qa_small",
                pairs=1,
                tries=2,
                concurrency=1,
            ),
            **QUIET,
        )
        reasons = [x["reason"] for x in lines(tmp_path / "qa.rejects.jsonl")]
        # the form is kept: no reply without Question/Answer lines, no failed request
        assert not [x for x in reasons if x.startswith(("no fields", "request failed"))], reasons
        assert res["chunks_with_pairs"] >= 2, reasons
        recs = lines(out)
        assert all(x["grounding"]["answer"] >= 0.6 for x in recs)
        assert {(x["source"]["doc_id"], x["source"]["chunk"]) for x in recs} <= CHOSEN

        graded = run_grade(
            GradeConfig(
                input=str(out),
                out=str(tmp_path / "graded.jsonl"),
                judges=[endpoint],
                prompt="grade_small",
                threshold=70,
                concurrency=1,
            ),
            **QUIET,
        )
        assert graded["graded"] >= 1, lines(tmp_path / "graded.rejects.jsonl")
        for g in lines(tmp_path / "graded.grades.jsonl"):
            if g["score"] is not None:
                assert 0 <= g["score"] <= 100 and g["judges"][0]["critique"]
    finally:
        server.stop()
