"""Converters: real source layouts in, chat records out; bad records rejected with file:line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.chat import messages as chatmod
from cosmosage.dataprep.chat.convert import ConvertOptions, build_convert, convert
from cosmosage.dataprep.io import read_jsonl, read_records
from cosmosage.dataprep.records import Reject
from cosmosage.tools.cli.main import main

# One record of each layout, as the public sets ship them.
SLIMORCA = {
    "conversations": [
        {"from": "system", "value": "You are an AI assistant. Explain your reasoning."},
        {"from": "human", "value": "Is 91 a prime number?", "weight": None},
        {
            "from": "gpt",
            "value": "No. 91 = 7 x 13, so it has divisors other than 1 and itself.",
            "weight": 1.0,
        },
    ]
}
ALPACA = {
    "instruction": "Define the Hubble constant.",
    "input": "Give units.",
    "output": "H0 is the present expansion rate, in km/s/Mpc.",
}
CAMEL = {
    "role_1": "Physicist_RoleType.ASSISTANT",
    "topic;": "Cosmology",
    "sub_topic": "The cosmic microwave background radiation",
    "message_1": "Why is the CMB so close to a blackbody?",
    "message_2": "Because before recombination photons and matter were in tight thermal equilibrium, "
    "and the expansion since then preserves the blackbody shape while lowering its temperature.",
}


def write_lines(path, lines):
    path.write_text(
        "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines),
        encoding="utf-8",
    )
    return path


def run(path, opts=None):
    out = list(convert(read_records(path), str(path), opts or ConvertOptions()))
    return [r for r in out if not isinstance(r, Reject)], [r for r in out if isinstance(r, Reject)]


def test_sharegpt_alpaca_camel_and_messages_detected(tmp_path):
    msgs = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    }
    path = write_lines(tmp_path / "mixed.jsonl", [SLIMORCA, ALPACA, CAMEL, msgs])
    kept, rejects = run(path)
    assert not rejects
    assert [m["role"] for m in kept[0]["messages"]] == ["system", "user", "assistant"]
    assert kept[0]["messages"][2]["content"].startswith("No. 91 = 7 x 13")
    assert kept[1]["messages"][0] == {
        "role": "user",
        "content": "Define the Hubble constant.\n\nGive units.",
    }
    assert kept[2]["messages"][0]["content"] == CAMEL["message_1"]
    assert kept[2]["topic"] == "Cosmology"
    assert kept[3]["messages"] == msgs["messages"]
    assert [r["source"] for r in kept] == [
        "mixed.jsonl:1",
        "mixed.jsonl:2",
        "mixed.jsonl:3",
        "mixed.jsonl:4",
    ]


def test_an_alpaca_instruction_that_is_not_text_is_rejected_not_stringified(tmp_path):
    path = write_lines(
        tmp_path / "a.jsonl", [{**ALPACA, "instruction": 42}, {**ALPACA, "input": [1]}]
    )
    kept, rejects = run(path)
    assert kept == [] and [r.reason for r in rejects] == [
        "instruction: expected text, got int",
        "input: expected text, got list",
    ]


def test_csv_with_column_mapping_and_pattern(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text(
        'question,context,answer\n"What is z?","Cosmology, briefly",Redshift.\nWhat is H0?,,"The Hubble constant, today."\n',
        encoding="utf-8",
    )
    opts = ConvertOptions(
        mapping=chatmod.parse_mapping(["user={question} ({context})", "assistant=answer"])
    )
    kept, rejects = run(path, opts)
    assert not rejects
    assert kept[0]["messages"] == [
        {"role": "user", "content": "What is z? (Cosmology, briefly)"},
        {"role": "assistant", "content": "Redshift."},
    ]
    assert kept[1]["messages"][1]["content"] == "The Hubble constant, today."
    assert kept[1]["source"] == "qa.csv:3"


def test_jsonl_column_mapping_missing_column_is_rejected(tmp_path):
    path = write_lines(tmp_path / "rows.jsonl", [{"q": "A?", "a": "B."}, {"q": "C?"}])
    kept, rejects = run(path, ConvertOptions(mapping={"user": "q", "assistant": "a"}))
    assert len(kept) == 1
    assert rejects[0].line == 2 and "column 'a'" in rejects[0].reason


def test_system_prompt_chosen_by_answer_length():
    rules = [
        chatmod.SystemRule.parse("answer_chars<40=Answer briefly."),
        chatmod.SystemRule.parse("default=Explain in detail."),
    ]
    short = chatmod.to_messages({"instruction": "Q?", "output": "Short."}, system_rules=rules)
    long = chatmod.to_messages(
        {"instruction": "Q?", "output": "A much longer answer that runs past forty characters."},
        system_rules=rules,
    )
    assert short[0] == {"role": "system", "content": "Answer briefly."}
    assert long[0] == {"role": "system", "content": "Explain in detail."}
    # a record's own system turn stays unless asked to replace it
    kept = chatmod.to_messages(SLIMORCA, system_rules=rules)
    assert kept[0]["content"].startswith("You are an AI assistant")
    replaced = chatmod.to_messages(SLIMORCA, system_rules=rules, replace_system=True)
    assert replaced[0]["content"] == "Explain in detail." and len(replaced) == 3


def test_a_malformed_system_rule_or_pattern_is_a_usage_error_not_a_traceback(tmp_path):
    path = write_lines(tmp_path / "rows.jsonl", [{"q": "A?", "a": "B."}])
    out = str(tmp_path / "out.jsonl")
    res = CliRunner().invoke(
        main, ["data", "convert", str(path), "--out", out, "--system-rule", "x"]
    )
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "--system-rule" in res.output and "expected CONDITION=TEXT" in res.output
    for bad in ("user={q", "user=q}", "user={}"):
        args = ["data", "convert", str(path), "--format", "columns", "--out", out]
        res = CliRunner().invoke(main, args + ["--map", bad, "--map", "assistant=a"])
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert f"column mapping {bad!r}: a pattern names columns in braces" in res.output
    assert chatmod.parse_mapping(["user={q}: {a}", "assistant=a"])["user"] == "{q}: {a}"


def test_a_field_rule_on_a_field_no_row_has_is_warned(tmp_path):
    path = write_lines(
        tmp_path / "rows.jsonl", [{"instruction": "A?", "output": "B.", "topic;": "Cosmology"}]
    )
    out = str(tmp_path / "out.jsonl")
    args = ["data", "convert", str(path), "--out", out, "--system-rule"]
    res = CliRunner().invoke(main, [*args, "field:topic=Cosmology=You are a cosmologist."])
    assert res.exit_code == 0, res.output
    assert "warning: --system-rule field:topic=...: no input row has a field 'topic'" in res.output
    res = CliRunner().invoke(main, [*args, "field:topic;=Cosmology=You are a cosmologist."])
    assert res.exit_code == 0 and "warning" not in res.output, res.output
    assert json.loads(Path(out).read_text())["messages"][0]["content"] == "You are a cosmologist."


def test_system_rules_whose_operator_holds_an_equals_sign():
    """>=, <= and == are part of the condition, not where its text starts."""
    rules = [
        chatmod.SystemRule.parse("turns==2=One exchange."),
        chatmod.SystemRule.parse("answer_words>=5=Long answer."),
        chatmod.SystemRule.parse("answer_chars <= 10 = Short = terse."),
    ]
    assert [(r.condition, r.text) for r in rules] == [
        ("turns==2", "One exchange."),
        ("answer_words>=5", "Long answer."),
        ("answer_chars <= 10", "Short = terse."),
    ]
    qa = {"instruction": "Q?", "output": "one two three four five six"}
    assert chatmod.to_messages(qa, system_rules=rules[1:])[0]["content"] == "Long answer."
    short = {"instruction": "Q?", "output": "Yes."}
    assert chatmod.to_messages(short, system_rules=rules[1:])[0]["content"] == "Short = terse."


def test_system_rule_on_a_record_field():
    rule = chatmod.SystemRule.parse("field:topic;=Cosmology=You are a cosmologist.")
    assert chatmod.to_messages(CAMEL, system_rules=[rule])[0]["content"] == "You are a cosmologist."
    with pytest.raises(ValueError, match="unknown condition"):
        chatmod.SystemRule.parse("answer_length<5=x")


def test_bad_records_rejected_with_line_and_reason_rest_kept(tmp_path):
    good = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}
    lines = [
        good,
        {"conversations": [{"from": "narrator", "value": "x"}, {"from": "gpt", "value": "y"}]},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "   "}]},
        {
            "conversations": [
                {"from": "human", "value": "a"},
                {"from": "human", "value": "b"},
                {"from": "gpt", "value": "c"},
            ]
        },
        '{"conversations": [{"from": "human", "value": "unterminated"',
        {"instruction": "Q?", "output": "A."},
        {"conversations": [{"from": "human", "value": "only a question"}]},
        {"title": "neither format"},
    ]
    path = write_lines(tmp_path / "bad.jsonl", lines)
    kept, rejects = run(path)
    assert [r["source"] for r in kept] == ["bad.jsonl:1", "bad.jsonl:6"]
    by_line = {r.line: r.reason for r in rejects}
    assert "unknown role 'narrator'" in by_line[2]
    assert "empty assistant turn" in by_line[3]
    assert "turns must alternate" in by_line[4]
    assert "invalid JSON" in by_line[5]
    assert "last turn is not from the assistant" in by_line[7]
    assert "unrecognised record" in by_line[8]
    assert all(r.source == str(path) for r in rejects)


def test_build_convert_writes_output_rejects_manifest_and_drops_long(tmp_path, tiny_model):
    long_answer = " ".join(["The expansion history constrains dark energy."] * 40)
    path = write_lines(
        tmp_path / "qa.jsonl",
        [ALPACA, {"instruction": "Tell me everything.", "output": long_answer}, "{broken"],
    )
    out = tmp_path / "out" / "chat.jsonl"
    res = build_convert(
        [str(path)], out, ConvertOptions(system_prompt="Be exact."), str(tiny_model), 128
    )
    assert res["records"] == 1 and res["rejected"] == 2 and res["tokens"] > 0
    rec = json.loads(out.read_text().splitlines()[0])
    assert rec["messages"][0] == {"role": "system", "content": "Be exact."}
    rejects = [
        json.loads(x) for x in (tmp_path / "out" / "chat.rejects.jsonl").read_text().splitlines()
    ]
    assert {(r["line"], r["reason"].split(":")[0]) for r in rejects} == {
        (2, "too long"),
        (3, "invalid JSON"),
    }
    assert rejects[0]["source"] == str(path)
    manifest = json.loads((tmp_path / "out" / "chat.manifest.json").read_text())
    assert (
        manifest["kept"] == 1 and manifest["dropped_total"] == 2 and manifest["sequence_len"] == 128
    )


def test_cli_convert_camel_with_rules(tmp_path):
    path = write_lines(
        tmp_path / "physics.jsonl", [CAMEL, {**CAMEL, "message_2": "Thermal equilibrium."}]
    )
    out = tmp_path / "physics.chat.jsonl"
    result = CliRunner().invoke(
        main,
        ["data", "convert", str(path), "--format", "camel", "--out", str(out),
         "--system-rule", "answer_chars<60=Answer briefly.", "--system-rule", "default=Explain step by step."],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [rec for _, rec in read_jsonl(out)]
    assert [r["messages"][0]["content"] for r in records] == [
        "Explain step by step.",
        "Answer briefly.",
    ]
    assert json.loads(result.output.strip().splitlines()[-1])["records"] == 2


def test_cli_convert_rejects_unknown_mapping_role(tmp_path):
    path = write_lines(tmp_path / "rows.jsonl", [{"q": "A?", "a": "B."}])
    result = CliRunner().invoke(
        main,
        [
            "data",
            "convert",
            str(path),
            "--map",
            "bot=a",
            "--map",
            "user=q",
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
    )
    assert result.exit_code != 0
    assert "needs assistant" in result.output
    assert not (tmp_path / "o.jsonl").exists()


def test_shards_split_rows_without_overlap(tmp_path):
    path = write_lines(
        tmp_path / "qa.jsonl", [{"instruction": f"Q{i}?", "output": f"A{i}."} for i in range(12)]
    )
    outs = []
    for i in range(3):
        result = CliRunner().invoke(
            main,
            ["data", "convert", str(path), "--shard", f"{i}/3", "--out", str(tmp_path / "s.jsonl")],
        )
        assert result.exit_code == 0, result.output
        part = tmp_path / f"s.shard-0000{i}-of-00003.jsonl"
        outs.append([rec["source"] for _, rec in read_jsonl(part)])
    # rows go by their content hash (dataprep/shard.py); these are the pinned shards
    assert outs == [
        ["qa.jsonl:10"],
        [
            "qa.jsonl:1",
            "qa.jsonl:2",
            "qa.jsonl:3",
            "qa.jsonl:5",
            "qa.jsonl:6",
            "qa.jsonl:8",
            "qa.jsonl:11",
        ],
        ["qa.jsonl:4", "qa.jsonl:7", "qa.jsonl:9", "qa.jsonl:12"],
    ]
    bad = CliRunner().invoke(
        main, ["data", "convert", str(path), "--shard", "3/3", "--out", str(tmp_path / "x.jsonl")]
    )
    assert bad.exit_code != 0 and "0 <= I < N" in bad.output


def test_merge_shards_joins_converted_shards_into_what_one_job_writes(tmp_path):
    rows = [{"instruction": f"Q{i}?", "output": f"A{i}."} for i in range(12)]
    path = tmp_path / "qa.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines.insert(5, "{not json")  # one unreadable line: rejected by exactly one shard
    path.write_text("\n".join(lines) + "\n")
    whole = CliRunner().invoke(
        main, ["data", "convert", str(path), "--out", str(tmp_path / "w.jsonl")]
    )
    assert whole.exit_code == 0, whole.output
    for i in range(3):
        r = CliRunner().invoke(
            main,
            ["data", "convert", str(path), "--shard", f"{i}/3", "--out", str(tmp_path / "s.jsonl")],
        )
        assert r.exit_code == 0, r.output
    early = CliRunner().invoke(main, ["data", "merge-shards", "--out", str(tmp_path / "x.jsonl")])
    assert (
        early.exit_code != 0
        and "no shard outputs like x.shard-00000-of-0000N.jsonl" in early.output
    )
    merged = CliRunner().invoke(main, ["data", "merge-shards", "--out", str(tmp_path / "s.jsonl")])
    assert merged.exit_code == 0, merged.output

    def records(name):
        return sorted(json.dumps(rec, sort_keys=True) for _, rec in read_jsonl(tmp_path / name))

    assert records("s.jsonl") == records("w.jsonl") and len(records("s.jsonl")) == 12
    assert records("s.rejects.jsonl") == records("w.rejects.jsonl")
    assert len(records("s.rejects.jsonl")) == 1
    got = json.loads((tmp_path / "s.manifest.json").read_text())
    want = json.loads((tmp_path / "w.manifest.json").read_text())
    for key in ("kept", "dropped", "dropped_total", "tokens", "format", "inputs", "kept_per_input"):
        assert got[key] == want[key], key
    assert len(got["shards"]) == 3 and "shard" not in got
    # a missing shard is named, and nothing is written
    (tmp_path / "s.shard-00001-of-00003.jsonl").unlink()
    (tmp_path / "s.jsonl").unlink()
    gap = CliRunner().invoke(main, ["data", "merge-shards", "--out", str(tmp_path / "s.jsonl")])
    assert gap.exit_code != 0 and "shards [1] of 3 are missing" in gap.output
    assert not (tmp_path / "s.jsonl").exists()


def test_empty_system_turn_means_no_system_prompt():
    record = {"conversations": [{"from": "system", "value": ""}, *SLIMORCA["conversations"][1:]]}
    assert [m["role"] for m in chatmod.to_messages(record)] == ["user", "assistant"]
    assert chatmod.to_messages(record, system_prompt="Be exact.")[0] == {
        "role": "system",
        "content": "Be exact.",
    }
    # an empty system turn anywhere else is still an error
    late = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": ""},
            {"role": "assistant", "content": "Hello."},
        ]
    }
    with pytest.raises(ValueError, match="messages\\[1\\]"):
        chatmod.to_messages(late)


def test_content_that_is_not_text_is_named_as_such_not_as_an_empty_turn():
    from cosmosage.dataprep.chat.messages import validate_messages

    for content, shown in [(5, "got int (5)"), (["a"], 'got list (["a"])')]:
        with pytest.raises(
            ValueError, match=re.escape(f"messages[0].content: expected text, {shown}")
        ):
            validate_messages(
                [{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}]
            )
    with pytest.raises(ValueError, match="empty user turn"):
        validate_messages(
            [{"role": "user", "content": "  "}, {"role": "assistant", "content": "ok"}]
        )
