"""Token-weighted mixes: proportions, dedup, validation slices, counts, tiers, seeds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cosmosage.dataprep.chat.mix import build_mix, parse_spec
from cosmosage.dataprep.records import DataError
from cosmosage.tools.cli.main import main

ROOT = Path(__file__).resolve().parents[3]


def qa(i: int, words: int = 8) -> dict:
    return {
        "instruction": f"Question number {i} about the sky?",
        "input": "",
        "output": " ".join([f"answer{i}"] * words),
    }


def chat(i: int, words: int = 8) -> dict:
    return {
        "conversations": [
            {"from": "human", "value": f"General question {i}?"},
            {"from": "gpt", "value": " ".join([f"reply{i}"] * words)},
        ]
    }


def write(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def recounted(path, count) -> dict[str, int]:
    """Each source's tokens in a written mix, counted here from the file alone: `count`
    measures one record's messages; records name their source in `mix_source`."""
    per_source: dict[str, int] = {}
    for rec in lines(path):
        name = rec["mix_source"]
        per_source[name] = per_source.get(name, 0) + count(rec["messages"])
    return per_source


def shares_of(tokens: dict[str, int]) -> dict[str, float]:
    total = sum(tokens.values())
    return {name: n / total for name, n in tokens.items()}


def template_tokens(tokenizer):
    """Tokens of a conversation as training sees it: the chat template, tokenized."""

    def count(messages: list[dict]) -> int:
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
        return len(ids["input_ids"])

    return count


def words(messages: list[dict]) -> int:
    """Words and punctuation marks of the contents (the unit without a tokenizer)."""
    return sum(len(re.findall(r"\w+|[^\w\s]", m["content"])) for m in messages)


def test_quickstart_spec_hits_token_shares_within_one_percent(tmp_path, tiny_model, tiny_tokenizer):
    from cosmosage.dataprep.chat.facts import build_facts
    from cosmosage.dataprep.chat.structured import build_structured

    # the spec's fact and structured sets are build outputs: make them here
    build_facts(ROOT / "samples/facts/cosmology_facts.yaml", tmp_path / "facts")
    build_structured(
        [str(ROOT / "samples/structured/canto_refs.jsonl")],
        tmp_path / "refs.jsonl",
        ROOT / "samples/structured/canto_refs.schema.yaml",
        "List every reference as JSON.",
    )
    data = yaml.safe_load((ROOT / "samples/mix/quickstart.yaml").read_text())
    moved = {
        "build/data/quickstart/facts/chat.jsonl": tmp_path / "facts/chat.jsonl",
        "build/data/quickstart/refs.jsonl": tmp_path / "refs.jsonl",
    }
    for src in data["sources"]:
        src["path"] = str(moved.get(src["path"], ROOT / src["path"]))
    data.update(
        out=str(tmp_path / "chat.jsonl"),
        val_out=str(tmp_path / "chat.val.jsonl"),
        tokenizer=str(tiny_model),
    )
    requested = {src["name"]: src["weight"] for src in data["sources"]}
    spec = parse_spec(data, "quickstart.yaml")
    res = build_mix(spec)["stages"][0]
    for name, share in res["shares"].items():
        assert abs(share["realized"] - share["requested"]) <= 0.01, (name, share)
    # the written file, recounted through the tokenizer's chat template, has the shares
    # the spec asks for (the weights sum to 1), each within one percentage point
    tokens = recounted(tmp_path / "chat.jsonl", template_tokens(tiny_tokenizer))
    realized = shares_of(tokens)
    assert realized.keys() == requested.keys()
    for name, share in requested.items():
        assert abs(realized[name] - share) <= 0.01, (name, realized[name], share)
    manifest = json.loads((tmp_path / "chat.manifest.json").read_text())
    assert manifest["token_unit"] == "tokens (chat template)"
    sources = manifest["sources"]
    # and the manifest's per-source counts are those chat-template tokens, exactly
    assert {name: s["tokens"] for name, s in sources.items()} == tokens
    assert set(sources) == {"cosmology-qa", "facts", "references", "general-chat"}
    # every source keeps a validation slice unless the spec gives it none, and no
    # conversation is in both files
    no_val = {src["name"] for src in data["sources"] if src.get("validation") == 0}
    assert {n for n, s in sources.items() if s["val_records"] == 0} == no_val
    train = {json.dumps(r["messages"]) for r in lines(tmp_path / "chat.jsonl")}
    val = {json.dumps(r["messages"]) for r in lines(tmp_path / "chat.val.jsonl")}
    assert val and not train & val
    assert manifest["tokens"] == sum(s["tokens"] for s in sources.values())


