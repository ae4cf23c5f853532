"""A small stand-in for the Hugging Face Hub's HTTP API, served on 127.0.0.1.

It answers the requests that `huggingface_hub.HfApi.create_repo`,
`HfApi.upload_folder`, `HfApi.list_repo_refs` and `HfApi.create_tag` make, keeps what
it receives in memory and records every request, so tests can publish with the real
client and check what arrived.

Every file is given the "regular" upload mode, so contents travel inline
(base64 inside the commit) and no LFS or Xet storage is involved.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a blob; the Hub reports it as a regular file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Commit:
    oid: str
    summary: str
    description: str
    added: dict[str, bytes]
    deleted: list[str]


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    visibility: str | None
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # name -> commit oid

    @property
    def head(self) -> str:
        return self.commits[-1].oid if self.commits else "0" * 40


class FakeHub:
    """Start with `with FakeHub(token) as hub:`; `hub.url` is the endpoint to pass to the client."""

    def __init__(self, token: str, user: str = "tester"):
        self.token = token
        self.user = user
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.unhandled: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        assert self._server is not None, "hub not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ queries for tests

    def calls(self) -> list[str]:
        """'METHOD /path' of every request received, in order."""
        return [f"{r.method} {r.path}" for r in self.requests]

    def repo_url(self, repo_id: str, repo_type: str = "model") -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.url}/{prefix}{repo_id}"

    # ------------------------------------------------------------------ endpoints

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict, dict]:
        """Returns (status, JSON body, extra headers)."""
        if headers.get("authorization") != f"Bearer {self.token}":
            return (
                401,
                {"error": "Invalid credentials in Authorization header"},
                {"X-Error-Message": "Invalid credentials in Authorization header"},
            )

        parts = [unquote(p) for p in path.strip("/").split("/")]
        if method == "GET" and parts == ["api", "whoami-v2"]:
            return 200, {"type": "user", "name": self.user, "auth": {"type": "access_token"}}, {}
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body))
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(body))
        if len(parts) >= 4 and parts[0] == "api" and parts[1] in ("models", "datasets", "spaces"):
            repo_type = parts[1][:-1]
            repo_id = "/".join(parts[2:4])
            rest = parts[4:]
            repo = self.repos.get(repo_id)
            if repo is None or repo.repo_type != repo_type:
                return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
            if method == "GET" and (rest == [] or (len(rest) == 2 and rest[0] == "revision")):
                if rest and rest[1] != "main":
                    return (
                        404,
                        {"error": "Revision not found"},
                        {"X-Error-Code": "RevisionNotFound"},
                    )
                return 200, self._info(repo), {}
            if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                return self._preupload(repo, rest[1], json.loads(body))
            if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                return self._commit(repo, rest[1], headers, body)
            if method == "GET" and rest == ["refs"]:
                return 200, self._refs(repo), {}
            if method == "POST" and len(rest) == 2 and rest[0] == "tag":
                return self._tag(repo, rest[1], json.loads(body))
        self.unhandled.append(f"{method} {path}")
        return 404, {"error": f"not served here: {method} {path}"}, {}

    def _create_repo(self, payload: dict) -> tuple[int, dict, dict]:
        namespace = payload.get("organization") or self.user
        repo_id = f"{namespace}/{payload['name']}"
        repo_type = payload.get("type") or "model"
        url = self.repo_url(repo_id, repo_type)
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", "url": url}, {}
        self.repos[repo_id] = Repo(repo_id, repo_type, payload.get("visibility"))
        return 200, {"url": url, "name": repo_id}, {}

    def _validate_yaml(self, payload: dict) -> tuple[int, dict, dict]:
        text = payload.get("content", "")
        if text.startswith("---"):
            front = text.split("---", 2)[1] if text.count("---") >= 2 else ""
            try:
                meta = yaml.safe_load(front)
            except yaml.YAMLError as exc:
                return (
                    400,
                    {"errors": [{"message": f"YAML front matter: {exc.__class__.__name__}"}]},
                    {},
                )
            if meta is not None and not isinstance(meta, dict):
                return 400, {"errors": [{"message": "YAML front matter must be a mapping"}]}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _preupload(self, repo: Repo, revision: str, payload: dict) -> tuple[int, dict, dict]:
        if revision != "main":
            return 404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"}
        files = []
        for f in payload["files"]:
            stored = repo.files.get(f["path"])
            files.append(
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(stored) if stored is not None else None,
                }
            )
        return 200, {"files": files, "commitOid": repo.head}, {}

    def _commit(
        self, repo: Repo, revision: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict, dict]:
        if revision != "main":
            return 404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"}
        if headers.get("content-type") != "application/x-ndjson":
            return 400, {"error": "expected application/x-ndjson"}, {}
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return 400, {"error": "the first line must be the commit header"}, {}
        header = lines[0]["value"]
        added: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    return 400, {"error": f"unsupported encoding for {value['path']}"}, {}
                added[value["path"]] = base64.b64decode(value["content"], validate=True)
            elif key == "deletedFile":
                deleted.append(value["path"])
            else:
                return 400, {"error": f"operation {key!r} is not served here"}, {}
        if not header.get("summary"):
            return 400, {"error": "empty commit summary"}, {}
        digest = hashlib.sha1(repo.head.encode() + body).hexdigest()
        commit = Commit(digest, header["summary"], header.get("description", ""), added, deleted)
        for p in deleted:
            repo.files.pop(p, None)
        repo.files.update(added)
        repo.commits.append(commit)
        commit_url = f"{self.repo_url(repo.repo_id, repo.repo_type)}/commit/{digest}"
        return (
            200,
            {"success": True, "commitOid": digest, "commitUrl": commit_url, "pullRequestUrl": None},
            {},
        )

    def _refs(self, repo: Repo) -> dict:
        def ref(name: str, kind: str, oid: str) -> dict:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}

        return {
            "branches": [ref("main", "heads", repo.head)] if repo.commits else [],
            "converts": [],
            "tags": [ref(name, "tags", oid) for name, oid in repo.tags.items()],
        }

    def _tag(self, repo: Repo, revision: str, payload: dict) -> tuple[int, dict, dict]:
        oid = repo.head if revision == "main" else revision
        if not any(c.oid == oid for c in repo.commits):
            return 404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"}
        tag = payload.get("tag") or ""
        if tag in repo.tags:
            return 409, {"error": f"Tag {tag} already exists"}, {}
        repo.tags[tag] = oid
        return 200, {}, {}

    def _info(self, repo: Repo) -> dict:
        return {
            "id": repo.repo_id,
            "sha": repo.head,
            "private": repo.visibility == "private",
            "siblings": [{"rfilename": p} for p in sorted(repo.files)],
        }


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # noqa: A002
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = urlsplit(self.path).path
        with self.hub._lock:
            self.hub.requests.append(Request(self.command, path, headers, body))
            try:
                status, payload, extra = self.hub.handle(self.command, path, headers, body)
            except Exception as exc:  # a malformed request is the client's fault: answer 400
                status, payload, extra = 400, {"error": f"{exc.__class__.__name__}: {exc}"}, {}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_DELETE = _serve
