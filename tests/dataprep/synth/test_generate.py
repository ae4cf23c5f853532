"""Synthetic Q&A against real HTTP servers.

`transformers serve` on the tiny model (one process for the session) checks the whole
pipeline against a real OpenAI-compatible server; its output is random text, so the
assertions are about requests, records, rejects, provenance and exactly-once resume.
A canned server written for the tests injects faults (errors, garbage, timeouts) and
gives outputs that can be traced back to their chunks.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.records import DataError
from cosmosage.dataprep.synth.generate import SynthConfig, SynthJob, read_chunks, run_synth
from cosmosage.dataprep.synth.jobs import Answer
from cosmosage.dataprep.synth.llm import Endpoint, RetryPolicy
from cosmosage.dataprep.synth.parse import extract_output
from cosmosage.dataprep.synth.prompts import load_prompt
from cosmosage.dataprep.synth.serve import transformers_serve
from cosmosage.tools.cli.main import main
from tests.helpers.scripted_server import (
    Reply,
    ScriptedServer,
    completion,
    digest,
    last_user,
    qa_reply,
)

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
QUIET = {"echo": lambda m: None}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def write_chunks(path: Path, n: int, prefix: str = "Passage") -> Path:
    path.write_text(
        "".join(
            json.dumps(
                {
                    "text": f"{prefix} {i}: the optical depth is {0.05 + i / 1000:.3f}.",
                    "doc_id": f"d{i // 5}",
                    "chunk": i % 5,
                    "chunk_sha": f"{prefix[:3].lower()}{i:05d}",
                }
            )
            + "\n"
            for i in range(n)
        )
    )
    return path


def journal_items(path: Path) -> list[dict]:
    return [e for e in lines(path)[1:] if e.get("key")]


# --------------------------------------------------------------------------- real server


@pytest.fixture(scope="session")
def real_server(tiny_model, tmp_path_factory):
    """`transformers serve` on 127.0.0.1 serving the tiny model on the CPU.

    The process starts here; `ready()` waits for it, so a test can prepare its data
    while the model loads.
    """
    server = transformers_serve(tiny_model, tmp_path_factory.mktemp("hf-cache")).start()

    def ready() -> None:
        try:
            server.wait(timeout=120)
        except RuntimeError as exc:
            pytest.fail(f"transformers serve did not come up: {exc}")

    try:
        yield {
            "base_url": server.base_url,
            "model": server.model,
            "proc": server.proc,
            "ready": ready,
        }
    finally:
        server.stop()


def bundled_chunks(tiny_model, folder: Path, every: int = 3) -> Path:
    """Chunks of the bundled papers (`data corpus`), every third one to keep the test short."""
    full = folder / "all-chunks.jsonl"
    r = CliRunner().invoke(
        main,
        [
            "data",
            "corpus",
            str(ROOT / "samples" / "papers"),
            "--tokenizer",
            str(tiny_model),
            "--sequence-len",
            "256",
            "--out",
            str(full),
        ],
    )
    assert r.exit_code == 0, r.output
    out = folder / "chunks.jsonl"
    out.write_text("".join(x + "\n" for x in full.read_text().splitlines()[::every]))
    return out


def cosmosage(*args: str) -> list[str]:
    return [str(BIN / "cosmosage"), *args]


def wait_for_entries(proc: subprocess.Popen, journal: Path, n: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists():
            got = len(journal.read_bytes().split(b"\n")) - 2  # header, trailing newline
            if got >= n:
                return got
        time.sleep(0.01)
    raise AssertionError(f"run ended or stalled before {n} journal entries: {proc.poll()}")


@pytest.mark.server
def test_real_server_synth_kill_resume_then_grade(real_server, tiny_model, tmp_path):
    chunk_file = bundled_chunks(tiny_model, tmp_path)
    chunks = [c for _, c in read_chunks(chunk_file)]  # adds chunk_sha where the file has none
    assert len(chunks) == len(lines(chunk_file)) >= 10
    assert {c["doc_id"] for c in chunks} == {"2401.00001", "2401.00002", "2401.00003", "2401.00004"}
    out = tmp_path / "qa.jsonl"
    args = [
        "data", "synth", "--input", str(chunk_file), "--out", str(out),
        "--base-url", real_server["base_url"], "--model", real_server["model"],
        "--max-tokens", "12", "--concurrency", "4", "--retries", "1", "--backoff", "0.05", "--pairs", "2",
    ]  # fmt: skip
    real_server["ready"]()
    # Kill the generator part way, then run the same command to the end.
    proc = subprocess.Popen(cosmosage(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = tmp_path / "qa.journal.jsonl"
    wait_for_entries(proc, journal, 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(journal_items(journal))
    assert 3 <= before < len(chunks) and not out.exists()
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["chunks"] == len(chunks) and summary["resumed"] == before
    assert summary["requests"] >= len(chunks) - before

    # Exactly once: one journal entry per chunk, every chunk accounted for in the output.
    entries = journal_items(journal)
    assert sorted(e["key"] for e in entries) == sorted(f"{c['chunk_sha']}:synth_qa" for c in chunks)
    records, rejects = lines(out), lines(tmp_path / "qa.rejects.jsonl")
    seen = {r["source"]["chunk_sha"] for r in records} | {r["record"]["chunk_sha"] for r in rejects}
    assert seen == {c["chunk_sha"] for c in chunks}
    assert len({r["id"] for r in records}) == len(records)
    for r in rejects:  # the tiny model writes random text: rejects say why and keep the text
        assert r["reason"].split(":")[0] in {
            "no JSON",
            "invalid JSON",
            "cut off",
            "empty output",
            "wrong shape",
            "no usable pairs",
            "bad pair",
            "extra pair",
            "request failed",
        }
        assert r["record"]["generator"]["model"] == real_server["model"]
        assert (
            r["record"]["generator"]["prompt_version"] == "1"
            and r["record"]["generator"]["sampling"]["max_tokens"] == 12
        )
        assert "raw" in r["record"] or r["reason"].startswith("request failed")
    manifest = json.loads((tmp_path / "qa.manifest.json").read_text())
    assert manifest["kept"] == len(records) and manifest["tokens_all_runs"]["prompt_tokens"] > 0
    assert manifest["resume"]["items_from_earlier_runs"] == before

    # A rerun of a finished run asks nothing and writes the same output.
    first = out.read_text()
    again = CliRunner().invoke(main, args)
    assert (
        again.exit_code == 0 and json.loads(again.stdout.strip().splitlines()[-1])["requests"] == 0
    )
    assert out.read_text() == first

    # Grade hand-written answers to the same chunks with the same server as judge.
    qa_in = tmp_path / "answers.jsonl"
    picked = chunks[:6]
    qa_in.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "What does this part of the paper measure?"},
                        {"role": "assistant", "content": c["text"][:200]},
                    ],
                    "id": f"a{i}",
                    "source": {"chunk_sha": c["chunk_sha"]},
                }
            )
            + "\n"
            for i, c in enumerate(picked)
        )
    )
    graded = tmp_path / "graded.jsonl"
    r = CliRunner().invoke(
        main,
        ["data", "grade", "--input", str(qa_in), "--out", str(graded), "--chunks", str(chunk_file),
         "--base-url", real_server["base_url"], "--model", real_server["model"], "--max-tokens", "12", "--concurrency", "4"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert res["records"] == 6 and res["requests"] >= 6
    grades = lines(tmp_path / "graded.grades.jsonl")
    assert sorted(g["id"] for g in grades) == [f"a{i}" for i in range(6)]
    rejected = lines(tmp_path / "graded.rejects.jsonl")
    assert len(lines(graded)) + len(rejected) == 6
    for rj in rejected:
        assert rj["reason"].startswith(("not graded:", "below threshold:"))
    assert json.loads((tmp_path / "graded.calibration.json").read_text())["records"] == 6


@pytest.mark.server
def test_real_server_behind_a_faulty_proxy(real_server, tmp_path):
    """Every third request fails on its way to the real server: retried, then answered."""
    chunks = write_chunks(tmp_path / "chunks.jsonl", 6)

    def proxy(request, n):
        if n % 3 == 0:
            return Reply(503, {"error": {"message": "injected outage"}})
        req = urllib.request.Request(
            real_server["base_url"] + "/chat/completions",
            data=json.dumps(request).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return Reply(r.status, r.read().decode())

    real_server["ready"]()
    with ScriptedServer(proxy) as s:
        cfg = SynthConfig(
            input=str(chunks),
            out=str(tmp_path / "qa.jsonl"),
            endpoint=Endpoint(s.base_url, real_server["model"]),
            sampling={"max_tokens": 8},
            retry=RetryPolicy(retries=3, base=0.01, cap=0.05),
            concurrency=3,
        )
        res = run_synth(cfg, **QUIET)
    manifest = json.loads((tmp_path / "qa.manifest.json").read_text())
    assert manifest["usage_this_run"]["retries"] >= 2 and manifest["usage_this_run"]["failed"] == 0
    assert manifest["usage_this_run"]["errors"] == {
        "HTTP 503": manifest["usage_this_run"]["retries"]
    }
    assert res["requests"] == len(s.requests) and res["tokens"]["completion_tokens"] > 0
    rejects = lines(tmp_path / "qa.rejects.jsonl")
    assert not any(r["reason"].startswith("request failed") for r in rejects)
    assert {r["record"]["chunk_sha"] for r in rejects} | {
        r["source"]["chunk_sha"] for r in lines(tmp_path / "qa.jsonl")
    } == {f"pas{i:05d}" for i in range(6)}


# --------------------------------------------------------------------------- canned server


def test_kill_at_random_moments_then_resume_gives_exactly_once(tmp_path):
    chunks = write_chunks(tmp_path / "chunks.jsonl", 80)
    ref_out, out = tmp_path / "ref.jsonl", tmp_path / "qa.jsonl"
    with ScriptedServer(qa_reply, latency=0.05) as s:
        run_synth(
            SynthConfig(
                input=str(chunks),
                out=str(ref_out),
                endpoint=Endpoint(s.base_url, "writer"),
                concurrency=4,
            ),
            **QUIET,
        )
        s.requests.clear()
        args = cosmosage(
            "data",
            "synth",
            "--input",
            str(chunks),
            "--out",
            str(out),
            "--base-url",
            s.base_url,
            "--model",
            "writer",
            "--concurrency",
            "4",
        )
        journal = tmp_path / "qa.journal.jsonl"
        for n in (12, 40):
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for_entries(proc, journal, n)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    entries = journal_items(journal)
    assert len(entries) == 80 and len({e["key"] for e in entries}) == 80
    # Only requests in flight at a kill were asked twice (at most 4 per kill).
    assert 80 <= len(s.requests) <= 80 + 2 * 4
    got, ref = lines(out), lines(ref_out)
    assert len(got) == 160 and len({r["id"] for r in got}) == 160
    assert got == ref  # same records, same order, as an uninterrupted run
    for r in got:  # each record answers the request made for its own chunk
        assert r["source"]["chunk_sha"].startswith("pas")


def test_faults_are_retried_then_rejected_with_reasons(tmp_path):
    chunks = tmp_path / "chunks.jsonl"
    kinds = [
        "ok",
        "flaky500",
        "ratelimited",
        "garbage",
        "nochoices",
        "slow",
        "badrequest",
        "prose",
        "fenced",
        "ok2",
    ]
    chunks.write_text(
        "".join(
            json.dumps({"text": f"case {k}", "doc_id": "d", "chunk": i, "chunk_sha": k}) + "\n"
            for i, k in enumerate(kinds)
        )
        + "not json\n"
    )
    attempts: dict[str, int] = {}

    def respond(request, n):
        kind = last_user(request).split("case ")[1].split()[0].strip('"')
        attempts[kind] = attempts.get(kind, 0) + 1
        a = attempts[kind]
        if kind == "flaky500" and a <= 2:
            return Reply(500, {"error": {"message": "overloaded"}})
        if kind == "ratelimited" and a == 1:
            return Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        if kind == "garbage":
            return Reply(200, "<html>upstream exploded</html>")
        if kind == "nochoices":
            return Reply(200, {"id": "x", "object": "chat.completion", "choices": []})
        if kind == "slow":
            return Reply(delay=1.5, body=completion("{}"))
        if kind == "badrequest":
            return Reply(400, {"error": {"message": "context too long"}})
        if kind == "prose":
            return Reply(body=completion("Here are some great questions about the passage!"))
        if kind == "fenced":
            return Reply(
                body=completion(
                    '```json\n{"pairs": [{"question": "Q?", "answer": "A."}]}\n```\nEnjoy.'
                )
            )
        return qa_reply(request, n)

    out = tmp_path / "qa.jsonl"
    with ScriptedServer(respond) as s:
        cfg = SynthConfig(
            input=str(chunks),
            out=str(out),
            endpoint=Endpoint(s.base_url, "w", timeout=0.5),
            retry=RetryPolicy(retries=2, base=0.01, cap=0.05),
            concurrency=4,
        )
        res = run_synth(cfg, **QUIET)
    kept = {r["source"]["chunk_sha"] for r in lines(out)}
    assert kept == {"ok", "ok2", "flaky500", "ratelimited", "fenced"}
    reasons = {
        r["record"]["chunk_sha"] if isinstance(r.get("record"), dict) else "line": r["reason"]
        for r in lines(tmp_path / "qa.rejects.jsonl")
    }
    assert reasons["garbage"].startswith("request failed: malformed response") and reasons[
        "garbage"
    ].endswith("(after 3 attempts)")
    assert reasons["nochoices"].startswith("request failed: malformed response")
    assert reasons["slow"] == "request failed: timeout (after 3 attempts)"
    assert reasons["badrequest"] == "request failed: HTTP 400: context too long (after 1 attempt)"
    assert reasons["prose"].startswith("no JSON")
    assert reasons["line"].startswith("invalid JSON")
    assert (
        attempts["flaky500"] == 3
        and attempts["ratelimited"] == 2
        and attempts["badrequest"] == 1
        and attempts["garbage"] == 3
    )
    raw = next(
        r
        for r in lines(tmp_path / "qa.rejects.jsonl")
        if isinstance(r.get("record"), dict) and r["record"].get("chunk_sha") == "prose"
    )
    assert raw["record"]["raw"] == "Here are some great questions about the passage!"
    manifest = json.loads((tmp_path / "qa.manifest.json").read_text())
    assert manifest["dropped"] == {"request failed": 4, "no JSON": 1, "invalid JSON": 1}
    assert (
        manifest["usage_this_run"]["retries"] == 2 + 1 + 2 + 2 + 2
        and res["records"] == 2 + 2 + 2 + 2 + 1
    )

    # After the server recovers, --retry-failed redoes the failed requests only.
    with ScriptedServer(qa_reply) as s:
        res = run_synth(
            SynthConfig(
                **{**cfg.__dict__, "endpoint": Endpoint(s.base_url, "w"), "retry_failed": True}
            ),
            **QUIET,
        )
    assert len(s.requests) == 4 and res["records"] == 9 * 2 - 1


def test_api_key_is_sent_but_never_written_or_printed(tmp_path):
    key = "sk-canary-7f3a9c1e5b2d4f60"
    chunks = write_chunks(tmp_path / "chunks.jsonl", 6)

    def respond(request, n):
        text = last_user(request)
        if "Passage 1:" in text:  # a server that echoes the key in an error
            return Reply(401, {"error": {"message": f"Incorrect API key provided: {key}"}})
        if "Passage 2:" in text:  # or in its output
            return Reply(body=completion(f"my key is {key}"))
        return qa_reply(request, n)

    env = {**os.environ, "COSMO_TEST_KEY": key}
    with ScriptedServer(respond) as s:
        args = [
            "--base-url",
            s.base_url,
            "--model",
            "w",
            "--api-key-env",
            "COSMO_TEST_KEY",
            "--retries",
            "0",
        ]
        synth = subprocess.run(
            cosmosage(
                "data", "synth", "--input", str(chunks), "--out", str(tmp_path / "qa.jsonl"), *args
            ),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        grade = subprocess.run(
            cosmosage(
                "data",
                "grade",
                "--input",
                str(tmp_path / "qa.jsonl"),
                "--out",
                str(tmp_path / "g.jsonl"),
                *args,
            ),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert synth.returncode == 0 and grade.returncode == 0, synth.stderr + grade.stderr
    assert {r["authorization"] for r in s.requests} == {f"Bearer {key}"}
    written = sorted(tmp_path.glob("*"))
    assert len(written) >= 10
    for f in written:
        if f.is_file():
            assert key not in f.read_text(errors="replace"), f
    for text in (synth.stdout, synth.stderr, grade.stdout, grade.stderr):
        assert key not in text
    assert "***" in (tmp_path / "qa.rejects.jsonl").read_text()


def test_prompt_version_change_is_detected_and_handled_by_flag(tmp_path):
    from cosmosage.dataprep.synth.prompts import PROMPTS_DIR

    v1 = tmp_path / "p.yaml"
    v1.write_text((PROMPTS_DIR / "synth_qa.yaml").read_text())
    chunks = write_chunks(tmp_path / "chunks.jsonl", 4)
    out = tmp_path / "qa.jsonl"
    with ScriptedServer(qa_reply) as s:
        base = SynthConfig(
            input=str(chunks), out=str(out), endpoint=Endpoint(s.base_url, "w"), prompt=str(v1)
        )
        run_synth(base, **QUIET)
        v1.write_text(
            v1.read_text().replace("exam-quality", "exam quality")
        )  # edited, version kept
        messages = []
        run_synth(base, echo=messages.append)
        assert any("prompt text changed" in m and "bump `version`" in m for m in messages)
        write_chunks(chunks, 6)  # two more chunks arrive
        v1.write_text(v1.read_text().replace("version: 1", "version: 2"))
        with pytest.raises(
            DataError, match="4 item.s. with version 1; the prompt is now version 2"
        ):
            run_synth(base, **QUIET)
        assert len(s.requests) == 4
        messages = []
        res = run_synth(
            SynthConfig(**{**base.__dict__, "prompt_change": "continue"}), echo=messages.append
        )
        assert len(s.requests) == 6 and res["resumed"] == 4
        assert any("version 1" in m and "continue" in m for m in messages)
        versions = [r["generator"]["prompt_version"] for r in lines(out)]
        assert versions.count("1") == 8 and versions.count("2") == 4
        res = run_synth(base, **QUIET)  # the choice was journaled: no flag needed now
        assert len(s.requests) == 6
        res = run_synth(SynthConfig(**{**base.__dict__, "prompt_change": "regenerate"}), **QUIET)
        assert len(s.requests) == 10
    assert {r["generator"]["prompt_version"] for r in lines(out)} == {"2"} and len(lines(out)) == 12
    assert {r["id"].split(":")[1] for r in lines(out)} == {"synth_qa@2"}


def test_records_trace_back_to_their_chunks(tmp_path):
    chunks = write_chunks(tmp_path / "chunks.jsonl", 5)
    out = tmp_path / "qa.jsonl"
    with ScriptedServer(qa_reply) as s:
        r = CliRunner().invoke(
            main,
            [
                "data",
                "synth",
                "--input",
                str(chunks),
                "--out",
                str(out),
                "--base-url",
                s.base_url,
                "--model",
                "w",
                "--pairs",
                "1",
                "--temperature",
                "0.3",
                "--sampling-seed",
                "5",
                "--shard",
                "0/1",
            ],
        )
    assert r.exit_code == 0, r.output
    # shard 0 of 1 holds every chunk, under the shard's name, until merge-shards joins it
    assert not out.exists() and (tmp_path / "qa.shard-00000-of-00001.jsonl").is_file()
    merged = CliRunner().invoke(main, ["data", "merge-shards", "--out", str(out)])
    assert merged.exit_code == 0, merged.output
    sent = {digest(last_user(x["body"])): x["body"] for x in s.requests}
    assert all(
        b["temperature"] == 0.3 and b["seed"] == 5 and b["model"] == "w" for b in sent.values()
    )
    recs = lines(out)
    assert len(recs) == 5  # --pairs 1: the second pair of each answer is refused as extra
    for rec in recs:
        h = rec["messages"][0]["content"].split()[3]
        assert f"Passage {int(rec['source']['chunk_sha'][3:])}:" in last_user(sent[h])
        assert rec["generator"] == {
            **rec["generator"],
            "model": "w",
            "prompt": "synth_qa",
            "prompt_version": "1",
            "pairs_asked": 1,
            "sampling": {"temperature": 0.3, "max_tokens": 1024, "seed": 5},
        }
    assert [x["reason"] for x in lines(tmp_path / "qa.rejects.jsonl")] == [
        "extra pair: item 2 beyond the 1 asked for"
    ] * 5


def small_model_reply(request: dict, n: int) -> Reply:
    """What a small model writes for `synth_qa_small`: `Question:`/`Answer:` lines; the
    answer restates the passage's number for even passages and invents one for odd ones."""
    text = last_user(request)
    i = int(re.search(r"Passage (\d+):", text).group(1))
    answer = (
        f"The optical depth is {0.05 + i / 1000:.3f}."
        if i % 2 == 0
        else "Dark energy makes up seventy percent of the universe."
    )
    content = f"Sure!\nQuestion: What is the optical depth in passage {i}?\nAnswer: {answer}\n"
    return Reply(body=completion(content, request.get("model", "scripted")))