def test_word_counted_shares_dedup_and_determinism(tmp_path):
    a = write(tmp_path / "a.jsonl", [qa(i, 5 + i % 7) for i in range(60)])
    # b repeats three of a's conversations (ShareGPT layout, other spacing): they go
    dup = [
        {
            "conversations": [
                {"from": "human", "value": f"question number {i} about the  sky?"},
                {"from": "gpt", "value": " ".join([f"answer{i}"] * (5 + i % 7))},
            ]
        }
        for i in range(3)
    ]
    b = write(tmp_path / "b.jsonl", dup + [chat(i, 4 + i % 5) for i in range(80)])
    data = {
        "seed": 3,
        "out": str(tmp_path / "mix.jsonl"),
        "val_out": str(tmp_path / "mix.val.jsonl"),
        "validation": 0.1,
        "sources": [
            {"name": "a", "path": a, "weight": 0.2},
            {"name": "b", "path": b, "weight": 0.8},
        ],
    }
    res = build_mix(parse_spec(data))["stages"][0]
    for share in res["shares"].values():
        assert abs(share["realized"] - share["requested"]) <= 0.01
    realized = shares_of(recounted(tmp_path / "mix.jsonl", words))
    assert abs(realized["a"] - 0.2) <= 0.01 and abs(realized["b"] - 0.8) <= 0.01, realized
    manifest = json.loads((tmp_path / "mix.manifest.json").read_text())
    assert manifest["sources"]["b"]["dropped"] == {"duplicate": 3}
    assert manifest["token_unit"].startswith("words")
    rejects = lines(tmp_path / "mix.rejects.jsonl")
    assert {r["line"] for r in rejects} == {1, 2, 3} and all(
        r["reason"].startswith("duplicate: same conversation as a/a.jsonl:") for r in rejects
    )
    first = (tmp_path / "mix.jsonl").read_text()
    build_mix(parse_spec(data))
    assert (tmp_path / "mix.jsonl").read_text() == first
    build_mix(parse_spec({**data, "seed": 4}))
    assert (tmp_path / "mix.jsonl").read_text() != first


def test_count_sources_and_weights_share_of_total(tmp_path):
    a = write(tmp_path / "a.jsonl", [qa(i, 10) for i in range(30)])
    b = write(tmp_path / "b.jsonl", [chat(i, 10) for i in range(200)])
    data = {
        "out": str(tmp_path / "m.jsonl"),
        "sources": [{"name": "a", "path": a, "count": 12}, {"name": "b", "path": b, "weight": 0.5}],
    }
    res = build_mix(parse_spec(data))["stages"][0]
    manifest = json.loads((tmp_path / "m.manifest.json").read_text())
    assert manifest["sources"]["a"]["records"] == 12
    assert abs(res["shares"]["b"]["realized"] - 0.5) <= 0.01
    assert abs(shares_of(recounted(tmp_path / "m.jsonl", words))["b"] - 0.5) <= 0.01


def test_curriculum_stages_by_tier(tmp_path):
    hi = write(tmp_path / "hi.jsonl", [qa(i) for i in range(20)])
    lo = write(tmp_path / "lo.jsonl", [chat(i) for i in range(20)])
    data = {
        "sources": [
            {"name": "hi", "path": hi, "weight": 0.5, "tier": "high"},
            {"name": "lo", "path": lo, "weight": 0.5, "tier": "low"},
        ],
        "stages": [
            {
                "name": "broad",
                "tiers": ["low", "medium", "high"],
                "out": str(tmp_path / "s1.jsonl"),
            },
            {"name": "focus", "tiers": ["high"], "out": str(tmp_path / "s2.jsonl")},
        ],
    }
    res = build_mix(parse_spec(data))["stages"]
    assert [s["stage"] for s in res] == ["broad", "focus"]
    assert {r["source"].split(".")[0] for r in lines(tmp_path / "s1.jsonl")} == {"hi", "lo"}
    assert {r["source"].split(".")[0] for r in lines(tmp_path / "s2.jsonl")} == {"hi"}
    assert res[1]["shares"]["hi"]["realized"] == 1.0


def test_datasets_source_loads_through_datasets_and_is_cached(tmp_path):
    # the Hub path, offline: the `json` builder reads a local file through `datasets`
    rows = write(tmp_path / "rows.jsonl", [chat(i) for i in range(10)])
    data = {
        "out": str(tmp_path / "m.jsonl"),
        "cache_dir": str(tmp_path / "cache"),
        "sources": [
            {
                "name": "hub",
                "dataset": "json",
                "data_files": rows,
                "split": "train",
                "max_records": 6,
                "count": 100,
            }
        ],
    }
    build_mix(parse_spec(data))
    got = lines(tmp_path / "m.jsonl")
    assert len(got) == 6 and got[0]["messages"][0]["role"] == "user"
    manifest = json.loads((tmp_path / "m.manifest.json").read_text())
    assert manifest["sources"]["hub"]["source"] == "hub:json[train]"
    cache = Path(manifest["inputs"][0]["cache"])
    assert cache.is_file() and len(cache.read_text().splitlines()) == 6
    # the second run reads the cached rows: the original is no longer needed
    Path(rows).unlink()
    build_mix(parse_spec(data))
    assert lines(tmp_path / "m.jsonl") == got


