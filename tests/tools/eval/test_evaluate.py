"""Evaluation on a real (tiny) model: batched answers equal one-at-a-time generation,
rates by kind and wording, self-consistency fields, reports, comparisons, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from cosmosage.dataprep.records import DataError
from cosmosage.tools.cli.main import main
from cosmosage.tools.eval.compare import compare, compare_markdown
from cosmosage.tools.eval.evaluate import rates, score_models
from cosmosage.tools.eval.generation import Generator, chat_ids, grid, preset
from cosmosage.tools.eval.report import report_markdown
from cosmosage.tools.eval.suites import load_suite

PROMPTS = [
    {"prompt": "What is the CMB?"},
    {"prompt": "Say hello to the reader of this longer question, please."},
    {"prompt": "Hi", "system": "You are terse."},
]


def test_batched_answers_equal_one_at_a_time_generation(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    expected = []
    for p in PROMPTS:
        ids = torch.tensor([chat_ids(tok, p)])
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
        expected.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    got = Generator(tiny_model).answers(PROMPTS, preset("greedy", max_new_tokens=6), batch_size=3)
    assert [g[0] for g in got] == expected
    assert "You are terse." in tok.decode(chat_ids(tok, PROMPTS[2]))


def test_sampling_gives_n_answers_and_is_seeded(tiny_model):
    gen = Generator(tiny_model)
    a = gen.answers(PROMPTS[:2], preset("creative", max_new_tokens=5), n=3, seed=1)
    b = gen.answers(PROMPTS[:2], preset("creative", max_new_tokens=5), n=3, seed=1)
    assert a == b and [len(x) for x in a] == [3, 3]


def test_presets_and_grids():
    assert preset("greedy")["do_sample"] is False
    assert preset("greedy", temperature=0.5)["do_sample"] is True
    points = grid(preset("sample"), ["temperature=0.2,0.7", "top_p=0.9"])
    assert [p["name"] for p in points] == [
        "sample,temperature=0.2,top_p=0.9",
        "sample,temperature=0.7,top_p=0.9",
    ]
    with pytest.raises(DataError, match="unknown preset"):
        preset("hot")
    with pytest.raises(DataError, match="unknown generation setting"):
        preset("greedy", temprature=1)


@pytest.mark.parametrize(
    "key,value,why",
    [
        ("temperature", "abc", "expected a number"),
        ("max_new_tokens", "abc", "expected an integer"),
        ("max_new_tokens", 2.5, "expected an integer"),
        ("max_new_tokens", 0, "must be at least 1"),
        ("top_k", -1, "must be at least 0"),
        ("do_sample", "yes", "expected true or false"),
    ],
)
def test_a_setting_of_the_wrong_type_names_itself_before_any_model_loads(key, value, why):
    with pytest.raises(DataError, match=f"{key}={value!r}: {why}"):
        preset("greedy", **{key: value})
    with pytest.raises(DataError, match=key):
        grid(preset("greedy"), [f"{key}=x"])
    # numbers written as text (a YAML file, a shell) become numbers
    assert preset("greedy", temperature="0.7", max_new_tokens="32") == {
        "name": "greedy",
        "do_sample": True,
        "temperature": 0.7,
        "max_new_tokens": 32,
    }


def test_rates_by_kind_wording_and_suite():
    rows = [
        {"kind": "domain", "suite": "recall", "wording": "trained", "m_pass": True},
        {"kind": "domain", "suite": "recall", "wording": "held_out", "m_pass": False},
        {"kind": "general", "suite": "general", "m_pass": True},
        {"kind": "general", "suite": "general", "m_pass": None},  # not scored: left out
    ]
    assert rates(rows, "m") == {
        "all": 2 / 3,
        "domain": 0.5,
        "general": 1.0,
        "suite:recall": 0.5,
        "suite:general": 1.0,
        "trained": 1.0,
        "held_out": 0.0,
    }


def test_rates_by_closed_book_group_and_document_and_the_report_tables():
    from cosmosage.tools.eval.report import report_markdown

    rows = [
        {"kind": "domain", "suite": "cb", "group": "qa_fact", "document": "a.md", "m_pass": True},
        {
            "kind": "domain",
            "suite": "cb",
            "group": "paper_only",
            "document": "a.md",
            "m_pass": False,
        },
        {
            "kind": "domain",
            "suite": "cb",
            "group": "paper_only",
            "document": "b.md",
            "m_pass": True,
        },
    ]
    r = rates(rows, "m")
    assert (r["qa_fact"], r["paper_only"]) == (1.0, 0.5)
    assert (r["doc:a.md"], r["doc:b.md"]) == (0.5, 1.0)
    result = {
        "suites": ["cb.yaml"],
        "preset": {"name": "greedy"},
        "models": {"m": "x"},
        "scores": {"m": r},
        "answers": [],
    }
    text = report_markdown(result)
    assert "closed-book, paper-only facts" in text and "| 50% |" in text
    assert "| a.md | 50% |" in text and "| b.md | 100% |" in text


def test_every_rate_has_its_counts_and_the_report_shows_a_wilson_interval():
    from cosmosage.tools.eval.evaluate import counts
    from cosmosage.tools.eval.report import interval, report_markdown

    rows = [{"kind": "domain", "suite": "cb", "m_pass": i < 19} for i in range(24)]
    rows.append({"kind": "domain", "suite": "cb", "m_pass": None})  # not scored
    got = counts(rows, "m")
    assert got["all"] == [19, 24] and got["suite:cb"] == [19, 24]
    assert rates(rows, "m")["all"] == 19 / 24
    lo, hi = interval(19, 24)
    # the Wilson interval of 19/24, by its closed form
    z, n, p = 1.959964, 24, 19 / 24
    mid, half = (p + z * z / (2 * n)), z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5)
    assert abs(lo - (mid - half) / (1 + z * z / n)) < 1e-4
    assert abs(hi - (mid + half) / (1 + z * z / n)) < 1e-4
    # all right or all wrong still leaves an interval of non-zero width
    assert interval(0, 24)[0] == 0.0 and interval(0, 24)[1] > 0.1
    assert interval(24, 24)[1] == 1.0 and interval(24, 24)[0] < 0.9
    result = {
        "suites": ["cb.yaml"],
        "preset": {"name": "greedy"},
        "models": {"m": "x"},
        "scores": {"m": rates(rows, "m")},
        "counts": {"m": got},
        "answers": [],
    }
    text = report_markdown(result)
    assert f"| 79% [{lo * 100:.0f}-{hi * 100:.0f}] |" in text and "Wilson" in text


def test_evaluate_scores_every_model_with_self_consistency(tmp_path, tiny_model):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "prompts:\n"
        "  - {id: a, prompt: 'What is the CMB?', expect: ['zzzz-never']}\n"
        "  - {id: b, prompt: Say hello., expect: ['qqqq-never'], kind: general}\n"
    )
    res = score_models(
        {"m1": tiny_model, "m2": tiny_model}, [suite], preset("greedy", max_new_tokens=4), samples=3
    )
    assert res["scores"]["m1"]["all"] == 0.0 and res["scores"]["m1"]["general"] == 0.0
    row = res["answers"][0]
    assert len(row["m1_samples"]) == 3 and 0.0 <= row["m1_agreement"] <= 1.0
    assert row["m1_flagged"] == (row["m1_agreement"] < 0.5)
    assert res["consistency"]["answers"] == 4 and res["consistency"]["auroc"] is None
    text = report_markdown(res)
    assert "| m1 |" in text and "### a (domain, contains)" in text and "[fail]" in text
    assert res["counts"]["m1"]["all"] == [0, 2] and "| m1 | 0% [0-66] |" in text


def result(label: str, passes: list[bool]) -> dict:
    return {
        "models": {label: "x"},
        "answers": [
            {"id": f"q{i}", "prompt": f"Q{i}", label: f"ans{i}", f"{label}_pass": p}
            for i, p in enumerate(passes)
        ],
    }


def test_compare_sorts_questions_into_gained_lost_and_still_wrong():
    diff = compare(
        result("base", [False, True, False, True]), result("final", [True, False, False, True])
    )
    assert [q["id"] for q in diff["gained"]] == ["q0"]
    assert [q["id"] for q in diff["lost"]] == ["q1"]
    assert [q["id"] for q in diff["still_wrong"]] == ["q2"]
    assert [q["id"] for q in diff["still_right"]] == ["q3"]
    assert "| 1 | 1 | 1 | 1 |" in compare_markdown(diff)


def test_eval_prints_the_perplexity_it_measured(tmp_path, tiny_model):
    """`--perplexity` without `--out`: the figure is in what the command prints (it went
    only to report.md)."""
    text = Path(__file__).resolve().parents[3] / "samples" / "eval" / "general_text.md"
    res = CliRunner().invoke(main, ["eval", str(tiny_model), "--perplexity", str(text)])
    assert res.exit_code == 0, res.output
    head, _, row = res.output.partition("## Perplexity on the held-out general text")
    assert row and float(row.split("|")[-2]) > 1


def test_eval_cli_runs_by_default_and_compares(tmp_path, tiny_model):
    suite = tmp_path / "s.yaml"
    suite.write_text("prompts:\n  - {id: a, prompt: Hello, expect: ['zzzz']}\n")
    out = tmp_path / "ev"
    res = CliRunner().invoke(
        main,
        [
            "eval",
            f"base={tiny_model}",
            str(tiny_model),
            "--suite",
            str(suite),
            "--set",
            "max_new_tokens=3",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores["models"]) == ["base", "tiny-llama"]
    assert (out / "scores.png").stat().st_size > 1000 and (out / "report.md").is_file()
    # the same model under two labels is asked at most once: the second label reads the
    # cache (the first too, when an earlier test run left its answers there)
    assert scores["cached_requests"] >= 1
    assert scores["answers"][0]["base"] == scores["answers"][0]["tiny-llama"]
    cmp = CliRunner().invoke(
        main,
        [
            "eval",
            "compare",
            str(out / "scores.json"),
            str(out / "scores.json"),
            "--label-a",
            "base",
        ],
    )
    assert cmp.exit_code == 0 and "# base -> tiny-llama" in cmp.output
    bad = CliRunner().invoke(main, ["eval", "nowhere-model", "--suite", str(suite)])
    assert bad.exit_code == 1 and "nowhere-model: not a model folder" in bad.output


@pytest.mark.parametrize(
    "args,why",
    [
        ([], "nothing to evaluate: give --suite, --mc or --perplexity"),
        (["--judge-url", "http://127.0.0.1:9/v1"], "needs both --judge-url and --judge-model"),
        (["--samples", "-3"], "-3 is not in the range x>=0"),
    ],
)
def test_an_eval_that_could_not_mean_anything_is_a_usage_error(tmp_path, args, why):
    suite = tmp_path / "s.yaml"
    suite.write_text("prompts: [{id: a, prompt: 'Say hi.', score: contains, expect: [hi]}]\n")
    with_suite = ["--suite", str(suite)] if args else []
    res = CliRunner().invoke(main, ["eval", "no-model-needed", *with_suite, *args])
    assert res.exit_code == 2 and why in res.output, res.output


def test_history_turns_are_asked_before_the_prompt_and_checked(tmp_path, tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    history = [
        {"role": "user", "content": "I am preparing a talk."},
        {"role": "assistant", "content": "How can I help?"},
    ]
    text = tok.decode(chat_ids(tok, {"prompt": "When?", "system": "Be brief.", "history": history}))
    assert text.index("Be brief.") < text.index("preparing a talk") < text.index("How can I help?")
    assert text.index("How can I help?") < text.index("When?")
    for bad, message in (
        ([{"role": "assistant", "content": "x"}], r"history\[0\]\.role: expected user"),
        ([{"role": "user", "content": "x"}], r"history: must end with an assistant turn"),
        (
            [{"role": "user", "content": ""}, {"role": "assistant", "content": "y"}],
            r"history\[0\]\.content",
        ),
    ):
        suite = tmp_path / "h.yaml"
        suite.write_text(yaml.safe_dump({"prompts": [{"prompt": "q", "history": bad}]}))
        with pytest.raises(DataError, match=r"h\.yaml: prompts\[0\]\." + message):
            load_suite(suite)


def test_answers_come_from_the_cache_without_loading_the_model(tmp_path, tiny_model, monkeypatch):
    import shutil

    import cosmosage.tools.eval.evaluate as ev

    model = shutil.copytree(tiny_model, tmp_path / "model")
    suite = tmp_path / "s.yaml"
    suite.write_text("prompts:\n  - {id: a, prompt: 'What is the CMB?', expect: ['zzzz-never']}\n")
    settings = preset("greedy", max_new_tokens=4)
    loads = []
    real = ev.Generator

    def counting(path, device="cpu"):
        loads.append(path)
        return real(path, device=device)

    monkeypatch.setattr(ev, "Generator", counting)
    cache = tmp_path / "cache"
    first = score_models({"m": model}, [suite], settings, samples=2, cache_dir=cache)
    assert len(loads) == 1 and first["cached_requests"] == 0
    again = score_models({"m": model}, [suite], settings, samples=2, cache_dir=cache)
    assert len(loads) == 1, "a repeated request is answered from the cache"
    assert again["cached_requests"] == 2 and again["answers"] == first["answers"]
    score_models({"m": model}, [suite], preset("greedy", max_new_tokens=5), cache_dir=cache)
    assert len(loads) == 2, "other settings are another request"
    os.utime(model / "config.json", ns=(1, 1))
    score_models({"m": model}, [suite], settings, cache_dir=cache)
    assert len(loads) == 3, "a changed model folder is another model"


def test_a_suite_with_a_repeated_id_is_refused_naming_both(tmp_path):
    from cosmosage.dataprep.records import DataError
    from cosmosage.tools.eval.suites import load_suite

    suite = tmp_path / "s.yaml"
    suite.write_text(
        "prompts:\n  - {id: a, prompt: x, expect: [y]}\n  - {id: a, prompt: z, expect: [w]}\n"
    )
    with pytest.raises(DataError, match=r"prompts\[1\]\.id: 'a' is already the id of prompts\[0\]"):
        load_suite(suite)


def test_the_large_general_suite_holds_208_prompts_all_general_and_the_small_one():
    from cosmosage.tools.eval.suites import load_suite

    root = Path(__file__).resolve().parents[3] / "samples" / "eval"
    large = load_suite(root / "general_large.yaml")
    small = {p["prompt"] for p in load_suite(root / "general.yaml")}
    assert len(large) == 208 and {p["kind"] for p in large} == {"general"}
    assert small <= {p["prompt"] for p in large}


def test_an_unwritable_answer_cache_is_a_warning_not_a_lost_evaluation(
    tmp_path, tiny_model, capsys
):
    suite = tmp_path / "s.yaml"
    suite.write_text("prompts:\n  - {id: a, prompt: 'Hi?', expect: ['zz-never']}\n")
    blocked = tmp_path / "a_file"
    blocked.write_text("")  # the cache folder would have to be inside a file
    res = score_models(
        {"m": tiny_model}, [suite], preset("greedy", max_new_tokens=2), cache_dir=blocked / "cache"
    )
    assert res["scores"]["m"]["all"] == 0.0
    assert "warning: the answer cache" in capsys.readouterr().err


def test_a_model_folder_without_a_tokenizer_is_one_clear_error(tmp_path, tiny_model):
    import shutil

    from click.testing import CliRunner

    from cosmosage.tools.cli.main import main

    bare = tmp_path / "bare"
    bare.mkdir()
    for f in tiny_model.iterdir():
        if f.name in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy(f, bare / f.name)
    suite = tmp_path / "s.yaml"
    suite.write_text("prompts:\n  - {id: a, prompt: 'Hi?', expect: ['x']}\n")
    res = CliRunner().invoke(
        main, ["eval", str(bare), "--suite", str(suite), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"{bare}: no tokenizer could be loaded from it" in res.output


def test_eval_shows_its_progress_and_limit_asks_the_first_prompts_of_each_suite(
    tmp_path, tiny_model
):
    import shutil

    model = shutil.copytree(tiny_model, tmp_path / "m")  # not in the answer cache
    suites = []
    for name, n in (("five", 5), ("three", 3)):
        suites.append(tmp_path / f"{name}.yaml")
        prompts = [
            {"id": f"{name}{i}", "prompt": f"Question {i}?", "expect": ["zz"]} for i in range(n)
        ]
        suites[-1].write_text(yaml.safe_dump({"prompts": prompts}))
    out = tmp_path / "ev"
    res = CliRunner().invoke(
        main,
        ["eval", str(model), "--suite", str(suites[0]), "--suite", str(suites[1])]
        + ["--limit", "2", "--set", "max_new_tokens=2", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    # stderr is not a terminal here: a status line at the start and at the end
    err = [line for line in res.stderr.splitlines() if line.startswith("ask m:")]
    assert err[0].startswith("ask m: 0/4 prompts, 0.00 prompt/s, ETA ?")
    assert err[-1].startswith("ask m: 4/4 prompts, ") and "prompt/s, ETA " in err[-1]
    scores = json.loads((out / "scores.json").read_text())
    assert [a["id"] for a in scores["answers"]] == ["five0", "five1", "three0", "three1"]
    assert scores["limit"] == 2
    said = "Limited (--limit 2): only the first 2 prompts of each suite were asked, 4 in all"
    assert said in res.stdout and said in (out / "report.md").read_text()
    full = score_models({"m": model}, suites[:1], preset("greedy", max_new_tokens=2))
    assert len(full["answers"]) == 5 and "limit" not in full
    assert "Limited" not in report_markdown(full)


def test_compare_names_the_option_and_file_of_a_label_it_does_not_have(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "run"
    a.write_text(json.dumps(result("base", [False, True])))
    (b / "eval").mkdir(parents=True)
    (b / "run.json").write_text("{}")
    (b / "eval" / "scores.json").write_text(
        json.dumps(result("lora-facts/20261207-1", [True, True]))
    )
    res = CliRunner().invoke(main, ["eval", "compare", str(a), str(b), "--label-b", "final"])
    assert res.exit_code == 1
    assert res.output.splitlines() == [
        f"Error: --label-b 'final': {b / 'eval' / 'scores.json'} has no model of that label "
        "(its models: lora-facts/20261207-1)"
    ]
    res = CliRunner().invoke(main, ["eval", "compare", str(a), str(b), "--label-a", "x"])
    assert res.output.startswith(f"Error: --label-a 'x': {a} has no model of that label")
    ok = CliRunner().invoke(
        main, ["eval", "compare", str(a), str(b), "--label-b", "lora-facts/20261207-1"]
    )
    assert ok.exit_code == 0 and ok.output.startswith("# base -> lora-facts/20261207-1")