def test_small_model_prompt_lines_grounding_and_sampling(tmp_path):
    chunks = write_chunks(tmp_path / "chunks.jsonl", 6)
    out = tmp_path / "qa.jsonl"
    args = ["data", "synth", "--input", str(chunks), "--out", str(out), "--model", "w"]
    args += ["--prompt", "synth_qa_small", "--pairs", "1"]
    with ScriptedServer(small_model_reply) as s:
        r = CliRunner().invoke(main, [*args, "--base-url", s.base_url])
    assert r.exit_code == 0, r.output
    # the prompt's own sampling is what is sent, and recorded
    body, wanted = s.requests[0]["body"], load_prompt("synth_qa_small").sampling
    assert (body["max_tokens"], body["temperature"]) == (
        wanted["max_tokens"],
        wanted["temperature"],
    )
    # the worked example goes first, as an earlier exchange
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][2]["content"].startswith("Question:")
    recs = lines(out)
    assert sorted(int(x["source"]["chunk_sha"][3:]) for x in recs) == [0, 2, 4]
    assert all(x["grounding"]["answer"] == 1.0 for x in recs)
    assert recs[0]["messages"][1]["content"].startswith("The optical depth is 0.0")
    assert recs[0]["generator"]["sampling"] == wanted
    rejects = lines(tmp_path / "qa.rejects.jsonl")
    assert [x["reason"] for x in rejects] == [
        "ungrounded: 0% of the answer's content words are in the chunk (< 60%) (pair 1)"
    ] * 3
    assert all("Dark energy" in x["record"]["raw"] for x in rejects)
    manifest = json.loads((tmp_path / "qa.manifest.json").read_text())
    assert manifest["dropped"] == {"ungrounded": 3} and manifest["chunks_with_pairs"] == 3
    assert json.loads(r.output.strip().splitlines()[-1])["chunks_with_pairs"] == 3

    # options given on the command line win over the prompt's; --min-grounding 0 keeps all
    out2 = tmp_path / "qa2.jsonl"
    args[args.index(str(out))] = str(out2)
    with ScriptedServer(small_model_reply) as s:
        r = CliRunner().invoke(
            main,
            [*args, "--base-url", s.base_url, "--max-tokens", "40", "--min-grounding", "0"],
        )
    assert r.exit_code == 0, r.output
    sent = s.requests[0]["body"]
    assert (sent["max_tokens"], sent["temperature"]) == (40, wanted["temperature"])
    assert len(lines(out2)) == 6