def test_a_hub_source_that_cannot_be_read_is_a_one_line_error(tmp_path, monkeypatch):
    import datasets

    data = {
        "out": str(tmp_path / "m.jsonl"),
        "cache_dir": str(tmp_path / "cache"),
        "sources": [{"name": "general", "dataset": "json", "data_files": str(tmp_path / "gone.jsonl"),
                     "split": "train", "weight": 1.0}],
    }  # fmt: skip
    with pytest.raises(
        DataError, match=r"source general: could not read the Hub dataset json \(FileNotFoundError"
    ):
        build_mix(parse_spec(data))

    def offline(*a, **k):
        raise ConnectionError(
            "Couldn't reach 'Open-Orca/SlimOrca-Dedup' on the Hub (OfflineModeIsEnabled)"
        )

    monkeypatch.setattr(datasets, "load_dataset", offline)
    data["sources"][0] = {"name": "general", "dataset": "Open-Orca/SlimOrca-Dedup", "weight": 1.0}
    with pytest.raises(
        DataError, match=r"Open-Orca/SlimOrca-Dedup \(ConnectionError: Couldn't reach"
    ):
        build_mix(parse_spec(data))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sources": [{"path": "x.jsonl"}]}, "exactly one of `weight`"),
        (
            {"sources": [{"path": "x.jsonl", "dataset": "a/b", "weight": 1}]},
            "exactly one of `path`",
        ),
        ({"sources": [{"path": "x.jsonl", "weight": 1, "tier": "urgent"}]}, "tier"),
        ({"sources": [{"path": "x.jsonl", "wieght": 1}]}, "unknown key"),
        (
            {
                "sources": [
                    {"path": "x.jsonl", "weight": 0.7},
                    {"path": "y.jsonl", "count": 3},
                    {"path": "z.jsonl", "weight": 0.5},
                ]
            },
            "must sum below 1",
        ),
        # values of the wrong type are named, never read as something else
        (
            {"sources": [{"path": "x.jsonl", "weight": 1, "repeat": "false"}]},
            r"^spec.yaml: sources\[0\].repeat: expected true or false, got 'false'$",
        ),
        ({"sources": [{"path": 42, "weight": 1}]}, r"sources\[0\].path: expected text"),
        (
            {"sources": [{"path": "x.jsonl", "weight": 1, "max_records": "x"}]},
            r"sources\[0\].max_records: expected a whole number",
        ),
        (
            {"seed": "zero", "sources": [{"path": "x.jsonl", "weight": 1}]},
            r"^spec.yaml: seed: expected a whole number, got 'zero'$",
        ),
        (
            {"validation": [0.1], "sources": [{"path": "x.jsonl", "weight": 1}]},
            r"^spec.yaml: validation: expected a number",
        ),
        (
            {"sequence_len": "long", "sources": [{"path": "x.jsonl", "weight": 1}]},
            "sequence_len: expected a whole number",
        ),
        (
            {"total_tokens": "lots", "sources": [{"path": "x.jsonl", "weight": 1}]},
            "total_tokens: expected a whole number",
        ),
        (
            {"total_tokens": -5, "sources": [{"path": "x.jsonl", "weight": 1}]},
            "total_tokens: must be a positive number of tokens, got -5",
        ),
    ],
)
def test_spec_mistakes_are_named(change, message):
    with pytest.raises(DataError, match=message):
        parse_spec({"out": "o.jsonl", **change}, "spec.yaml")


def test_cli_mix_reports_shares(tmp_path):
    a = write(tmp_path / "a.jsonl", [qa(i, 6 + i % 4) for i in range(40)])
    b = write(tmp_path / "b.jsonl", [chat(i, 6 + i % 3) for i in range(40)])
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {"name": "a", "path": a, "weight": 0.6},
                    {"name": "b", "path": b, "weight": 0.4},
                ]
            }
        )
    )
    result = CliRunner().invoke(
        main, ["data", "mix", str(spec), "--out", str(tmp_path / "o.jsonl")]
    )
    assert result.exit_code == 0, result.output
    res = json.loads(result.output.strip().splitlines()[-1])
    assert abs(res["stages"][0]["shares"]["a"]["realized"] - 0.6) <= 0.01
    assert (tmp_path / "o.manifest.json").exists()


