"""The journal: durable appends, torn tails, locking, resume plans and prompt changes."""

from __future__ import annotations

import asyncio
import json

import pytest

from cosmosage.dataprep.records import DataError
from cosmosage.dataprep.synth.journal import Journal, journal_path, plan_resume
from cosmosage.dataprep.synth.llm import RetryPolicy, Usage, redact_argv, redact_url, run_pool


def test_append_and_reopen(tmp_path):
    path = tmp_path / "out.journal.jsonl"
    with Journal(path, {"kind": "synth"}) as j:
        j.append({"key": "a", "prompt_version": "1", "records": [1]})
        j.append({"key": "b", "prompt_version": "1", "records": [2]})
    with Journal(path, {"kind": "synth"}) as j:
        assert [e["key"] for e in j.entries] == ["a", "b"]
        assert j.header["kind"] == "synth" and j.repaired == 0


def test_torn_tail_is_cut_and_the_item_redone(tmp_path):
    path = tmp_path / "out.journal.jsonl"
    with Journal(path, {"kind": "synth"}) as j:
        j.append({"key": "a", "prompt_version": "1"})
    with open(path, "ab") as fh:
        fh.write(b'{"key": "b", "prompt_vers')  # a write cut short by a kill
    with Journal(path, {"kind": "synth"}) as j:
        assert [e["key"] for e in j.entries] == ["a"] and j.repaired > 0
        j.append({"key": "b", "prompt_version": "1"})
    lines = path.read_text().splitlines()
    assert [json.loads(x).get("key") for x in lines[1:]] == ["a", "b"]


def test_damage_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "out.journal.jsonl"
    path.write_text('{"journal": 1, "kind": "synth"}\nnot json\n{"key": "a"}\n')
    with pytest.raises(DataError, match="damaged journal line"):
        Journal(path, {"kind": "synth"})


def test_one_writer_at_a_time_and_kind_checked(tmp_path):
    path = tmp_path / "out.journal.jsonl"
    with Journal(path, {"kind": "synth"}):
        with pytest.raises(DataError, match="another run"):
            Journal(path, {"kind": "synth"})
    with pytest.raises(DataError, match="'synth' run, not 'grade'"):
        Journal(path, {"kind": "grade"})


def test_journal_path():
    assert journal_path("data/qa.jsonl").name == "qa.journal.jsonl"


def entries(*specs):
    return [{"key": k, "prompt_version": v, **extra} for k, v, extra in specs]


def test_plan_skips_done_and_ignores_unwanted():
    plan = plan_resume(
        entries(("a", "1", {}), ("b", "1", {}), ("z", "1", {})), {"a", "b", "c"}, "1"
    )
    assert plan.done == {"a", "b"} and not plan.previous_versions


def test_prompt_change_is_reported_and_handled_by_flag():
    old = entries(("a", "1", {}), ("b", "1", {}))
    with pytest.raises(
        DataError, match="2 item.s. with version 1; the prompt is now version 2.*--prompt-change"
    ):
        plan_resume(old, {"a", "b", "c"}, "2")
    cont = plan_resume(old, {"a", "b", "c"}, "2", "continue")
    assert cont.done == {"a", "b"}
    regen = plan_resume(old, {"a", "b", "c"}, "2", "regenerate")
    assert regen.done == set()
    # The choice is journaled; later reruns without the flag follow it.
    again = plan_resume(old + [cont.decision("2")], {"a", "b", "c"}, "2")
    assert again.done == {"a", "b"} and again.policy == "continue"


def test_newer_version_wins_within_a_key():
    plan = plan_resume(
        entries(("a", "1", {"n": 1}), ("a", "2", {"n": 2}), ("a", "1", {"n": 3})),
        {"a"},
        "2",
        "regenerate",
    )
    assert plan.latest["a"]["n"] == 2


def test_retry_failed_redoes_only_request_failures():
    es = entries(("a", "1", {"failed": "request"}), ("b", "1", {"failed": "parse"}), ("c", "1", {}))
    plan = plan_resume(es, {"a", "b", "c"}, "1", retry_failed=True)
    assert plan.done == {"b", "c"} and plan.retrying == 1


def test_pool_bounds_concurrency():
    state = {"now": 0, "peak": 0}
    seen = []

    async def work(i):
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.01)
        state["now"] -= 1
        return i * 2

    n = asyncio.run(run_pool(range(30), work, lambda i, r: seen.append((i, r)), 5))
    assert n == 30 and state["peak"] == 5 and sorted(seen) == [(i, 2 * i) for i in range(30)]


def test_backoff_grows_with_jitter_and_respects_retry_after():
    import random

    p = RetryPolicy(retries=5, base=1.0, cap=8.0)
    rng = random.Random(0)
    delays = [p.delay(a, rng) for a in range(6) for _ in range(50)]
    assert all(0 <= d <= 8.0 for d in delays) and len(set(delays)) > 100
    assert max(p.delay(0, rng) for _ in range(50)) <= 1.0
    assert p.delay(0, rng, retry_after=5.0) >= 5.0 and p.delay(0, rng, retry_after=100) == 8.0


def test_urls_lose_credentials():
    assert (
        redact_url("https://user:pw@api.example.com:8443/v1?key=abc")
        == "https://api.example.com:8443/v1"
    )
    assert redact_argv(["x", "--base-url=https://u:p@h/v1", "https://h/v1?api_key=s"]) == [
        "x",
        "--base-url=https://h/v1",
        "https://h/v1",
    ]


def test_progress_writes_status_lines_when_not_on_a_terminal(capsys):
    from cosmosage.dataprep.synth.llm import Progress

    usage = Usage(requests=7, retries=2, failed=1, prompt_tokens=700, completion_tokens=90)
    p = Progress(10, "synth", usage, initial=3, every=0.0)
    p.update()
    p.close()
    err = capsys.readouterr().err
    assert "synth: 4/10 items" in err and "item/s, ETA" in err
    assert "7 requests (2 retries, 1 failed), tokens 700 in / 90 out" in err


def test_an_echoed_key_is_masked_even_when_the_message_cuts_it_short(monkeypatch, capsys):
    from cosmosage.dataprep.synth import llm

    key = "sk-abcdefghijklmnopqrstuvwxyz0123456789"
    monkeypatch.setenv("MY_KEY", key)
    ep = llm.Endpoint("http://127.0.0.1:8000/v1", "m", "MY_KEY")
    assert llm.scrub(f"bad header: Bearer {key}", ep) == "bad header: Bearer ***"
    cut = f"unauthorized: got Bearer {key[:20]}"  # the server's message was truncated
    assert key[:8] not in llm.scrub(cut, ep)
    assert llm.scrub("nothing secret here", ep) == "nothing secret here"
    # plain http to another machine with a key: one warning per host
    llm.warn_plain_http(ep)
    assert capsys.readouterr().err == ""
    remote = llm.Endpoint("http://gpu-box.example:8000/v1", "m", "MY_KEY")
    llm.warn_plain_http(remote)
    llm.warn_plain_http(remote)
    err = capsys.readouterr().err
    assert err.count("plain http to another machine") == 1 and key not in err