def test_tries_ask_again_for_chunks_without_a_kept_pair(tmp_path):
    """--tries 3: odd passages get an invented answer first and a grounded one on the
    second request; passage 5 never gets one. Every try's rejects are kept."""
    asked: dict[int, int] = {}

    def reply(request: dict, n: int) -> Reply:
        i = int(re.search(r"Passage (\d+):", last_user(request)).group(1))
        asked[i] = asked.get(i, 0) + 1
        grounded = i % 2 == 0 or (asked[i] >= 2 and i != 5)
        answer = f"The optical depth is {0.05 + i / 1000:.3f}." if grounded else "Dark energy."
        text = f"Question: What is the optical depth in passage {i}?\nAnswer: {answer}"
        return Reply(body=completion(text, request.get("model", "scripted")))

    chunks = write_chunks(tmp_path / "chunks.jsonl", 6)
    cfg = SynthConfig(
        input=str(chunks),
        out=str(tmp_path / "qa.jsonl"),
        endpoint=Endpoint("", "w"),
        prompt="synth_qa_small",
        pairs=1,
        tries=3,
        sampling={"seed": 7},
    )
    with ScriptedServer(reply) as s:
        res = run_synth(
            SynthConfig(**{**cfg.__dict__, "endpoint": Endpoint(s.base_url, "w")}), **QUIET
        )
    assert asked == {0: 1, 1: 2, 2: 1, 3: 2, 4: 1, 5: 3}
    # a seeded retry sends another seed
    seeds = [x["body"]["seed"] for x in s.requests if "Passage 5:" in last_user(x["body"])]
    assert seeds == [7, 8, 9]
    assert res["records"] == 5 and res["chunks_with_pairs"] == 5
    rejects = lines(tmp_path / "qa.rejects.jsonl")
    assert sorted((r["record"]["chunk_sha"], r["record"]["try"]) for r in rejects) == [
        ("pas00001", 1),
        ("pas00003", 1),
        ("pas00005", 1),
        ("pas00005", 2),
        ("pas00005", 3),
    ]
    assert all(r["reason"].startswith("ungrounded:") for r in rejects)
    manifest = json.loads((tmp_path / "qa.manifest.json").read_text())
    assert manifest["requests_all_runs"] == 10 and manifest["tries_allowed"] == 3
    # a rerun makes no request: the tries are in the journal
    with ScriptedServer(reply) as s:
        again = run_synth(
            SynthConfig(**{**cfg.__dict__, "endpoint": Endpoint(s.base_url, "w")}), **QUIET
        )
    assert s.requests == [] and again["records"] == 5


