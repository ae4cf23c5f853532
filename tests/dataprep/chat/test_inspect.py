"""Chat-template check: labels from Axolotl's own chat_template strategy, checked per turn."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cosmosage.dataprep.chat import inspect as it
from cosmosage.tools.cli.main import main

CONVERSATION = [
    {"role": "system", "content": "Answer in one sentence."},
    {"role": "user", "content": "What is the CMB?"},
    {"role": "assistant", "content": "Relic light from recombination."},
    {"role": "user", "content": "How hot is it today?"},
    {"role": "assistant", "content": "About 2.7 K."},
]
BASE = it.TemplateSettings(
    cfg={"chat_template": "tokenizer_default", "train_on_inputs": False, "sequence_len": 256}
)

# Ends assistant turns with a newline, never with eos: nothing tells the model to stop.
NO_EOS_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% elif m['role'] == 'assistant' %} {{ m['content'] }}\n{% endif %}{% endfor %}"
)


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return it.load(tiny_model, BASE)


def test_default_settings_train_assistant_and_eos_only(loaded):
    rec = it.inspect_record(loaded, CONVERSATION, "mem", 1)
    assert not rec.problems and rec.eot_trained == rec.eot_total == 2
    trained_roles = {r for r, lab in zip(rec.roles, rec.labels, strict=True) if lab != it.IGNORE}
    assert (
        "assistant" in trained_roles
        and "user" not in trained_roles
        and "system" not in trained_roles
    )
    eos = loaded.tokenizer.eos_token_id
    assert (
        sum(
            1
            for i, lab in zip(rec.input_ids, rec.labels, strict=True)
            if i == eos and lab != it.IGNORE
        )
        == 2
    )
    shown = it.render_tokens(rec)
    # the answer's first token carries the space before it ("▁Rel"), as in Llama's tokenizer
    assert "« Relic light from recombination.</s>»" in shown and "« About 2.7 K.</s>»" in shown


def test_masked_end_of_turn_fails(tiny_model):
    broken = it.load(tiny_model, it.with_options(BASE, train_on_eos="none"))
    summary = it.Summary([it.inspect_record(broken, CONVERSATION, "mem", 1)], [], broken.eot_names)
    assert not summary.ok
    (failure,) = summary.failures()
    assert (
        "end-of-turn token ['</s>'] is never trained" in failure
        and "never learn to stop" in failure
    )


def test_assistant_untrained_and_user_trained_fail(tiny_model):
    broken = it.load(tiny_model, it.with_options(BASE, roles_to_train=["user"]))
    rec = it.inspect_record(broken, CONVERSATION, "mem", 7)
    joined = "\n".join(rec.problems)
    assert "messages[2] (assistant): none of its" in joined
    assert "messages[1] (user):" in joined and "train_on_inputs is false" in joined


def test_template_without_end_of_turn_token_fails(tiny_model):
    settings = it.with_options(BASE, chat_template="jinja", chat_template_jinja=NO_EOS_TEMPLATE)
    broken = it.load(tiny_model, settings)
    rec = it.inspect_record(broken, CONVERSATION[1:], "mem", 1)
    summary = it.Summary([rec], [], broken.eot_names)
    assert any("never trained" in f for f in summary.failures())
    assert any("puts no end-of-turn token" in w for w in summary.warnings())


def test_train_on_eos_last_passes(tiny_model):
    ok = it.load(tiny_model, it.with_options(BASE, train_on_eos="last"))
    rec = it.inspect_record(ok, CONVERSATION, "mem", 1)
    assert not rec.problems and rec.eot_trained == 1


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_cli_inspect_passes_and_fails(tmp_path, tiny_model):
    data = write(
        tmp_path / "chat.jsonl",
        [
            {"messages": CONVERSATION},
            {
                "conversations": [
                    {"from": "human", "value": "Hi"},
                    {"from": "gpt", "value": "Hello."},
                ]
            },
            {"messages": []},
        ],
    )
    runner = CliRunner()
    good = runner.invoke(
        main, ["data", "inspect", str(data), "--model", str(tiny_model), "--no-color"]
    )
    assert good.exit_code == 0, good.output
    assert "« About 2.7 K.</s>»" in good.output
    assert f"skip  {data}:3: messages: empty" in good.output
    assert "trained after 3 of 3 assistant turns" in good.output
    bad = runner.invoke(
        main, ["data", "inspect", str(data), "--model", str(tiny_model), "--train-on-eos", "none"]
    )
    assert bad.exit_code == 1
    assert "FAIL  end-of-turn token ['</s>'] is never trained" in bad.output
    assert "chat template check failed" in bad.output
    colored = runner.invoke(
        main, ["data", "inspect", str(data), "--model", str(tiny_model), "--color", "--show", "1"]
    )
    assert "\x1b[" in colored.output
    # a mistyped folder, and a folder without a tokenizer: one line, no traceback
    gone = tmp_path / "models" / "tiny-lama"
    (tmp_path / "empty").mkdir()
    for model, message in (
        (gone, "no such folder"),
        (tmp_path / "empty", "no tokenizer could be loaded"),
    ):
        res = runner.invoke(main, ["data", "inspect", str(data), "--model", str(model)])
        assert res.exit_code == 1 and f"--model {model}: {message}" in res.output, res.output


def test_cli_inspect_takes_settings_from_recipe(tmp_path, tiny_model, monkeypatch):
    from cosmosage.tools.recipe.render import ROOT

    monkeypatch.chdir(ROOT)
    data = write(tmp_path / "chat.jsonl", [{"messages": CONVERSATION}])
    result = CliRunner().invoke(
        main, ["data", "inspect", str(data), "--recipe", "quickstart-tiny/instruct", "--show", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "ok    assistant turns and end-of-turn tokens train; inputs are masked" in result.output


def test_cli_inspect_with_nothing_to_check_fails(tmp_path, tiny_model):
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(b"\x00\x01\x02 not json\n{broken\n")
    res = CliRunner().invoke(main, ["data", "inspect", str(junk), "--model", str(tiny_model)])
    assert res.exit_code == 1 and "ok " not in res.output
    assert f"no conversation to check in {junk}; 2 line(s) could not be read" in res.output
