"""arXiv: recorded API pages, a resumable cache, the bulk snapshot, offline processing.
Nothing here touches the network: a fake opener or a server on 127.0.0.1 answers."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from datetime import date

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.corpus import arxiv
from cosmosage.dataprep.records import DataError, Reject
from tests.dataprep.corpus.fixtures import (
    ATOM_ERROR,
    LATEX_MAIN,
    LATEX_METHOD,
    atom_page,
    make_pdf,
    make_tarball,
    prose,
    snapshot_line,
)

ENTRIES = [
    {
        "id": f"2101.0000{i}",
        "title": f"Paper {i}",
        "abstract": prose(i, 80),
        "categories": ["astro-ph.CO", "gr-qc"],
    }
    for i in range(1, 6)
]


class Recorded:
    """Serves recorded API pages by `start` and sources by id; counts the calls."""

    def __init__(self, page_size: int = 2, sources: dict[str, bytes] | None = None):
        self.page_size = page_size
        self.sources = sources or {}
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        parsed = urllib.parse.urlparse(url)
        if parsed.path.endswith("/api/query"):
            q = urllib.parse.parse_qs(parsed.query)
            start, n = int(q["start"][0]), int(q["max_results"][0])
            return atom_page(ENTRIES[start : start + n], len(ENTRIES), start)
        ident = parsed.path.rsplit("/", 1)[-1]
        return self.sources[ident]


def fetcher(tmp_path, opener, **kw):
    clock = {"t": 0.0}
    sleeps: list[float] = []

    def sleep(s):
        sleeps.append(s)
        clock["t"] += s

    f = arxiv.Fetcher(
        tmp_path / "cache",
        opener=opener,
        page_size=2,
        sleep=sleep,
        clock=lambda: clock["t"],
        api_url="http://arxiv.test/api/query",
        eprint_url="http://arxiv.test/e-print/{id}",
        **kw,
    )
    return f, sleeps


def test_build_query():
    q = arxiv.build_query(["astro-ph.CO"], date(2020, 1, 1))
    assert q == "cat:astro-ph.CO AND submittedDate:[202001010000 TO 29991231" + "2359]"
    assert arxiv.build_query(["astro-ph.CO", "gr-qc"]) == "(cat:astro-ph.CO OR cat:gr-qc)"


def test_parse_feed_reads_recorded_page():
    entries, total = arxiv.parse_feed(atom_page(ENTRIES[:2], 5, 0))
    assert total == 5
    e = entries[0]
    assert e["id"] == "2101.00001" and e["version"] == 1 and e["title"] == "Paper 1"
    assert e["categories"] == ["astro-ph.CO", "gr-qc"] and e["primary_category"] == "astro-ph.CO"
    assert e["abstract"] == " ".join(ENTRIES[0]["abstract"].split())
    assert e["pdf_url"].endswith("2101.00001v1")


def test_parse_feed_errors_are_clear():
    with pytest.raises(DataError, match="arXiv API error: incorrect id format"):
        arxiv.parse_feed(ATOM_ERROR, "page")
    with pytest.raises(DataError, match="malformed Atom XML"):
        arxiv.parse_feed(b"<feed><entry>", "page")


def test_fetch_pages_rate_limits_and_resumes(tmp_path):
    tar = make_tarball(
        tmp_path / "src.tar.gz", {"ms.tex": LATEX_MAIN, "sections/method.tex": LATEX_METHOD}
    ).read_bytes()
    rec = Recorded(sources={e["id"]: tar for e in ENTRIES})
    f, sleeps = fetcher(tmp_path, rec)
    entries = f.fetch_metadata(arxiv.build_query(["astro-ph.CO"]))
    f.fetch_sources(e["id"] for e in entries)
    assert [e["id"] for e in entries] == [e["id"] for e in ENTRIES]
    assert len(rec.calls) == 3 + 5  # three pages of two, five sources
    assert sleeps and all(s == pytest.approx(3.0) for s in sleeps)  # one polite pause per request
    assert f.stats["new_entries"] == 5 and f.stats["downloaded"] == 5
    assert len((tmp_path / "cache" / "metadata.jsonl").read_text().splitlines()) == 5
    # A rerun adds nothing and downloads nothing; only the metadata pages are asked again.
    f2, _ = fetcher(tmp_path, rec)
    f2.fetch_sources(e["id"] for e in f2.fetch_metadata(arxiv.build_query(["astro-ph.CO"])))
    assert f2.stats["new_entries"] == 0 and f2.stats["downloaded"] == 0 and f2.stats["cached"] == 5
    assert len((tmp_path / "cache" / "metadata.jsonl").read_text().splitlines()) == 5


def test_rerun_after_a_crash_mid_write(tmp_path):
    rec = Recorded()
    f, _ = fetcher(tmp_path, rec)
    f.fetch_metadata("cat:astro-ph.CO", max_results=2)
    meta = tmp_path / "cache" / "metadata.jsonl"
    meta.write_bytes(meta.read_bytes() + b'{"id": "2101.0000')  # a line cut off by a crash
    f2, _ = fetcher(tmp_path, rec)
    f2.fetch_metadata("cat:astro-ph.CO")
    ids = [json.loads(x)["id"] for x in meta.read_text().splitlines()]
    assert ids == [e["id"] for e in ENTRIES]


def test_failed_download_is_retried_later(tmp_path):
    import urllib.error

    tar = make_tarball(tmp_path / "src.tar.gz", {"ms.tex": LATEX_MAIN}).read_bytes()
    ids = ["2101.00001", "2101.00002"]
    attempts = {i: 0 for i in ids}
    down = {"2101.00001": 2}  # the first paper's first two requests fail

    def flaky(url):
        ident = urllib.parse.urlparse(url).path.rsplit("/", 1)[-1]
        attempts[ident] += 1
        if attempts[ident] <= down.get(ident, 0):
            raise urllib.error.URLError("connection refused")
        return tar

    # first run: one try and one retry for the first paper, both refused; it is skipped,
    # the second paper is fetched
    f, sleeps = fetcher(tmp_path, flaky, retries=1)
    f.fetch_sources(ids)
    assert attempts == {"2101.00001": 2, "2101.00002": 1}
    assert f.stats["failed"] == 1 and f.stats["downloaded"] == 1 and f.stats["requests"] == 3
    assert not (tmp_path / "cache" / "src" / "2101.00001.tar.gz").exists()
    # the next run asks again for the missing paper only, and this time gets it
    f2, _ = fetcher(tmp_path, flaky, retries=1)
    f2.fetch_sources(ids)
    assert attempts == {"2101.00001": 3, "2101.00002": 1}
    assert f2.stats["downloaded"] == 1 and f2.stats["cached"] == 1 and f2.stats["failed"] == 0
    assert f2.stats["requests"] == 1
    assert (tmp_path / "cache" / "src" / "2101.00001.tar.gz").read_bytes() == tar


def test_default_opener_against_a_local_server(tmp_path):
    page = atom_page(ENTRIES[:1], 1, 0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/atom+xml")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        f = arxiv.Fetcher(
            tmp_path / "c", delay=0, api_url=f"http://127.0.0.1:{server.server_port}/api/query"
        )
        assert [e["id"] for e in f.fetch_metadata("cat:astro-ph.CO")] == ["2101.00001"]
    finally:
        server.shutdown()


# ------------------------------------------------------------------ bulk snapshot


@pytest.fixture
def snapshot(tmp_path):
    lines = [
        snapshot_line(
            "2001.00001",
            "astro-ph.CO",
            "Mon, 6 Jan 2020 10:00:00 GMT",
            "http://creativecommons.org/licenses/by/4.0/",
            prose(11, 90),
        ),
        snapshot_line(
            "1901.00002", "astro-ph.CO", "Tue, 8 Jan 2019 10:00:00 GMT", None, prose(12, 90)
        ),
        snapshot_line("2002.00003", "hep-th", "Wed, 5 Feb 2020 10:00:00 GMT", None, prose(13, 90)),
        "{not json",
        json.dumps({"id": 7, "abstract": "x"}),
        snapshot_line(
            "2101.00001",
            "astro-ph.CO gr-qc",
            "Fri, 1 Jan 2021 10:00:00 GMT",
            "http://arxiv.org/licenses/nonexclusive-distrib/1.0/",
            prose(14, 90),
        ),
    ]
    path = tmp_path / "arxiv-metadata-oai-snapshot.json"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_snapshot_filters_and_rejects_malformed_lines(snapshot):
    items = list(arxiv.read_snapshot(snapshot, ["astro-ph.CO"], since=date(2020, 1, 1)))
    recs = [x for x in items if not isinstance(x, Reject)]
    rejects = [x for x in items if isinstance(x, Reject)]
    assert [r["id"] for r in recs] == ["2001.00001", "2101.00001"]
    assert [(r.line, r.reason.split(":")[0]) for r in rejects] == [
        (4, "invalid JSON"),
        (5, "malformed metadata"),
    ]
    docs = list(arxiv.abstract_documents(recs, str(snapshot)))
    assert docs[0].text.startswith("# Paper 2001.00001\n\n") and docs[0].meta["license"].endswith(
        "by/4.0/"
    )


def test_abstracts_command_carries_licenses(snapshot, tmp_path, tiny_model):
    from cosmosage.tools.cli.main import main

    out = tmp_path / "abs.jsonl"
    res = CliRunner().invoke(
        main,
        [
            "data",
            "arxiv",
            "abstracts",
            str(snapshot),
            "--category",
            "astro-ph.CO",
            "--since",
            "2020-01-01",
            "--min-words",
            "20",
            "--tokenizer",
            str(tiny_model),
            "--sequence-len",
            "64",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "abs.manifest.json").read_text())
    assert {i["doc_id"]: i["license"] for i in manifest["inputs"]} == {
        "2001.00001": "http://creativecommons.org/licenses/by/4.0/",
        "2101.00001": "http://arxiv.org/licenses/nonexclusive-distrib/1.0/",
    }
    assert manifest["dropped"] == {"invalid JSON": 1, "malformed metadata": 1}
    rejects = [json.loads(x) for x in (tmp_path / "abs.rejects.jsonl").read_text().splitlines()]
    assert {r["line"] for r in rejects} == {4, 5}


# ------------------------------------------------------------------ cache -> corpus, offline


def test_process_cache_prefers_latex_then_markdown_then_pdf(tmp_path, snapshot, tiny_model):
    from cosmosage.tools.cli.main import main

    cache = tmp_path / "cache"
    (cache / "src").mkdir(parents=True)
    (cache / "mmd").mkdir()
    (cache / "pdf").mkdir()
    entries = [
        {"id": "2101.00001", "title": "Sound waves", "abstract": "a"},
        {"id": "2101.00002", "title": "Markdown paper", "abstract": "b"},
        {"id": "2101.00003", "title": "PDF paper", "abstract": "c"},
        {"id": "2101.00004", "title": "Broken paper", "abstract": "d"},
        {"id": "astro-ph/0101005", "title": "Old id", "abstract": prose(5, 80)},
    ]
    (cache / "metadata.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    body = "\n\n".join(prose(20 + i, 60) for i in range(4))
    make_tarball(
        cache / "src" / "2101.00001.tar.gz",
        {
            "ms.tex": LATEX_MAIN.replace(
                "\\section{Introduction}", body + "\n\\section{Introduction}"
            ),
            "sections/method.tex": LATEX_METHOD,
        },
    )
    (cache / "mmd" / "2101.00002.mmd").write_text("# Markdown paper\n\n" + prose(30, 200))
    pdf_text = prose(40, 150)
    (cache / "pdf" / "2101.00003.pdf").write_bytes(
        make_pdf([[pdf_text[i : i + 80] for i in range(0, len(pdf_text), 80)]])
    )
    (cache / "src" / "2101.00004.tar.gz").write_bytes(b"\x1f\x8b\x08\x00truncated")
    out = tmp_path / "papers.jsonl"
    args = [
        "data",
        "arxiv",
        "process",
        "--cache",
        str(cache),
        "--metadata",
        str(snapshot),
        "--abstract-fallback",
        "--min-words",
        "20",
        "--tokenizer",
        str(tiny_model),
        "--sequence-len",
        "64",
        "--out",
        str(out),
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "papers.manifest.json").read_text())
    inputs = {i["doc_id"]: i for i in manifest["inputs"]}
    assert inputs["2101.00001"]["path"].endswith("src/2101.00001.tar.gz")
    assert (
        inputs["2101.00001"]["license"] == "http://arxiv.org/licenses/nonexclusive-distrib/1.0/"
    )  # from the snapshot
    assert inputs["2101.00002"]["path"].endswith("mmd/2101.00002.mmd")
    assert inputs["2101.00003"]["path"].endswith("pdf/2101.00003.pdf")
    assert "astro-ph/0101005" in inputs  # abstract fallback, nothing cached
    assert "2101.00004" not in inputs
    rejects = [json.loads(x) for x in (tmp_path / "papers.rejects.jsonl").read_text().splitlines()]
    assert any(r["reason"].startswith("too short") or "truncated" in r["reason"] for r in rejects)
    text = "\n".join(json.loads(x)["text"] for x in out.read_text().splitlines())
    assert "FIGURE CAPTION" not in text and "\\begin{equation}" in text


# Each form of a paper says which form it is, so the text tells which one was read.
FORM_TEXT = {
    "src": "Quasars from the LaTeX source.",
    "mmd": "Pulsars from the Nougat markdown.",
    "md": "Magnetars from the Marker markdown.",
    "pdf": "Blazars from the PDF.",
}


def cache_forms(cache, arxiv_id: str, forms: str, broken_src: bool = False) -> None:
    """Cache `arxiv_id` in the given forms ("src mmd md pdf"), each with its own text."""
    body = "\n\n".join(prose(70 + i, 40) for i in range(2))
    sid = arxiv.safe_id(arxiv_id)
    for form in forms.split():
        folder = cache / ("src" if form == "src" else "pdf" if form == "pdf" else "mmd")
        folder.mkdir(parents=True, exist_ok=True)
        text = FORM_TEXT[form]
        if form == "src":
            path = folder / f"{sid}.tar.gz"
            if broken_src:
                path.write_bytes(b"\x1f\x8b\x08\x00truncated")
                continue
            main = LATEX_MAIN.replace(
                "\\section{Introduction}", f"{text}\n\n{body}\n\\section{{Intro}}"
            )
            make_tarball(path, {"ms.tex": main, "sections/method.tex": LATEX_METHOD})
        elif form == "pdf":
            (folder / f"{sid}.pdf").write_bytes(make_pdf([[text, body[:70]]]))
        else:
            (folder / f"{sid}.{form}").write_text(f"# A paper\n\n{text}\n\n{body}\n")


# (forms cached, the form whose text is read); a broken tarball counts as not there
PREFERENCE = [
    ("src mmd pdf", "src"),
    ("src mmd md pdf", "src"),
    ("src pdf", "src"),
    ("src mmd", "src"),
    ("mmd pdf", "mmd"),
    ("md pdf", "md"),
    ("mmd md", "mmd"),
    ("pdf", "pdf"),
    ("broken-src mmd pdf", "mmd"),
    ("broken-src pdf", "pdf"),
]


def test_each_paper_is_read_from_its_best_cached_form(tmp_path):
    cache = tmp_path / "cache"
    entries = []
    for i, (forms, _) in enumerate(PREFERENCE):
        arxiv_id = f"2102.{i:05d}"
        broken = forms.startswith("broken-")
        cache_forms(cache, arxiv_id, forms.removeprefix("broken-"), broken_src=broken)
        entries.append({"id": arxiv_id, "title": f"Paper {i}", "abstract": "a"})
    (cache / "metadata.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    suffix = {"src": "src/{}.tar.gz", "mmd": "mmd/{}.mmd", "md": "mmd/{}.md", "pdf": "pdf/{}.pdf"}
    items = list(arxiv.cache_documents(cache))
    assert not [x for x in items if isinstance(x, Reject)]
    docs = {d.id: d for d in items}
    assert sorted(docs) == [e["id"] for e in entries]
    for entry, (forms, winner) in zip(entries, PREFERENCE, strict=True):
        arxiv_id = entry["id"]
        text, kind, path = arxiv.paper_text(cache, arxiv_id)
        case = (forms, winner, text[:200])
        assert path == cache / suffix[winner].format(arxiv_id), case
        assert FORM_TEXT[winner] in " ".join(text.split()), case
        assert not [f for f in FORM_TEXT if f != winner and FORM_TEXT[f] in text], case
        assert kind == ("pdf" if winner == "pdf" else "markdown"), case
        doc = docs[arxiv_id]
        assert doc.source == str(path) and FORM_TEXT[winner] in " ".join(doc.text.split()), case
        assert doc.meta["kind"] == kind


def test_fetch_then_process_commands_against_a_local_server(tmp_path, tiny_model):
    """The two commands end to end: recorded API pages and source tarballs served on
    127.0.0.1, a rerun that downloads nothing, then offline processing of the cache."""
    from cosmosage.tools.cli.main import main

    body = "\n\n".join(prose(50 + i, 70) for i in range(3))
    tar = make_tarball(
        tmp_path / "t.tar.gz",
        {
            "ms.tex": LATEX_MAIN.replace(
                "\\section{Introduction}", body + "\n\\section{Introduction}"
            ),
            "sections/method.tex": LATEX_METHOD,
        },
    ).read_bytes()
    rec = Recorded(page_size=2, sources={e["id"]: tar for e in ENTRIES})
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            data = rec("http://arxiv.test" + self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    cache = tmp_path / "cache"
    fetch = [
        "data",
        "arxiv",
        "fetch",
        "--cache",
        str(cache),
        "--category",
        "astro-ph.CO",
        "--since",
        "2020-01-01",
        "--delay",
        "0",
        "--page-size",
        "2",
        "--api-url",
        f"{base}/api/query",
        "--eprint-url",
        base + "/e-print/{id}",
    ]
    try:
        first = CliRunner().invoke(main, fetch)
        assert first.exit_code == 0, first.output
        assert json.loads(first.output)["downloaded"] == 5
        n_hits = len(hits)
        again = CliRunner().invoke(main, fetch)
        assert (
            json.loads(again.output)["downloaded"] == 0 and json.loads(again.output)["cached"] == 5
        )
        assert not any("/e-print/" in h for h in hits[n_hits:])
        assert "submittedDate%3A%5B202001010000" in hits[0]
    finally:
        server.shutdown()
    out = tmp_path / "arxiv.jsonl"
    res = CliRunner().invoke(
        main,
        [
            "data",
            "arxiv",
            "process",
            "--cache",
            str(cache),
            "--tokenizer",
            str(tiny_model),
            "--sequence-len",
            "64",
            "--out",
            str(out),
            "--no-dedup",
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "arxiv.manifest.json").read_text())
    assert sorted(i["doc_id"] for i in m["inputs"]) == [e["id"] for e in ENTRIES]
    assert all(
        i["license"] == "unknown" for i in m["inputs"]
    )  # the API gives none; --metadata adds them


def test_abstracts_on_the_local_executor_equal_shards_merged_by_hand(
    snapshot, tmp_path, tiny_model
):
    from cosmosage.tools.cli.main import main

    def run(*args):
        res = CliRunner().invoke(main, ["data", *args])
        assert res.exit_code == 0, res.output

    def abstracts(folder, *extra):
        run("arxiv", "abstracts", str(snapshot), "--category", "astro-ph.CO", "--min-words", "20",
            "--tokenizer", str(tiny_model), "--sequence-len", "64",
            "--out", str(folder / "abs.jsonl"), *extra)  # fmt: skip

    abstracts(tmp_path / "exec", "--executor", "local", "--tasks", "2")
    for i in range(2):
        abstracts(tmp_path / "hand", "--shard", f"{i}/2")
    run("merge-shards", "--out", str(tmp_path / "hand" / "abs.jsonl"))
    for name in ("abs.jsonl", "abs.rejects.jsonl", "abs.docs.jsonl"):
        assert (tmp_path / "exec" / name).read_bytes() == (tmp_path / "hand" / name).read_bytes()
    assert (tmp_path / "exec" / "abs.jsonl").read_text().strip()


@pytest.mark.parametrize("executor", [[], ["--executor", "local", "--tasks", "2"]])
def test_a_document_of_a_metadata_line_is_rejected_with_that_file_and_line(
    snapshot, tmp_path, tiny_model, executor
):
    """Whether its line could not be read or its document was dropped later (here: too
    short), a reject names the snapshot as `source` and the line as `line`, in one
    process and on the executor."""
    from cosmosage.tools.cli.main import main

    out = tmp_path / "abs.jsonl"
    args = ["data", "arxiv", "abstracts", str(snapshot), "--category", "astro-ph.CO"]
    args += ["--since", "2020-01-01", "--min-words", "5000", "--tokenizer", str(tiny_model)]
    res = CliRunner().invoke(main, [*args, "--sequence-len", "64", "--out", str(out), *executor])
    # nothing kept: one process fails and writes its reasons aside; the executor's tasks
    # are shards, and its merge keeps the (empty) outputs
    assert res.exit_code == (0 if executor else 1), res.output
    name = "abs.rejects.jsonl" if executor else "abs.failed.rejects.jsonl"
    rejects = [json.loads(x) for x in (tmp_path / name).read_text().splitlines()]
    assert sorted((r["source"], r["line"]) for r in rejects) == [
        (str(snapshot), line) for line in (1, 4, 5, 6)
    ]
