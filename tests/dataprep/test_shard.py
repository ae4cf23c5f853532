"""One shard rule for every data command: pinned values, one parser, one error text."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.records import DataError
from cosmosage.dataprep.shard import Shard, in_shard, record_key, shard_of, shard_output
from cosmosage.tools.cli.main import main


def test_shard_numbers_are_pinned():
    # crc32, not Python's salted hash(): these hold on every machine, process and run
    assert [shard_of("2101.00001", n) for n in (2, 8, 64)] == [1, 1, 1]
    assert [shard_of("papers/a.md", n) for n in (2, 8, 64)] == [0, 4, 4]
    assert [shard_of("astro-ph/0101001", n) for n in (2, 8, 64)] == [1, 1, 49]
    assert record_key({"b": 1, "a": "x"}) == record_key({"a": "x", "b": 1})
    assert shard_of(record_key({"q": "What is z?"}), 16) == 10


def test_every_key_lands_in_exactly_one_shard():
    keys = [f"papers/{i}.md" for i in range(200)]
    counts = [sum(in_shard(k, Shard(i, 5)) for i in range(5)) for k in keys]
    assert counts == [1] * 200
    sizes = [sum(in_shard(k, Shard(i, 5)) for k in keys) for i in range(5)]
    assert min(sizes) > 20  # spread, not all in one


def test_parse_and_output_names():
    assert Shard.parse("3/8") == Shard(3, 8) == (3, 8)
    assert Shard.parse(None) is None and Shard.parse("") is None
    assert str(Shard(3, 8)) == "3/8"
    assert shard_output("a/c.jsonl", Shard(3, 8)).as_posix() == "a/c.shard-00003-of-00008.jsonl"
    for bad in ("8/8", "x/2", "1-2", "-1/4"):
        with pytest.raises(DataError, match=r"--shard .*expected I/N with 0 <= I < N"):
            Shard.parse(bad)


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "convert", "{f}", "--out", "{d}/o.jsonl"],
        [
            "data",
            "corpus",
            "{f}",
            "--tokenizer",
            "x",
            "--sequence-len",
            "64",
            "--out",
            "{d}/o.jsonl",
        ],
        [
            "data",
            "synth",
            "--input",
            "{f}",
            "--out",
            "{d}/o.jsonl",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
        ],
    ],
)
def test_every_command_gives_the_same_shard_error(tmp_path, argv):
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "x"}\n')
    args = [a.format(f=f, d=tmp_path) for a in argv] + ["--shard", "4/4"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1
    assert "Error: --shard '4/4': expected I/N with 0 <= I < N, e.g. 0/8" in res.output
