"""Near-duplicate removal at its defaults on the benchmark's generated corpus: perturbed
copies (about 3% of words edited, a sentence dropped or repeated, lines re-wrapped) are
found, documents that only share boilerplate are kept; the defaults are defined once."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from cosmosage.dataprep.corpus.dedup import (
    LSH_RECALL,
    NEAR_THRESHOLD,
    NUM_PERM,
    SHINGLE,
    Deduplicator,
    MinHasher,
    NearDuplicateIndex,
    exact_key,
    lsh_params,
)
from cosmosage.dataprep.records import DataError

ROOT = Path(__file__).resolve().parents[3]


def _load_bench():
    spec = importlib.util.spec_from_file_location("dedup_bench", ROOT / "bench" / "dedup_bench.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("dedup_bench", mod)  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()


@pytest.fixture(scope="module", params=[0, 1])
def corpus(request):
    return bench.generate(docs=160, seed=request.param)


def _defaults_hits(corpus) -> dict[int, int]:
    return bench.run_ours(corpus, Deduplicator())


def test_defaults_find_perturbed_copies(corpus):
    assert corpus.copies == 40
    sc = bench.score(corpus, _defaults_hits(corpus))
    assert sc.recall >= 0.95 and sc.precision >= 0.99, sc


def test_revision_chains_are_one_cluster():
    """Copies of copies (v2 from v1, v3 from v2): the later ones drift below the threshold
    from the original but each is near its predecessor, and the whole chain is found."""
    chains = bench.generate(docs=160, seed=2, chain=3)
    assert chains.copies == 120
    assert min(bench.copy_jaccards(chains, SHINGLE)) < NEAR_THRESHOLD  # drifted past it
    sc = bench.score(chains, _defaults_hits(chains))
    assert sc.recall >= 0.97 and sc.precision >= 0.99, sc


def test_a_duplicate_names_its_clusters_first_document():
    import random

    rng = random.Random(5)
    words = [f"w{rng.randrange(10**6)}" for _ in range(400)]
    versions = [words]
    for _ in range(4):  # each version edits 3% of the words of the one before
        nxt = list(versions[-1])
        for i in rng.sample(range(len(nxt)), 12):
            nxt[i] = f"x{rng.randrange(10**6)}"
        versions.append(nxt)
    d, reasons = Deduplicator(), []
    for i, v in enumerate(versions):
        text = " ".join(v)
        reasons.append(d.check(f"v{i + 1}", exact_key(text), d.hasher.signature(text)))
    first, last = (d.hasher.signature(" ".join(v)) for v in (versions[0], versions[-1]))
    assert float((first == last).mean()) < NEAR_THRESHOLD, "v5 alone would not match v1"
    assert reasons[0] is None
    assert all(r.startswith("near duplicate: of v1 (") for r in reasons[1:]), reasons
    assert "through v4" in reasons[-1]


def test_documents_that_only_share_boilerplate_are_kept(corpus):
    # The corpus has unrelated documents with identical acknowledgements, licenses and
    # headings, and their overlap is real (short notes are a third boilerplate or more).
    assert bench.boilerplate_jaccard(corpus, SHINGLE) > 0.2
    hits = _defaults_hits(corpus)
    assert not [i for i, is_copy in enumerate(corpus.copy) if not is_copy and i in hits]


def test_short_notes_with_the_same_boilerplate_are_all_kept():
    # About half of each note is the same acknowledgements, license and headings: word
    # 4-gram Jaccard up to about 0.4 between them.
    import random

    rng = random.Random(3)
    vocab = bench.Vocabulary.generate(rng, 2000)
    d = Deduplicator()
    for i in range(6):
        words = rng.sample(vocab.words, 600)
        topic = bench.Topic(words, bench._zipf_cum(len(words)))
        body = " ".join(" ".join(bench._sentence(rng, topic, vocab)) + "." for _ in range(7))
        text = (
            f"# Note {i}\n\n## Introduction\n\n{body}\n\n## Conclusions\n\n"
            f"{bench.ACKNOWLEDGEMENTS[0]}\n\n{bench.LICENSES[0]}\n"
        )
        assert d.check(str(i), exact_key(text), d.hasher.signature(text)) is None


def test_previous_defaults_missed_most_copies(corpus):
    """The defect the defaults were calibrated against: threshold 0.8 on word 5-grams with
    datasketch's bands and rows for it finds few of these copies."""
    params = bench.datasketch_params(0.8, 128)
    hits = bench.run_index(corpus, MinHasher(128, 5), NearDuplicateIndex(0.8, 128, params))
    assert bench.score(corpus, hits).recall < 0.5


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.7, 0.8, 0.9])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_lsh_params_reach_the_threshold_with_the_most_rows(threshold, num_perm):
    b, r = lsh_params(threshold, num_perm)
    assert b * r <= num_perm

    def hit(b: int, r: int) -> float:
        return 1 - (1 - threshold**r) ** b

    assert hit(b, r) >= LSH_RECALL > hit(b - 1, r)  # the fewest bands that reach it
    assert hit(num_perm // (r + 1), r + 1) < LSH_RECALL  # one more row would not


def test_defaults_are_defined_once():
    from cosmosage.dataprep.corpus.merge_shards import merge_shards
    from cosmosage.dataprep.corpus.pipeline import CorpusConfig
    from cosmosage.tools.cli.data_corpus import arxiv_process, data_corpus, merge_shards_cmd

    assert (NEAR_THRESHOLD, SHINGLE, NUM_PERM) == (0.6, 4, 128)
    assert lsh_params() == (22, 4)
    cfg = CorpusConfig(sequence_len=128)
    assert (cfg.near_threshold, cfg.shingle, cfg.num_perm) == (NEAR_THRESHOLD, SHINGLE, NUM_PERM)
    d = Deduplicator()
    assert (d.index.threshold, d.index.params) == (NEAR_THRESHOLD, lsh_params())
    assert (d.hasher.shingle, d.hasher.num_perm) == (SHINGLE, NUM_PERM)
    import inspect

    assert inspect.signature(merge_shards).parameters["near_threshold"].default == NEAR_THRESHOLD
    from cosmosage.dataprep.corpus.executors import corpus_executor

    assert inspect.signature(corpus_executor).parameters["near_threshold"].default == NEAR_THRESHOLD
    for cmd in (data_corpus, arxiv_process, merge_shards_cmd):
        (opt,) = [p for p in cmd.params if p.name == "near_threshold"]
        assert opt.default == NEAR_THRESHOLD


def test_merge_refuses_shards_with_different_minhash_settings(tmp_path):
    from cosmosage.dataprep.corpus.merge_shards import merge_shards

    for i, shingle in enumerate((5, 4)):
        part = tmp_path / f"s.shard-0000{i}-of-00002.jsonl"
        part.write_text("")
        cfg = {"config": {"num_perm": 128, "shingle": shingle}}
        part.with_name(part.name.removesuffix(".jsonl") + ".manifest.json").write_text(
            json.dumps(cfg)
        )
    with pytest.raises(DataError, match="different MinHash settings"):
        merge_shards(tmp_path / "s.jsonl")