def test_no_server_is_an_error_that_keeps_the_last_output_and_a_retry_fills_it(tmp_path):
    """Nothing listens at --base-url: every request fails. That is an error naming the
    URL, not an empty output; with the server up, --retry-failed asks again."""
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    chunks = write_chunks(tmp_path / "chunks.jsonl", 3)
    out = tmp_path / "qa.jsonl"
    out.write_text('{"messages": []}\n')  # an earlier run's output
    cfg = SynthConfig(
        input=str(chunks), out=str(out), endpoint=Endpoint(f"http://127.0.0.1:{port}/v1", "w"),
        prompt="synth_qa_small", pairs=1, retry=RetryPolicy(retries=1, base=0.01, cap=0.02),
    )  # fmt: skip
    with pytest.raises(
        DataError,
        match=rf"no answer from http://127.0.0.1:{port}/v1: all 3 requests failed \(request failed: connection",
    ):
        run_synth(cfg, **QUIET)
    assert out.read_text() == '{"messages": []}\n'
    assert len(lines(tmp_path / "qa.failed.rejects.jsonl")) == 3

    def reply(request: dict, n: int) -> Reply:
        i = int(re.search(r"Passage (\d+):", last_user(request)).group(1))
        text = f"Question: What is the optical depth in passage {i}?\nAnswer: The optical depth is {0.05 + i / 1000:.3f}."
        return Reply(body=completion(text, request.get("model", "scripted")))

    with ScriptedServer(reply) as s:
        res = run_synth(
            SynthConfig(
                **{**cfg.__dict__, "endpoint": Endpoint(s.base_url, "w"), "retry_failed": True}
            ),
            **QUIET,
        )
    assert res["records"] == 3 and len(s.requests) == 3
    assert not (tmp_path / "qa.failed.rejects.jsonl").exists()


