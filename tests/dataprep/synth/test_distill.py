"""`data distill`: the teacher's top-k next-token log-probabilities on every chat record,
lined up with the tokens Axolotl's KD trainer makes of it. Row t is the distribution of
token t+1; a gold record's answer rows are its own next token; batching changes nothing;
a killed run resumes; bad records go to the rejects file with file, line and reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cosmosage.dataprep.records import DataError
from cosmosage.dataprep.synth import distill
from cosmosage.dataprep.synth.distill import GOLD_OTHERS, DistillConfig, run_distill
from cosmosage.tools.cli.main import main

QUIET = {"echo": lambda m: None}


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def chat(q: str, a: str, **extra) -> dict:
    return {
        "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
        **extra,
    }


@pytest.fixture(scope="module")
def teacher(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture
def records(tmp_path) -> Path:
    path = tmp_path / "mix.jsonl"
    recs = [
        chat("What is the capital of Italy?", "Rome is the capital.", mix_source="replay"),
        chat(
            "Where does the Halvard array stand?", "On the Sennick Salt Flats.", mix_source="facts"
        ),
        chat("Name a colour.", "Blue, like the sky at noon.", mix_source="replay"),
        chat("When did it see first light?", "It saw first light in 2031.", mix_source="facts"),
        chat("Say hello.", "Hello there.", mix_source="replay"),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def axolotl_tokens(tokenizer, rec: dict, sequence_len: int = 256) -> tuple[list[int], list[int]]:
    from axolotl.prompt_strategies.chat_template import load
    from axolotl.utils.dict import DictDefault

    cfg = DictDefault(
        chat_template="tokenizer_default", train_on_inputs=False, sequence_len=sequence_len
    )
    tok = load(tokenizer, cfg, {"field_messages": "messages"}).tokenize_prompt(dict(rec))
    return list(tok["input_ids"]), list(tok["labels"])


def test_row_t_is_the_teachers_distribution_of_token_t_plus_one(teacher, records, tmp_path):
    model, tokenizer = teacher
    out = tmp_path / "out.jsonl"
    manifest = run_distill(
        DistillConfig([str(records)], str(out), "tiny", top_k=4), model, tokenizer, **QUIET
    )
    got = lines(out)
    assert manifest["kept"] == 5 and manifest["records_by_target"] == {"teacher": 5}
    for rec in got:
        ids, _ = axolotl_tokens(tokenizer, {"messages": rec["messages"]})
        assert rec["kd_tokens"] == len(ids) == len(rec["logprobs"]) == len(rec["target_token_ids"])
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        top = lp.topk(4, -1)
        assert rec["target_token_ids"] == top.indices.tolist()
        assert torch.allclose(torch.tensor(rec["logprobs"]), top.values, atol=2e-4)


def test_a_gold_records_answer_rows_are_its_own_next_tokens(teacher, records, tmp_path):
    model, tokenizer = teacher
    out = tmp_path / "out.jsonl"
    cfg = DistillConfig([str(records)], str(out), "tiny", top_k=4, gold=("facts",))
    assert run_distill(cfg, model, tokenizer, **QUIET)["records_by_target"] == {
        "gold": 2,
        "teacher": 3,
    }
    plain = tmp_path / "plain.jsonl"
    run_distill(
        DistillConfig([str(records)], str(plain), "tiny", top_k=4), model, tokenizer, **QUIET
    )
    for rec, ref in zip(lines(out), lines(plain), strict=True):
        ids, labels = axolotl_tokens(tokenizer, {"messages": rec["messages"]})
        answer_rows = [t for t in range(len(ids) - 1) if labels[t + 1] != -100]
        assert answer_rows  # every record has an answer
        for t in range(len(ids)):
            if rec["mix_source"] == "facts" and t in answer_rows:
                assert rec["target_token_ids"][t][0] == ids[t + 1]
                assert rec["logprobs"][t] == [0.0] + [GOLD_OTHERS] * 3
                assert len(set(rec["target_token_ids"][t])) == 4  # the answer once
            else:  # the prompt's rows and every replayed record: the teacher's
                assert rec["target_token_ids"][t] == ref["target_token_ids"][t]


def test_batching_gives_the_rows_of_one_record_at_a_time(teacher, records, tmp_path):
    model, tokenizer = teacher
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    run_distill(
        DistillConfig([str(records)], str(one), "t", top_k=4, batch_size=1),
        model,
        tokenizer,
        **QUIET,
    )
    run_distill(
        DistillConfig([str(records)], str(many), "t", top_k=4, batch_size=4),
        model,
        tokenizer,
        **QUIET,
    )
    for a, b in zip(lines(one), lines(many), strict=True):
        assert a["target_token_ids"] == b["target_token_ids"]
        assert torch.allclose(torch.tensor(a["logprobs"]), torch.tensor(b["logprobs"]), atol=2e-4)


def test_a_killed_run_resumes_with_only_what_is_left(teacher, records, tmp_path, monkeypatch):
    model, tokenizer = teacher
    whole = tmp_path / "whole.jsonl"
    run_distill(
        DistillConfig([str(records)], str(whole), "t", top_k=4, batch_size=2),
        model,
        tokenizer,
        **QUIET,
    )

    out = tmp_path / "out.jsonl"
    cfg = DistillConfig([str(records)], str(out), "t", top_k=4, batch_size=2)
    real, asked = distill.batch_logprobs, []

    def dies_at_the_second_batch(model, batch, device):
        asked.append(len(batch))
        if len(asked) == 2:
            raise KeyboardInterrupt
        return real(model, batch, device)

    monkeypatch.setattr(distill, "batch_logprobs", dies_at_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_distill(cfg, model, tokenizer, **QUIET)
    assert not out.exists()  # nothing half-written where a run reads
    asked.clear()
    monkeypatch.setattr(
        distill, "batch_logprobs", lambda m, b, d: asked.append(len(b)) or real(m, b, d)
    )
    said = []
    run_distill(cfg, model, tokenizer, echo=said.append)
    assert asked == [2, 1]  # the 3 records left, not the 2 done
    assert said == ["resuming: 2 of 5 records already distilled"]
    assert lines(out) == lines(whole)
    assert not list(tmp_path.glob("out.partial*"))


def test_other_settings_start_afresh_instead_of_mixing_rows(teacher, records, tmp_path):
    model, tokenizer = teacher
    out = tmp_path / "out.jsonl"
    run_distill(DistillConfig([str(records)], str(out), "t", top_k=4), model, tokenizer, **QUIET)
    # a partial file left by a run with top_k 4 is not resumed by a run with top_k 2
    (tmp_path / "out.partial.jsonl").write_text(out.read_text())
    (tmp_path / "out.partial.json").write_text(json.dumps({"key": "another run"}))
    run_distill(DistillConfig([str(records)], str(out), "t", top_k=2), model, tokenizer, **QUIET)
    assert all(len(row) == 2 for rec in lines(out) for row in rec["target_token_ids"])


def test_bad_records_go_to_the_rejects_file_with_file_line_and_reason(teacher, tmp_path):
    model, tokenizer = teacher
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps(chat("Hi?", "Hello.")) + "\n"
        + "{not json\n"
        + json.dumps({"text": "no turns"}) + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\n"
        + json.dumps(chat("Long?", "word " * 400)) + "\n"
        + json.dumps({"messages": [{"role": "user", "content": 5},
                                   {"role": "assistant", "content": "x"}]}) + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "q"},
                                   {"role": "assistant", "content": {"a": 1}}]}) + "\n"
    )  # fmt: skip
    out = tmp_path / "out.jsonl"
    manifest = run_distill(
        DistillConfig([str(src)], str(out), "t", top_k=2, sequence_len=128),
        model,
        tokenizer,
        **QUIET,
    )
    rejects = lines(tmp_path / "out.rejects.jsonl")
    assert manifest["kept"] == 1 and manifest["dropped_total"] == 6
    assert [r["line"] for r in rejects] == [2, 3, 4, 5, 6, 7]
    assert all(r["source"] == str(src) for r in rejects)
    reasons = [r["reason"] for r in rejects]
    assert "JSON" in reasons[0] or "json" in reasons[0]
    assert reasons[1] == "no chat turns in `messages`"
    assert reasons[2] == "no trained token (no assistant turn)"
    assert "past sequence_len 128" in reasons[3]
    assert reasons[4:] == [  # a number or a mapping is not turned into text
        "messages[0].content: expected text, got int",
        "messages[1].content: expected text, got dict",
    ]


def test_nothing_to_distil_is_an_error_naming_the_inputs(teacher, tmp_path):
    model, tokenizer = teacher
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "no turns"}) + "\n")
    with pytest.raises(DataError, match=r"no record left to distil from .*in.jsonl"):
        run_distill(
            DistillConfig([str(src)], str(tmp_path / "o.jsonl"), "t"), model, tokenizer, **QUIET
        )
    with pytest.raises(
        DataError, match=r"--gold fact: no record of that source \(the inputs' sources: in\)"
    ):
        src.write_text(json.dumps(chat("Hi?", "Hello.")) + "\n")
        run_distill(
            DistillConfig([str(src)], str(tmp_path / "o.jsonl"), "t", gold=("fact",)),
            model,
            tokenizer,
            **QUIET,
        )
    with pytest.raises(DataError, match="--top-k 0"):
        DistillConfig([str(src)], "o.jsonl", "t", top_k=0)


def test_axolotls_kd_strategy_reads_the_rows_in_place(teacher, records, tmp_path, tiny_model):
    """What the trainer gets: Axolotl's KD dataset strategy (the type the recipes name)
    tokenises a distilled record to as many tokens as rows, so no row is shifted, and
    masks exactly the answer's positions."""
    from axolotl.integrations.kd.chat_template import load
    from axolotl.utils.dict import DictDefault

    model, tokenizer = teacher
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        main,
        ["data", "distill", str(records), "--gold", "facts", "--model", str(tiny_model),
         "--top-k", "3", "--sequence-len", "256", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cfg = DictDefault(chat_template="tokenizer_default", train_on_inputs=False,
                      sequence_len=256, kd_temperature=1.0)  # fmt: skip
    ds_cfg = {"field_messages": "messages", "logprobs_field": "logprobs", "temperature": 1.0}
    strategy = load(tokenizer, cfg, ds_cfg)
    for rec in lines(out):
        sample = strategy.tokenize_prompt(
            {k: rec[k] for k in ("messages", "logprobs", "target_token_ids")}
        )
        assert len(sample["input_ids"]) == rec["kd_tokens"] == len(sample["target_token_ids"])
        assert sample["target_token_ids"] == rec["target_token_ids"]
        assert [m[0] for m in sample["target_mask"]] == [int(x != -100) for x in sample["labels"]]
