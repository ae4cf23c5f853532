"""A small OpenAI-compatible HTTP server with canned answers, for tests and benchmarks.

It answers POST /v1/chat/completions with whatever a `respond(request, n)` function
returns: a normal completion, an HTTP error, a body that is not JSON, or a delay. So
tests can inject faults (429s, 500s, garbage, slow answers) into a real HTTP exchange
with the real client.

    python -m tests.helpers.scripted_server --port 8123 --mode qa --latency 0.05
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    body: str | dict = ""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


def completion(
    content: str,
    model: str = "scripted",
    finish_reason: str = "stop",
    prompt_tokens: int = 10,
    completion_tokens: int | None = None,
) -> dict:
    """A chat.completion body around `content`."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens
            if completion_tokens is not None
            else max(1, len(content) // 4),
            "total_tokens": prompt_tokens + (completion_tokens or max(1, len(content) // 4)),
        },
    }


def last_user(request: dict) -> str:
    msgs = [m for m in request.get("messages", []) if m.get("role") == "user"]
    return msgs[-1]["content"] if msgs else ""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def qa_reply(request: dict, n: int) -> Reply:
    """Two pairs whose text names a hash of the prompt, so outputs can be traced to inputs."""
    h = digest(last_user(request))
    pairs = [
        {
            "question": f"What does passage {h} say, point {k}?",
            "answer": f"Passage {h} states fact {k}.",
        }
        for k in range(2)
    ]
    return Reply(body=completion(json.dumps({"pairs": pairs}), request.get("model", "scripted")))


def grade_reply(request: dict, n: int) -> Reply:
    """Scores that depend only on the prompt: reproducible across runs and resumes."""
    score = int(digest(last_user(request)), 16) % 41 + 60  # 60..100
    body = {
        "correctness": score,
        "clarity": score,
        "pertinence": score,
        "overall": score,
        "critique": f"scripted critique {score}",
    }
    return Reply(body=completion(json.dumps(body), request.get("model", "scripted")))


JUDGE_SCORE = re.compile(r"judge-score=(\d+)")
JUDGE_FORMAT = re.compile(r"judge-format=(\w+)")


def judge_reply(request: dict, n: int) -> Reply:
    """A judge's verdict on an answer: the score an answer names with `judge-score=NN`
    (else one that depends only on the prompt, 0..100), written as the answer asks with
    `judge-format=`: json (default), bare ("NN"), colon ("Score: NN" and a reason line),
    prose (no score at all) or error (HTTP 500)."""
    text = last_user(request)
    named = JUDGE_SCORE.search(text)
    score = int(named.group(1)) if named else int(digest(text), 16) % 101
    asked = JUDGE_FORMAT.search(text)
    shape = asked.group(1) if asked else "json"
    model = request.get("model", "scripted")
    if shape == "error":
        return Reply(500, {"error": {"message": "scripted judge failure"}})
    content = {
        "json": json.dumps({"score": score, "reason": f"scripted reason {score}"}),
        "bare": str(score),
        "colon": f"Score: {score}\nReason: scripted reason {score}",
        "prose": "I am not able to compare these two answers.",
    }[shape]
    return Reply(body=completion(content, model))


def echo_reply(request: dict, n: int) -> Reply:
    return Reply(body=completion(last_user(request)[:200], request.get("model", "scripted")))


MODES: dict[str, Callable[[dict, int], Reply]] = {
    "qa": qa_reply,
    "grade": grade_reply,
    "judge": judge_reply,
    "echo": echo_reply,
}


class ScriptedServer:
    """Serve on 127.0.0.1 (a free port unless given) in a background thread."""

    def __init__(
        self,
        respond: Callable[[dict, int], Reply] = echo_reply,
        latency: float = 0.0,
        port: int = 0,
    ):
        self.respond = respond
        self.latency = latency
        self.requests: list[dict] = []  # {"path", "body", "authorization"} per request
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _send(self, reply: Reply) -> None:
                body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = body.encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to tell it

            def do_GET(self) -> None:
                self._send(
                    Reply(body={"object": "list", "data": [{"id": "scripted", "object": "model"}]})
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    request = json.loads(raw or b"{}")
                except ValueError:
                    request = {}
                with server._lock:
                    n = len(server.requests)
                    server.requests.append(
                        {
                            "path": self.path,
                            "body": request,
                            "authorization": self.headers.get("Authorization"),
                        }
                    )
                reply = server.respond(request, n)
                delay = server.latency + reply.delay
                if delay:
                    time.sleep(delay)
                self._send(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", choices=sorted(MODES), default="echo")
    ap.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="Seconds each answer waits (a stand-in for generation time).",
    )
    args = ap.parse_args()
    server = ScriptedServer(MODES[args.mode], args.latency, args.port)
    print(f"listening on {server.base_url}", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