def test_cli_mix_warns_of_a_count_it_could_not_fill_and_an_empty_validation_file(tmp_path):
    a = write(tmp_path / "a.jsonl", [qa(i) for i in range(20)])
    exam = write(tmp_path / "exam.jsonl", [chat(i) for i in range(3)])
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"sources": [
        {"name": "a", "path": a, "weight": 0.5}, {"name": "exam", "path": exam, "count": 200},
    ]}))  # fmt: skip
    args = ["data", "mix", str(spec), "--out", str(tmp_path / "o.jsonl")]
    result = CliRunner().invoke(main, [*args, "--val-out", str(tmp_path / "v.jsonl")])
    assert result.exit_code == 0, result.output
    assert (
        "warning: all: source exam gave 3 of 200 conversations asked by its `count`"
        in result.output
    )
    assert "v.jsonl is empty: the spec holds out nothing" in result.output
    res = json.loads(result.output.strip().splitlines()[-1])
    assert res["stages"][0]["short_counts"] == {"exam": "3 of 200"}


def test_source_with_nothing_usable_stops_with_reasons(tmp_path):
    good = write(tmp_path / "good.jsonl", [qa(i) for i in range(5)])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"conversations": [{"from": "robot", "value": "x"}]}\n{broken\n')
    data = {
        "out": str(tmp_path / "m.jsonl"),
        "sources": [
            {"name": "good", "path": good, "weight": 0.5},
            {"name": "bad", "path": str(bad), "weight": 0.5},
        ],
    }
    with pytest.raises(
        DataError,
        match=r"no usable conversations in source\(s\) bad: conversations\[\]\.from x1, invalid JSON x1",
    ):
        build_mix(parse_spec(data))
    assert len(lines(tmp_path / "m.failed.rejects.jsonl")) == 2
    assert not (tmp_path / "m.jsonl").exists() and not (tmp_path / "m.rejects.jsonl").exists()


def test_cli_mix_broken_spec_names_file_and_line(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("seed: 0\nsources:\n  - {name: a, path: a.jsonl, weight: [0.5\n")
    result = CliRunner().invoke(
        main, ["data", "mix", str(spec), "--out", str(tmp_path / "o.jsonl")]
    )
    assert result.exit_code == 1
    assert f"{spec}:4: invalid YAML" in result.output


def test_completion_and_chat_sources_mix_by_token_share(tmp_path, tiny_model, tiny_tokenizer):
    """Mixed training: completion text beside chat records in one stage, by token share;
    the two files, recounted here (text + eos, chat template), hold the shares asked."""
    texts = [{"text": f"Paper paragraph {i} about the sky. " * (3 + i % 5)} for i in range(80)]
    data = {
        "seed": 1,
        "tokenizer": str(tiny_model),
        "out": str(tmp_path / "chat.jsonl"),
        "text_out": str(tmp_path / "text.jsonl"),
        "sources": [
            {
                "name": "papers",
                "path": write(tmp_path / "p.jsonl", texts),
                "type": "completion",
                "weight": 0.6,
            },
            {
                "name": "qa",
                "path": write(tmp_path / "qa.jsonl", [qa(i) for i in range(60)]),
                "weight": 0.4,
            },
        ],
    }
    res = build_mix(parse_spec(data, "mixed.yaml"))["stages"][0]
    assert res["text_output"] == data["text_out"]
    chat_tokens = recounted(tmp_path / "chat.jsonl", template_tokens(tiny_tokenizer))
    text_tokens = sum(
        len(tiny_tokenizer(r["text"], add_special_tokens=False)["input_ids"]) + 1
        for r in lines(tmp_path / "text.jsonl")
    )
    assert set(chat_tokens) == {"qa"}
    assert all("messages" not in r for r in lines(tmp_path / "text.jsonl"))
    share = text_tokens / (text_tokens + chat_tokens["qa"])
    assert abs(share - 0.6) <= 0.01, share
    assert json.loads((tmp_path / "text.manifest.json").read_text())["tokens"] == text_tokens
    # a completion source without somewhere to write it, or with a validation slice
    with pytest.raises(DataError, match="text_out"):
        parse_spec({**data, "text_out": None}, "mixed.yaml")
    bad = dict(data, sources=[dict(data["sources"][0], validation=0.1), data["sources"][1]])
    with pytest.raises(DataError, match=r"sources\[0\]\.validation"):
        parse_spec(bad, "mixed.yaml")


def test_outputs_over_inputs_or_each_other_are_refused_before_any_work(tmp_path):
    src = write(tmp_path / "qa.jsonl", [qa(i) for i in range(5)])
    base = {
        "out": str(tmp_path / "mix.jsonl"),
        "sources": [{"name": "qa", "path": src, "weight": 1.0}],
    }
    with pytest.raises(DataError, match="would overwrite the input"):
        build_mix(parse_spec({**base, "out": src}, "m.yaml"))
    with pytest.raises(DataError, match="the same file as"):
        build_mix(parse_spec({**base, "val_out": base["out"]}, "m.yaml"))
    assert len(lines(src)) == 5 and not (tmp_path / "mix.jsonl").exists()
