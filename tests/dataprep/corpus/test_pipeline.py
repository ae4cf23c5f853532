"""The whole corpus pipeline through the CLI: outputs, manifests, rejects, val split,
workers, shards and their merge, and a crash that leaves no half-written output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.corpus.filters import QualityConfig
from cosmosage.dataprep.corpus.pipeline import CorpusConfig, build_files

ROOT = Path(__file__).resolve().parents[3]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def cli(*args: str):
    from cosmosage.tools.cli.main import main

    res = CliRunner().invoke(main, ["data", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip().splitlines()[-1])


def test_corpus_command_on_the_samples(tmp_path, tiny_model, tiny_tokenizer):
    out, val = tmp_path / "corpus.jsonl", tmp_path / "corpus.val.jsonl"
    res = cli(
        "corpus",
        str(ROOT / "samples/papers"),
        str(ROOT / "samples/textbook"),
        "--tokenizer",
        str(tiny_model),
        "--sequence-len",
        "128",
        "--out",
        str(out),
        "--val-out",
        str(val),
        "--val-fraction",
        "0.2",
    )
    train, valid = lines(out), lines(val)
    assert res["records"] == len(train) > 0 and res["val_records"] == len(valid) > 0
    assert not {r["doc_id"] for r in train} & {r["doc_id"] for r in valid}
    for r in train + valid:
        assert (
            len(tiny_tokenizer(r["text"], add_special_tokens=False)["input_ids"])
            == r["tokens"]
            <= 126
        )
    m = json.loads((tmp_path / "corpus.manifest.json").read_text())
    assert (
        m["command"] and m["tokens"] == sum(r["tokens"] for r in train) and m["sequence_len"] == 128
    )
    assert all(i["sha256"] and i["license"] for i in m["inputs"])
    assert {
        i["license"]
        for i in m["inputs"]
        if i["path"].endswith("bao_distance.md") or "papers" in i["path"]
    } == {"CC-BY-4.0"}
    assert m["packing_efficiency"] >= 0.95


def test_corpus_command_with_a_byte_level_tokenizer(tmp_path, tiny_model):
    """A Llama-3-style tokenizer folder: chunks cut by the word-start method, exact."""
    from tokenizers import Tokenizer

    from cosmosage.tools.models.tiny import corpus_texts
    from tests.helpers.tokenizers import train_byte_level_tokenizer

    folder = tmp_path / "llama3-style"
    folder.mkdir()
    train_byte_level_tokenizer(corpus_texts([str(ROOT / "samples")])).save(
        str(folder / "tokenizer.json")
    )
    out = tmp_path / "corpus.jsonl"
    cli(
        "corpus",
        str(ROOT / "samples/papers"),
        "--tokenizer",
        str(folder),
        "--sequence-len",
        "64",
        "--out",
        str(out),
    )
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    recs = lines(out)
    assert recs
    assert [len(tok.encode(r["text"], add_special_tokens=False).ids) for r in recs] == [
        r["tokens"] for r in recs
    ]
    assert sum(r["tokens"] == 62 for r in recs) >= 0.8 * len(recs)
    m = json.loads((tmp_path / "corpus.manifest.json").read_text())
    assert m["chunker"]["method"] == "word-start"


def test_filters_dedup_and_rejects_with_reasons(tmp_path, tiny_model, corpus_dir):
    out = tmp_path / "c.jsonl"
    res = cli(
        "corpus",
        str(corpus_dir),
        "--tokenizer",
        str(tiny_model),
        "--sequence-len",
        "64",
        "--out",
        str(out),
    )
    assert res["documents"] == 10
    m = json.loads((tmp_path / "c.manifest.json").read_text())
    assert m["dropped"] == {
        "exact duplicate": 1,
        "near duplicate": 1,
        "not English": 1,
        "too short": 1,
    }
    rejects = {Path(r["source"]).name: r["reason"] for r in lines(tmp_path / "c.rejects.jsonl")}
    assert rejects["dup_exact.md"].startswith("exact duplicate: of docs/doc03.md")
    assert rejects["dup_near.md"].startswith("near duplicate: of docs/doc05.md")
    assert set(rejects) == {"dup_exact.md", "dup_near.md", "german.md", "short.md"}


def test_decontamination_in_the_pipeline(tmp_path, tiny_model, corpus_dir):
    from cosmosage.dataprep.corpus.dedup import Decontaminator

    prompts = tmp_path / "eval.jsonl"
    leaked = " ".join((corpus_dir / "doc07.md").read_text().split()[20:60])
    prompts.write_text(json.dumps({"prompt": leaked}) + "\n")
    out = tmp_path / "c.jsonl"
    cli(
        "corpus",
        str(corpus_dir),
        "--tokenizer",
        str(tiny_model),
        "--sequence-len",
        "128",
        "--out",
        str(out),
        "--decontaminate",
        str(prompts),
    )
    m = json.loads((tmp_path / "c.manifest.json").read_text())
    assert m["dropped"]["eval overlap"] >= 1
    check = Decontaminator([leaked], n=8)
    assert not any(check.reason(r["text"]) for r in lines(out))
    assert any(r["doc_id"] == "docs/doc07.md" for r in lines(out))  # the rest of the document stays


def test_workers_give_the_same_output(tmp_path, tiny_model, corpus_dir):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    cli(
        "corpus",
        str(corpus_dir),
        "--tokenizer",
        str(tiny_model),
        "--sequence-len",
        "64",
        "--out",
        str(a),
    )
    cli(
        "corpus",
        str(corpus_dir),
        "--tokenizer",
        str(tiny_model),
        "--sequence-len",
        "64",
        "--out",
        str(b),
        "--workers",
        "2",
    )
    assert a.read_text() == b.read_text()


def test_shards_and_merge_match_a_single_run(tmp_path, tiny_model, corpus_dir):
    common = ["--tokenizer", str(tiny_model), "--sequence-len", "64", "--val-fraction", "0.3"]
    cli(
        "corpus",
        str(corpus_dir),
        *common,
        "--out",
        str(tmp_path / "one.jsonl"),
        "--val-out",
        str(tmp_path / "one.val.jsonl"),
    )
    for i in range(3):
        cli(
            "corpus",
            str(corpus_dir),
            *common,
            "--out",
            str(tmp_path / "s.jsonl"),
            "--val-out",
            str(tmp_path / "s.val.jsonl"),
            "--shard",
            f"{i}/3",
        )
    assert (tmp_path / "s.shard-00002-of-00003.jsonl").exists()
    res = cli(
        "merge-shards",
        "--out",
        str(tmp_path / "s.jsonl"),
        "--val-out",
        str(tmp_path / "s.val.jsonl"),
    )
    assert res["shards"] == 3

    def key(path):
        return sorted((r["doc_id"], r["chunk"], r["text"]) for r in lines(path))

    # Across shards the first copy in shard order wins; within a run, the first in input order.
    pairs = [("docs/doc03.md", "docs/dup_exact.md"), ("docs/doc05.md", "docs/dup_near.md")]
    merged_docs = {
        r["doc_id"] for r in lines(tmp_path / "s.jsonl") + lines(tmp_path / "s.val.jsonl")
    }
    single_docs = {
        r["doc_id"] for r in lines(tmp_path / "one.jsonl") + lines(tmp_path / "one.val.jsonl")
    }
    for a, b in pairs:
        assert len({a, b} & merged_docs) == 1
    same = lambda docs: docs - {x for p in pairs for x in p}  # noqa: E731
    assert same(merged_docs) == same(single_docs) and len(merged_docs) == len(single_docs) == 10
    one = json.loads((tmp_path / "one.manifest.json").read_text())
    merged = json.loads((tmp_path / "s.manifest.json").read_text())
    assert merged["dropped"] == one["dropped"]
    assert (
        len(merged["inputs"])
        + len(json.loads((tmp_path / "s.val.manifest.json").read_text())["inputs"])
        == 10
    )
    assert merged["packing_efficiency"] > 0.9
    assert len(lines(tmp_path / "s.rejects.jsonl")) == sum(one["dropped"].values())


def test_merge_reports_missing_shards(tmp_path, tiny_model, corpus_dir):
    from cosmosage.tools.cli.main import main

    cli(
        "corpus",
        str(corpus_dir),
        "--tokenizer",
        str(tiny_model),
        "--sequence-len",
        "64",
        "--out",
        str(tmp_path / "s.jsonl"),
        "--shard",
        "1/3",
    )
    res = CliRunner().invoke(main, ["data", "merge-shards", "--out", str(tmp_path / "s.jsonl")])
    assert res.exit_code != 0 and "shards [0, 2] of 3 are missing" in res.output


def test_merge_names_a_cut_line_in_a_shard_and_writes_nothing(tmp_path, tiny_model, corpus_dir):
    from cosmosage.tools.cli.main import main

    for i in range(2):
        cli("corpus", str(corpus_dir), "--tokenizer", str(tiny_model), "--sequence-len", "64",
            "--out", str(tmp_path / "s.jsonl"), "--shard", f"{i}/2")  # fmt: skip
    part = tmp_path / "s.shard-00001-of-00002.jsonl"
    rows = part.read_text().splitlines()
    part.write_text("\n".join(rows[:-1]) + "\n" + rows[-1][: len(rows[-1]) // 2] + "\n")
    res = CliRunner().invoke(main, ["data", "merge-shards", "--out", str(tmp_path / "s.jsonl")])
    assert res.exit_code != 0, res.output
    assert f"{part}:{len(rows)}: not JSON" in res.output and "rebuild this shard" in res.output
    assert not (tmp_path / "s.jsonl").exists() and not list(tmp_path.glob(".s.jsonl.*"))


def test_a_crash_leaves_no_partial_output_and_a_rerun_completes(
    tmp_path, tiny_tokenizer, corpus_dir, monkeypatch
):
    from cosmosage.dataprep.corpus import chunk

    out = tmp_path / "c.jsonl"
    calls = {"n": 0}
    real = chunk.Chunker._pick  # called once per finished document, by either method

    def flaky(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("killed")
        return real(self, *args)

    monkeypatch.setattr(chunk.Chunker, "_pick", flaky)
    cfg = CorpusConfig(sequence_len=64, batch_docs=2, quality=QualityConfig())
    with pytest.raises(RuntimeError, match="killed"):
        build_files([str(corpus_dir)], out, tiny_tokenizer, cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "docs"
    ]  # nothing half-written, no temp files
    monkeypatch.setattr(chunk.Chunker, "_pick", real)
    res = build_files([str(corpus_dir)], out, tiny_tokenizer, cfg)
    recs = lines(out)
    assert res["records"] == len(recs) and len({(r["doc_id"], r["chunk"]) for r in recs}) == len(
        recs
    )


def test_quickstart_build_command_runs(tmp_path, tiny_model, tiny_tokenizer):
    import yaml

    frag = yaml.safe_load((ROOT / "recipes/_base/data/quickstart-tiny-corpus.yaml").read_text())
    argv = [str(a) for a in frag["recipe"]["builds"][0]["command"]]
    argv = [a.replace("build/data/quickstart-tiny", str(tmp_path)) for a in argv]
    argv = [str(ROOT / a) if a.startswith(("samples/", "build/models")) else a for a in argv]
    assert argv[:2] == ["data", "corpus"]
    res = cli(*argv[1:])
    assert res["records"] > 0 and res["val_records"] > 0
    recs = lines(tmp_path / "corpus.jsonl")
    assert (
        max(len(tiny_tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in recs)
        == 126
    )


def test_manifest_lists_a_bounded_number_of_inputs(
    tmp_path, tiny_tokenizer, corpus_dir, monkeypatch
):
    from cosmosage.dataprep.corpus import pipeline

    monkeypatch.setattr(pipeline, "MAX_LISTED_INPUTS", 3)
    out = tmp_path / "c.jsonl"
    res = build_files([str(corpus_dir)], out, tiny_tokenizer, CorpusConfig(sequence_len=64))
    m = json.loads((tmp_path / "c.manifest.json").read_text())
    assert len(m["inputs"]) == 3 and m["documents"] == res["documents"] == 10
    assert sum(m["licenses"].values()) == 10
    docs = lines(tmp_path / "c.docs.jsonl")
    assert len(docs) == 10 and all(d["sha256"] and d["license"] and d["minhash"] for d in docs)
