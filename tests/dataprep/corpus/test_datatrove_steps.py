"""The corpus steps are datatrove pipeline steps: a datatrove filter of the user's slots
in after the project's own, its drops join the rejects file with its reason, the
manifest counts them, and the documents it keeps are the cleaned ones."""

from __future__ import annotations

import json

from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.filters.regex_filter import RegexFilter

from cosmosage.dataprep.corpus.filters import QualityConfig
from cosmosage.dataprep.corpus.pipeline import CorpusConfig, run_corpus
from cosmosage.dataprep.corpus.sources import read_file_documents
from tests.dataprep.corpus.test_pipeline import lines


class NoOddDocs(BaseFilter):
    """Drops documents whose heading number is odd, with a reason; records what it saw."""

    name = "odd"

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def filter(self, doc):
        self.seen.append(doc.text)
        n = int(doc.text.split()[2]) if doc.text.startswith("# Doc ") else 0
        return (False, f"odd heading {n}") if n % 2 else True


def test_datatrove_filters_drop_into_the_rejects_file(tmp_path, tiny_tokenizer, corpus_dir):
    out = tmp_path / "c.jsonl"
    cfg = CorpusConfig(sequence_len=64, quality=QualityConfig())
    odd = NoOddDocs()
    res = run_corpus(read_file_documents([str(corpus_dir)]), out, tiny_tokenizer, cfg,
                     filters=[RegexFilter(r"# Doc [0-3]\b"), odd])  # fmt: skip
    rejects = {r["record"]["doc_id"]: r["reason"] for r in lines(tmp_path / "c.rejects.jsonl")}
    for i in range(4):  # the regex filter's, its class name as the reason (it gives none)
        assert rejects[f"docs/doc0{i}.md"] == "RegexFilter"
    for doc, n in [("doc05", 5), ("doc07", 7), ("doc09", 9), ("dup_near", 5)]:
        assert rejects[f"docs/{doc}.md"] == f"odd heading {n}"
    # the project's filters ran first: the German and the short documents never reached
    # the user's filter; and dedup runs after it, so the upper-case copy of doc03 (which
    # the regex dropped) is no longer anyone's duplicate
    assert rejects["docs/german.md"].startswith("not English")
    assert rejects["docs/short.md"].startswith("too short")
    assert len(odd.seen) == 8 and not any("Galaxien" in t for t in odd.seen)
    kept = {r["doc_id"] for r in lines(out)}
    assert kept == {"docs/doc04.md", "docs/doc06.md", "docs/doc08.md", "docs/dup_exact.md"}
    m = json.loads((tmp_path / "c.manifest.json").read_text())
    assert m["dropped"]["RegexFilter"] == 4 and m["dropped"]["odd heading 5"] == 2
    assert res["documents"] == 4


def test_clean_and_filter_one_document_at_a_time(corpus_dir):
    """`filter` (datatrove's one-document entry) gives the same verdicts as the streamed
    run, with no process pool per document even when the run has workers."""
    from cosmosage.dataprep.corpus.datatrove_steps import CleanAndFilter, carried

    cfg = CorpusConfig(sequence_len=64, quality=QualityConfig(), workers=2)
    step = CleanAndFilter(cfg, exclusion_writer=None)
    docs = {d.id: d for d in read_file_documents([str(corpus_dir)])}
    kept = carried(docs["docs/doc01.md"])
    assert step.filter(kept) is True and kept.metadata["prepared"].sig is not None
    verdict = step.filter(carried(docs["docs/short.md"]))
    assert verdict[0] is False and verdict[1].startswith("too short")
