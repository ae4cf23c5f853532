"""The shell shared by synth and grade, driven by a small job of its own: what it asks,
what it journals, how it resumes, and what it writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cosmosage.dataprep.records import Reject
from cosmosage.dataprep.synth.jobs import Answer, JournaledJob, Outcome
from cosmosage.dataprep.synth.llm import Endpoint, RetryPolicy
from cosmosage.dataprep.synth.parse import ParseError
from tests.helpers.scripted_server import Reply, ScriptedServer, completion, last_user

QUIET = {"echo": lambda m: None}


@dataclass
class EchoConfig:
    input: str
    out: str
    prompt: str
    sampling: dict = field(default_factory=lambda: {"max_tokens": 8})
    concurrency: int = 3
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(retries=0))
    prompt_change: str = "stop"
    retry_failed: bool = False


class EchoJob(JournaledJob[EchoConfig]):
    """Asks the model to repeat each word of the input file; keeps what comes back."""

    kind = "echo"
    fields = {"word"}

    def __init__(self, cfg: EchoConfig, endpoint: Endpoint) -> None:
        super().__init__(cfg, [endpoint])
        words = Path(cfg.input).read_text().split()
        self.items = [(f"w:{w}", w) for w in words]

    def header(self) -> dict:
        return {"note": "echo"}

    def request(self, payload: str) -> tuple[int, list[dict]]:
        return 0, self.prompt.messages(word=payload)

    def answer(self, payload: str, answer: Answer) -> dict:
        if not isinstance(answer.obj, dict) or "word" not in answer.obj:
            raise ParseError("wrong shape: no word")
        return {"records": [{"asked": payload, "said": answer.obj["word"]}]}

    def failure(self, payload: str, reason: str, answer: Answer | None) -> dict:
        return {"reason": reason, **({"raw": answer.raw} if answer else {})}

    def finish(self, latest: dict[str, dict]) -> Outcome:
        kept, rejects = [], []
        for key, word in self.items:
            entry = latest[key]
            kept.extend(entry.get("records", []))
            if "reason" in entry:
                rejects.append(Reject(self.cfg.input, 1, entry["reason"], {"word": word}).to_json())
        return Outcome(kept, rejects, {"words": len(self.items)})


def respond(request: dict, n: int) -> Reply:
    word = last_user(request).split()[-1]
    if word == "prose":
        return Reply(body=completion("I would rather not."))
    if word == "down":
        return Reply(503, {"error": {"message": "down"}})
    return Reply(body=completion(json.dumps({"word": word})))


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_job_journals_resumes_and_writes_through_the_shell(tmp_path):
    prompt = tmp_path / "echo.yaml"
    prompt.write_text("name: echo\nversion: 1\nuser: 'Repeat this word: {{word}}'\n")
    words = tmp_path / "words.txt"
    first = [f"w{i}" for i in range(12)]
    words.write_text(" ".join(first))
    out = tmp_path / "echo.jsonl"
    cfg = EchoConfig(input=str(words), out=str(out), prompt=str(prompt))
    with ScriptedServer(respond) as s:
        run = EchoJob(cfg, Endpoint(s.base_url, "m")).run(**QUIET)
        assert (run.kept, run.rejects, run.resumed, len(s.requests)) == (12, 0, 0, 12)
        words.write_text(" ".join([*first, "prose", "down", *[f"v{i}" for i in range(6)]]))
        said: list[str] = []
        run = EchoJob(cfg, Endpoint(s.base_url, "m")).run(echo=said.append)
        assert said == ["resuming: 12 of 20 items already done, 8 to go"]
        assert (run.kept, run.rejects, run.resumed, len(s.requests)) == (18, 2, 12, 20)
        assert run.usage.requests == 8 and run.usage.failed == 1
        assert run.outcome.manifest == {"words": 20}

    journal = lines(tmp_path / "echo.journal.jsonl")
    assert journal[0] == {
        "journal": 1,
        "kind": "echo",
        "input": str(words),
        "prompt": EchoJob(cfg, Endpoint("http://x/v1", "m")).prompt.provenance(),
        "note": "echo",
    }
    entries = {e["key"]: e for e in journal[1:]}
    assert len(entries) == len(journal) - 1 == 20  # each item journaled exactly once
    assert entries["w:w0"]["records"] == [{"asked": "w0", "said": "w0"}]
    assert entries["w:w0"]["prompt_version"] == "1" and entries["w:w0"]["usage"]["attempts"] == 1
    assert entries["w:prose"]["failed"] == "parse" and entries["w:prose"]["reason"] == (
        "no JSON: no object or array in the output"
    )
    assert entries["w:prose"]["raw"] == "I would rather not." and "usage" in entries["w:prose"]
    assert entries["w:down"] == {
        "key": "w:down",
        "prompt_version": "1",
        "failed": "request",
        "reason": "request failed: HTTP 503: down (after 1 attempt)",
    }

    assert [r["asked"] for r in lines(out)] == [*first, *[f"v{i}" for i in range(6)]]
    assert [r["record"]["word"] for r in lines(tmp_path / "echo.rejects.jsonl")] == [
        "prose",
        "down",
    ]
    manifest = json.loads((tmp_path / "echo.manifest.json").read_text())
    assert manifest["step"] == "echo" and manifest["words"] == 20 and manifest["kept"] == 18
    assert manifest["dropped"] == {"no JSON": 1, "request failed": 1}
    assert manifest["prompt"]["path"] == str(prompt) and manifest["inputs"][0]["path"] == str(words)
    assert manifest["resume"]["items_from_earlier_runs"] == 12
    assert manifest["resume"]["items_this_run"] == 8

    # Only the failed request is asked again, and only when told to.
    with ScriptedServer(lambda r, n: Reply(body=completion('{"word": "up"}'))) as s:
        again = EchoJob(cfg, Endpoint(s.base_url, "m")).run(**QUIET)
        assert again.usage.requests == 0 and again.rejects == 2
        retry = EchoJob(
            EchoConfig(**{**cfg.__dict__, "retry_failed": True}), Endpoint(s.base_url, "m")
        )
        retried = retry.run(**QUIET)
        assert len(s.requests) == 1 and retried.kept == 19 and retried.rejects == 1
    assert json.loads((tmp_path / "echo.manifest.json").read_text())["resume"]["items_retried"] == 1
