"""The bundled papers study sample: every fact checks out against its paper, no question
is in any training route, and paper-only facts have no trainable Q&A."""

import json
from pathlib import Path

import yaml

from cosmosage.dataprep.papers.build import build_augment, build_cloze
from cosmosage.dataprep.papers.closedbook import build_closed_book
from cosmosage.dataprep.papers.documents import load_papers

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "samples" / "study_papers"


def test_sample_builds_clean_and_held_out(tmp_path):
    papers, rejects = load_papers([SAMPLE])
    assert len(papers) == 4 and not rejects
    build_augment([SAMPLE], tmp_path / "augmented.jsonl")
    build_cloze([SAMPLE], tmp_path / "cloze.jsonl", variants=2)
    against = [tmp_path / "augmented.jsonl", tmp_path / "cloze.jsonl"]
    result = build_closed_book(SAMPLE / "facts.yaml", papers, tmp_path, against)
    assert result["rejected"] == 0 and result["leaked"] == 0
    assert result["groups"] == {"qa_fact": 24, "paper_only": 24}
    suite = yaml.safe_load((tmp_path / "closed_book.yaml").read_text())["prompts"]
    assert {p["document"] for p in suite} == {p.name for p in papers}
    # no question, and no paper-only answer, in the trainable hand-written Q&A
    qa = (tmp_path / "qa.jsonl").read_text().lower()
    for p in suite:
        assert p["prompt"].lower() not in qa
        if p["group"] == "paper_only":
            assert all(e.lower() not in qa for e in p["expect"]), p["id"]
    # every fact's answer is one of the cloze route's blanks
    cloze = [json.loads(x) for x in (tmp_path / "cloze.jsonl").read_text().splitlines()]
    blanks = {(c["sentence"], c["span"]) for c in cloze}
    for p in suite:
        assert any(
            s == p["sentence"] and any(e in span for e in p["expect"]) for s, span in blanks
        ), p["id"]


def test_the_quickstart_papers_questions_ask_only_what_its_trained_papers_state(tmp_path):
    """samples/closed_book/quickstart_papers.yaml: every fact checks out against a paper the
    quickstart's corpus trains on (not its held-out validation document), and no answer
    is in any chat source the quickstart trains, so recall can only come from the papers."""
    import re

    from cosmosage.dataprep.corpus.sources import is_validation

    papers_dir = ROOT / "samples" / "papers"
    papers, rejects = load_papers([papers_dir])
    assert not rejects
    result = build_closed_book(
        ROOT / "samples/closed_book/quickstart_papers.yaml", papers, tmp_path, []
    )
    assert result["rejected"] == 0 and result["groups"] == {"paper_only": result["prompts"]}
    suite = yaml.safe_load((tmp_path / "closed_book.yaml").read_text())["prompts"]
    corpus = yaml.safe_load((ROOT / "recipes/_base/data/quickstart-corpus.yaml").read_text())
    command = corpus["recipe"]["builds"][0]["command"]
    fraction = float(command[command.index("--val-fraction") + 1])
    for name in {p["document"] for p in suite}:
        doc_id = re.search(r"^arXiv: (\S+)", (papers_dir / name).read_text(), re.M).group(1)
        assert not is_validation(doc_id, fraction), f"{name} is the corpus's validation document"
    chat = ROOT / "recipes/_base/data/quickstart-chat.yaml"
    sources = [
        ROOT / s for s in re.findall(r"samples/(?:qa|general)/[\w.]+\.jsonl", chat.read_text())
    ]
    assert len(sources) == 2
    trained = " ".join(s.read_text().lower() for s in sources)
    for p in suite:  # as a whole number or word: "400" is not in "3400" or "6,400"
        for e in p["expect"]:
            assert not re.search(rf"(?<![\w.,]){re.escape(e.lower())}(?!\w|[.,]\d)", trained), p[
                "id"
            ]