def test_a_retry_shows_a_later_part_of_the_chunk(tmp_path):
    text = "Tau is 0.054. The midpoint is at z = 7.7. $H_0$ is 67.4 here. Galaxies ionize."
    chunks = tmp_path / "c.jsonl"
    chunks.write_text(json.dumps({"text": text, "doc_id": "d", "chunk": 0}) + "\n")
    job = SynthJob(
        SynthConfig(
            input=str(chunks),
            out=str(tmp_path / "qa.jsonl"),
            endpoint=Endpoint("http://127.0.0.1:9/v1", "w"),
            prompt="synth_qa_small",
            tries=2,
        )
    )
    ((key, payload),) = job.items
    shown = [
        job.request(job.retry_payload(payload, n) if n else payload)[1][-1]["content"]
        for n in range(2)
    ]
    assert text in shown[0]
    assert "$H_0$ is 67.4 here. Galaxies ionize." in shown[1] and "Tau is" not in shown[1]
    # grounding is still checked against the whole chunk
    retry = job.retry_payload(payload, 1)
    answer = Answer("Question: What is tau?\nAnswer: Tau is 0.054.", "stop")
    answer.obj, _ = extract_output("lines", answer.text, "stop", job.labels)
    assert len(job.answer(retry, answer)["records"]) == 1


def test_a_stopped_job_says_how_to_continue_and_prints_no_summary(tmp_path, monkeypatch):
    from cosmosage.dataprep.synth import generate

    def stopped(cfg, echo):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "run_synth", stopped)
    chunks = write_chunks(tmp_path / "chunks.jsonl", 1)
    argv = ["data", "synth", "--input", str(chunks), "--out", str(tmp_path / "qa.jsonl"),
            "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]  # fmt: skip
    r = CliRunner().invoke(main, argv)
    assert r.exit_code == 1
    assert "stopped; every finished item is in the journal" in r.output
    assert '"records"' not in r.output
