"""The CLI through click's runner: tables, YAML, one-line errors, exit codes."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from cosmosage.tools.cli.main import main
from cosmosage.tools.run import process


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_recipe_list_is_a_table_of_every_recipe():
    res = invoke("recipe", "list")
    assert res.exit_code == 0
    header, *rows = res.output.strip().splitlines()
    assert header.split()[:4] == ["NAME", "METHOD", "MODEL", "HARDWARE"]
    quick = next(r for r in rows if r.startswith("quickstart "))
    assert "pipeline" in quick and "quickstart/pretrain -> quickstart/instruct" in quick
    assert any(r.startswith("tiny/relora") and "relora" in r and "cpu" in r for r in rows)


def test_recipe_render_prints_axolotl_yaml_with_overrides():
    res = invoke(
        "recipe",
        "render",
        "tiny/qlora",
        "--set",
        "lora_r=4",
        "--set",
        "learning_rate=2e-4",
        "--unset",
        "eval_steps",
    )
    assert res.exit_code == 0
    cfg = yaml.safe_load(res.output)
    assert cfg["lora_r"] == 4 and cfg["learning_rate"] == 2e-4 and "eval_steps" not in cfg
    assert cfg["load_in_4bit"] is True and "recipe" not in cfg
    assert res.output.startswith("# recipe tiny/qlora = recipes/_base/models/tiny-llama.yaml")


def test_recipe_render_of_a_pipeline_prints_each_stage():
    res = invoke("recipe", "render", "quickstart")
    docs = [d for d in yaml.safe_load_all(res.output) if d]
    assert (
        len(docs) == 2
        and docs[0]["datasets"][0]["type"] == "completion"
        and docs[1]["adapter"] == "lora"
    )


def test_recipe_check_ok_and_failure_exit_codes(tiny_model):
    ok = invoke("recipe", "check", "quickstart")
    assert ok.exit_code == 0 and "ok    quickstart/pretrain" in ok.output
    bad = invoke(
        "recipe",
        "check",
        "quickstart-tiny/pretrain",
        "--set",
        "relora_steps=4",
        "--set",
        "special_tokens.pad_token=</s>",
    )
    assert bad.exit_code == 1
    assert "relora_steps" in bad.output and "jagged_restart_steps" in bad.output
    assert "pad token equals eos" in bad.output
    assert "Error: 1 recipe(s) failed their checks" in bad.output


def test_unknown_recipe_is_one_line_not_a_traceback():
    res = CliRunner().invoke(main, ["recipe", "render", "quikstart"])
    assert res.exit_code == 1
    out = res.output.strip()
    assert len(out.splitlines()) == 1 and "Traceback" not in out
    assert out.startswith("Error: unknown recipe 'quikstart'. Did you mean: quickstart,")


def test_debug_flag_shows_the_exception():
    res = CliRunner().invoke(main, ["--debug", "recipe", "render", "quikstart"])
    assert res.exit_code == 1 and type(res.exception).__name__ == "RecipeError"


def test_recipe_run_dry_run_prints_commands(monkeypatch):
    monkeypatch.setattr(
        process,
        "run_command",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError("no training")),
    )
    res = invoke("recipe", "run", "quickstart", "--dry-run", "--set", "max_steps=2")
    assert res.exit_code == 0
    assert (
        "# stage quickstart/pretrain" in res.output and "# stage quickstart/instruct" in res.output
    )
    assert res.output.count("--launcher python") == 2 and "max_steps: 2" in res.output


def test_build_commands_are_parsed_against_the_cli_before_any_work():
    from cosmosage.tools.cli.common import build_command_problems
    from cosmosage.tools.cli.main import main

    def problems(*command):
        meta = {"builds": [{"output": "o.jsonl", "command": list(command)}]}
        return build_command_problems(meta, main)

    assert problems("data", "chat", "x.jsonl", "--out", "o.jsonl") == [
        "o.jsonl: `cosmosage data chat` is not a command"
    ]
    assert (
        "No such option '--val-fraction'"
        in problems("data", "convert", "x.jsonl", "--out", "o.jsonl", "--val-fraction", "0.1")[0]
    )
    assert "Missing option '--out'" in problems("data", "convert", "x.jsonl")[0]
    # an input an earlier build makes does not exist yet: fine
    assert problems("data", "replay", "--model", "build/not/yet", "--out", "o.jsonl") == []


def test_every_bundled_recipe_builds_with_commands_the_cli_has():
    from cosmosage.tools.cli.common import build_command_problems
    from cosmosage.tools.cli.main import main
    from cosmosage.tools.recipe.render import list_recipes, render

    bad = []
    for name in list_recipes():
        top = render(name)
        for meta in [top.meta] + [render(s).meta for s in top.stages]:
            bad += [f"{name}: {p}" for p in build_command_problems(meta, main)]
    assert bad == []


def test_recipe_run_refuses_a_recipe_whose_build_would_fail(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cosmosage.tools.cli.main import main

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "r.yaml").write_text(
        "base_model: x\nrecipe:\n  builds:\n    - {output: o.jsonl, command: [data, chat, x]}\n"
    )
    monkeypatch.setattr("cosmosage.tools.paths.ROOT", tmp_path)
    res = CliRunner().invoke(main, ["recipe", "run", str(recipes / "r.yaml"), "--dry-run"])
    assert res.exit_code == 1 and "`cosmosage data chat` is not a command" in res.output


def test_a_misspelt_command_is_named_not_taken_for_a_model_or_recipe(tmp_path):
    res = CliRunner().invoke(main, ["sweep", "reprot", str(tmp_path)])
    assert res.exit_code == 2 and "no command 'reprot'; did you mean 'report'?" in res.output
    res = CliRunner().invoke(main, ["eval", "comapre", "a.json", "b.json"])
    assert res.exit_code == 2 and "did you mean 'compare'?" in res.output
    # a folder that happens to look like a command is still a model
    (tmp_path / "compar").mkdir()
    res = CliRunner().invoke(main, ["eval", str(tmp_path / "compar"), "--suite", "x.yaml"])
    assert "did you mean" not in res.output


def test_ranges_are_checked_where_the_option_is_read(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\nSome text.\n")
    base = ["data", "corpus", str(tmp_path), "--tokenizer", "x", "--out", str(tmp_path / "o")]
    for extra, hint in (
        (["--near-threshold", "5"], "--near-threshold"),
        (["--workers", "0"], "--workers"),
    ):
        res = CliRunner().invoke(main, base + extra)
        assert res.exit_code == 2 and hint in res.output and "range" in res.output, res.output


def test_a_summary_with_rejects_says_where_they_are(tmp_path):
    src = tmp_path / "qa.jsonl"
    src.write_text('{"instruction": "Q?", "output": "A."}\nnot json\n')
    res = CliRunner().invoke(
        main, ["data", "convert", str(src), "--out", str(tmp_path / "o.jsonl")]
    )
    assert res.exit_code == 0
    lines = res.output.strip().splitlines()
    assert (
        lines[0]
        == f"1 record rejected: {tmp_path / 'o.rejects.jsonl'} gives the file, line and reason of each"
    )
    assert '"rejected": 1' in lines[-1]  # the JSON summary stays the last line
    # a summary that names its rejects file among several outputs (data facts)
    table = tmp_path / "facts.yaml"
    table.write_text(
        "facts:\n"
        "  - {subject: the Vela Array, relation: first_light, object: '2031'}\n"
        "  - {subject: the Vela Array, relation: first_light, object: '2032'}\n"
    )
    res = CliRunner().invoke(main, ["data", "facts", str(table), "--out", str(tmp_path / "f")])
    assert f"rejected: {tmp_path / 'f' / 'facts.rejects.jsonl'} gives" in res.output, res.output


def test_every_command_says_what_it_does_and_every_option_has_help():
    import click

    missing, cut = [], []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            listing = CliRunner().invoke(main, [*path[1:], "--help"], terminal_width=80).output
            commands = listing.split("Commands:", 1)[1].splitlines()
            cut.extend(
                f"{' '.join(path)}: {line.strip()}" for line in commands if line.endswith("...")
            )
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
            return
        missing.extend(
            f"{' '.join(path)} {p.opts[0]}"
            for p in cmd.params
            if isinstance(p, click.Option) and not p.hidden and not p.help
        )

    walk(main, ["cosmosage"])
    assert not cut, f"summaries cut short in `--help` listings: {cut}"
    assert not missing, f"options without help: {missing}"


def test_runs_of_an_empty_folder_say_so(tmp_path):
    for verb in ("list", "tree"):
        res = CliRunner().invoke(main, ["runs", verb, "--runs-dir", str(tmp_path)])
        assert res.exit_code == 0
        assert f"no finished stage in {tmp_path / 'registry.jsonl'} yet" in res.output


def test_commands_that_write_a_folder_take_out_as_well_as_out_dir():
    data = main.commands["data"]
    for name in ("facts", "closed-book"):
        cmd = data.commands[name]
        for flag in ("--out-dir", "--out"):
            ctx = cmd.make_context(name, [flag, "somewhere"], resilient_parsing=True)
            assert ctx.params["out_dir"] == "somewhere", (name, flag)


def test_an_unset_key_no_stage_has_is_a_typo_not_a_no_op(tmp_path):
    res = CliRunner().invoke(main, ["recipe", "render", "tiny/qlora", "--unset", "eval_stps"])
    assert res.exit_code == 1 and "--unset eval_stps: no such key in tiny/qlora" in res.output
    base = ["recipe", "run", "quickstart-tiny", "--dry-run", "--runs-dir", str(tmp_path)]
    res = CliRunner().invoke(main, [*base, "--unset", "datasets.0.nope"])
    assert res.exit_code == 1
    assert (
        "--unset datasets.0.nope: no such key in quickstart-tiny or any of its stages" in res.output
    )
    # a key one stage has is fine for the whole pipeline; list items by index too
    res = CliRunner().invoke(main, [*base, "--unset", "eval_steps", "--unset", "datasets.0.type"])
    assert res.exit_code == 0, res.output


def test_recipe_check_fails_an_unset_key_none_of_its_recipes_has():
    res = CliRunner().invoke(
        main, ["recipe", "check", "tiny/qlora", "tiny/smoke", "--unset", "eval_stps"]
    )
    assert res.exit_code == 1
    assert "--unset eval_stps: no such key in tiny/qlora or tiny/smoke" in res.output
    assert "ok  " not in res.output  # failed before any recipe was checked


def test_every_data_command_that_holds_suites_out_of_training_takes_against(tmp_path):
    """One name for "keep these out of training": --against, beside each older spelling."""
    suite = tmp_path / "suite.yaml"
    suite.write_text("prompts: []\n")
    data = main.commands["data"]
    for name, old, param in [
        ("corpus", "--decontaminate", "prompt_files"),
        ("cloze", "--exclude-from", "exclude_from"),
        ("questions", None, "against"),
        ("replay", None, "against"),
        ("closed-book", None, "against"),
    ]:
        cmd = data.commands[name]
        for flag in filter(None, ("--against", old)):
            ctx = cmd.make_context(name, [flag, str(suite)], resilient_parsing=True)
            assert ctx.params[param] == (str(suite),), (name, flag)
