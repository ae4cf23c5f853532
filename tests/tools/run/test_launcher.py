"""`recipe run` planning and orchestration with the training process patched out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cosmosage.tools.paths import ROOT
from cosmosage.tools.run import launcher, process
from cosmosage.tools.run.launcher import LaunchError, plan, run_recipe
from cosmosage.tools.run.process import build_argv, stale_builds


def test_build_argv_single_process_and_multi_gpu():
    argv = build_argv("runs/x/axolotl.yaml", {"hardware": {"name": "cpu", "gpus": 0}})
    assert argv[1:] == ["train", "runs/x/axolotl.yaml", "--launcher", "python"]
    assert argv[0].endswith("axolotl")
    multi = build_argv(
        "c.yaml", {"hardware": {"name": "8gpu", "gpus": 8, "launcher_args": ["--num_processes", 8]}}
    )
    assert multi[1:] == [
        "train",
        "c.yaml",
        "--launcher",
        "accelerate",
        "--",
        "--num_processes",
        "8",
    ]


def test_plan_expands_a_pipeline_into_its_stages():
    top, stages = plan("quickstart-tiny")
    assert top.is_pipeline
    assert [(s.name, s.key) for s in stages] == [
        ("quickstart-tiny/pretrain", "pretrain"),
        ("quickstart-tiny/instruct", "instruct"),
    ]
    _, single = plan("tiny/qlora")
    assert [s.key for s in single] == ["qlora"]


def test_dry_run_plans_without_building_or_training(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("dry run must not start processes")

    monkeypatch.setattr(process, "run_command", boom)
    res = run_recipe(
        "quickstart-tiny",
        sets=["max_steps=3"],
        dry_run=True,
        runs_dir=tmp_path,
        echo=lambda s: None,
    )
    assert res["dry_run"] and len(res["stages"]) == 2
    pre, inst = res["stages"]
    assert pre["config"]["max_steps"] == 3 and inst["config"]["max_steps"] == 3
    run_dir = Path(res["run_dir"])
    # the instruct stage starts from the pretrain stage's selected model in the same run
    assert inst["config"]["base_model"] == str(run_dir / "pretrain" / "model")
    assert pre["config"]["output_dir"] == str(run_dir / "pretrain" / "output")
    assert pre["argv"][1:3] == ["train", str(run_dir / "pretrain" / "axolotl.yaml")]
    # the plan shows the config a run writes: the stage plugins first, then the recipe's
    from cosmosage.tools.run.stage import STAGE_PLUGINS

    for planned in (pre, inst):
        assert planned["config"]["plugins"][: len(STAGE_PLUGINS)] == list(STAGE_PLUGINS)
    assert "cosmosage.tools.run.master_weights.FP32MasterWeights" in pre["config"]["plugins"]
    assert not run_dir.exists()


@pytest.mark.parametrize("how", ["dry run", "run", "prepare"])
def test_a_config_error_stops_the_run_before_any_build_or_training(tmp_path, monkeypatch, how):
    from cosmosage.tools.run import prepare

    def boom(*a, **k):
        raise AssertionError("nothing may be built or trained")

    monkeypatch.setattr(process, "run_command", boom)
    monkeypatch.setattr(process, "ensure_builds", boom)
    monkeypatch.setattr(prepare, "ensure_builds", boom)

    def failure(sets: list[str]) -> str:
        with pytest.raises(LaunchError) as err:
            if how == "prepare":
                prepare.prepare_recipe("quickstart-tiny", tmp_path / "prepared", sets=sets)
            else:
                run_recipe(
                    "quickstart-tiny",
                    sets=sets,
                    dry_run=how == "dry run",
                    runs_dir=tmp_path,
                    echo=print,
                )
        msg = str(err.value)
        assert msg.startswith("the recipe failed its checks (nothing was built or run)")
        return msg

    wrong_type = failure(["learning_rate=abc"])
    misspelt = failure(["lerning_rate=1e-4"])
    for stage in ("quickstart-tiny/pretrain", "quickstart-tiny/instruct"):
        assert f"{stage}: [error] axolotl" in wrong_type and "learning_rate" in wrong_type
        assert f"{stage}: [error] unknown-key: `lerning_rate`" in misspelt
    assert "did you mean `learning_rate`?" in misspelt
    assert not any(tmp_path.iterdir())  # no run folder either


def test_parent_outside_the_pipeline_needs_a_finished_run(tmp_path):
    with pytest.raises(
        LaunchError,
        match="has no finished run yet: run `make recipe NAME=quickstart-tiny/pretrain`",
    ):
        run_recipe("quickstart-tiny/instruct", runs_dir=tmp_path, echo=lambda s: None)


def test_run_records_each_stage_with_the_argv_it_built(tmp_path, monkeypatch, tiny_model):
    """The trainer is replaced by a fake that writes what Axolotl would; all else is real."""
    calls = []
    real_run_command = process.run_command

    def fake_train(argv, log_path, env=None, cwd=None, total_steps=None, desc="train"):
        if argv[1:3] == ["-m", "cosmosage.tools.cli.main"]:  # a data build: run it for real
            return real_run_command(argv, log_path, env=env, cwd=cwd, desc=desc)
        calls.append(argv)
        cfg = yaml.safe_load(Path(argv[2]).read_text())
        out = Path(cfg["output_dir"])
        from transformers import AutoModelForCausalLM, AutoTokenizer

        for step in (1, 2):
            ck = out / f"checkpoint-{step}"
            AutoModelForCausalLM.from_pretrained(cfg["base_model"]).save_pretrained(ck)
            history = [
                {"step": 0, "eval_loss": 7.0},
                {"step": 1, "loss": 6.9},
                {"step": 1, "eval_loss": 6.5},
            ]
            if step == 2:
                history += [{"step": 2, "loss": 6.8}, {"step": 2, "eval_loss": 6.6}]
            (ck / "trainer_state.json").write_text(json.dumps({"log_history": history}))
        AutoTokenizer.from_pretrained(cfg["base_model"]).save_pretrained(out)
        log_path.write_text("fake\n")
        assert env["HF_HUB_OFFLINE"] == "1" and env["WANDB_MODE"] == "disabled"
        return 0

    monkeypatch.setattr(process, "run_command", fake_train)
    rec = run_recipe(
        "quickstart-tiny/pretrain", sets=["max_steps=2"], runs_dir=tmp_path, echo=lambda s: None
    )
    run_dir = Path(rec["run_dir"])
    assert len(calls) == 1 and calls[0][1:] == [
        "train",
        str(run_dir / "pretrain" / "axolotl.yaml"),
        "--launcher",
        "python",
    ]
    written = yaml.safe_load((run_dir / "pretrain" / "axolotl.yaml").read_text())
    assert "recipe" not in written and written["max_steps"] == 2
    m = json.loads((run_dir / "pretrain" / "metrics.json").read_text())
    # the checkpoint with the lowest eval loss wins, not the last one
    assert (
        m["best_checkpoint"]["step"] == 1
        and m["eval_loss_before"] == 7.0
        and m["eval_loss_best"] == 6.5
    )
    model = run_dir / "pretrain" / "model"
    assert (model / "model.safetensors").is_file() and (model / "tokenizer.json").is_file()
    assert not (model / "optimizer.pt").exists()
    assert rec["status"] == "complete"
    reg = [json.loads(x) for x in (tmp_path / "registry.jsonl").read_text().splitlines()]
    assert reg[-1]["recipe"] == "quickstart-tiny/pretrain" and reg[-1]["model"] == str(model)
    assert reg[-1]["parent_model"] == "build/models/tiny-llama"
    assert set(reg[-1]["data"]) == {
        "build/data/quickstart-tiny/corpus.jsonl",
        "build/data/quickstart-tiny/corpus.val.jsonl",
    }
    assert (run_dir / "publish" / "README.md").is_file() and (run_dir / "summary.md").is_file()


def test_failed_training_reports_the_log_tail_and_marks_the_run(tmp_path, monkeypatch, tiny_model):
    def failing(argv, log_path, **kw):
        log_path.write_text("line 1\nValueError: something Axolotl disliked\n")
        return 1

    monkeypatch.setattr(process, "run_command", failing)
    with pytest.raises(LaunchError, match="(?s)exit 1.*something Axolotl disliked"):
        run_recipe("tiny/qlora", runs_dir=tmp_path, echo=lambda s: None)
    run_json = next(tmp_path.glob("tiny/qlora/*/run.json"))
    assert json.loads(run_json.read_text())["status"] == "failed"


def test_builds_are_stale_when_their_inputs_change(tmp_path):
    (tmp_path / "in.txt").write_text("a")
    build = {"output": "out.jsonl", "command": ["data", "x", "in.txt", "--out", "out.jsonl"]}
    meta = {"builds": [build]}
    assert stale_builds(meta, tmp_path) == [build]  # output missing
    (tmp_path / "out.jsonl").write_text("{}")
    stamp = process.build_stamp("out.jsonl", tmp_path)
    stamp.parent.mkdir(parents=True)
    stamp.write_text(json.dumps(process.build_state(build, tmp_path)))
    assert stale_builds(meta, tmp_path) == []
    (tmp_path / "in.txt").write_text("changed")
    assert stale_builds(meta, tmp_path) == [build]


def test_repo_root_is_where_the_recipes_are():
    assert (ROOT / "recipes" / "quickstart.yaml").is_file()


def test_builds_run_as_logged_subprocesses_from_the_project_root(tmp_path, monkeypatch):
    seen = []
    real_run_command = process.run_command

    def spy(argv, log_path, env=None, cwd=None, total_steps=None, desc="train"):
        seen.append((argv, cwd, log_path))
        return real_run_command(argv, log_path, env=env, cwd=cwd, desc=desc)

    monkeypatch.setattr(process, "run_command", spy)
    (tmp_path / "in").mkdir()
    meta = {
        "builds": [
            {
                "output": "build/x.jsonl",
                "command": [
                    "data",
                    "corpus",
                    "in/nowhere.md",
                    "--tokenizer",
                    "t",
                    "--sequence-len",
                    "64",
                    "--out",
                    "build/x.jsonl",
                ],
            }
        ]
    }
    with pytest.raises(
        LaunchError,
        match=r"build of build/x.jsonl failed \(exit 2\); last lines of .*x.jsonl.log:\n.*in/nowhere.md",
    ):
        process.ensure_builds(meta, tmp_path, echo=lambda s: None)
    argv, cwd, log = seen[0]
    assert argv[1:5] == ["-m", "cosmosage.tools.cli.main", "data", "corpus"] and cwd == tmp_path
    assert log.parent == tmp_path / "build" / "logs" and "in/nowhere.md" in log.read_text()


def test_one_gpu_stages_are_pinned_to_one_device(tmp_path, monkeypatch):
    """A one-GPU stage runs as one process; Axolotl then loads with device_map: auto,
    which would spread a QLoRA model over every GPU of the machine."""
    from cosmosage.tools.recipe.render import render
    from cosmosage.tools.run.process import build_env

    one = render("mistral-7b/instruct-qlora").meta  # hardware/1x24gb
    eight = render("mistral-7b/pretrain-full").meta  # hardware/8gpu-zero3
    cfg = {"base_model": "mistralai/Mistral-7B-v0.1"}
    assert build_argv("c.yaml", one)[-2:] == ["--launcher", "python"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert build_env(cfg, tmp_path, one)["CUDA_VISIBLE_DEVICES"] == "0"
    assert "CUDA_VISIBLE_DEVICES" not in build_env(cfg, tmp_path, eight)
    assert "CUDA_VISIBLE_DEVICES" not in build_env(cfg, tmp_path, {"hardware": {"gpus": 0}})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert build_env(cfg, tmp_path, one)["CUDA_VISIBLE_DEVICES"] == "3"
    assert build_env(cfg, tmp_path, eight)["CUDA_VISIBLE_DEVICES"] == "3,5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU at all stays so
    assert build_env(cfg, tmp_path, one)["CUDA_VISIBLE_DEVICES"] == ""

    # the training process of a stage gets that environment
    seen: dict = {}

    def fake(argv, log_path, env=None, **kw):
        seen.update(env or {})
        return 1

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(process, "run_command", fake)
    _, stages = plan("mistral-7b/instruct-qlora")
    with pytest.raises(LaunchError):
        launcher.train(stages[0], stages[0].rendered.config, tmp_path / "s", tmp_path, print)
    assert seen["CUDA_VISIBLE_DEVICES"] == "0"


def test_a_run_builds_only_what_its_choices_use(tmp_path, monkeypatch):
    """The facts study's formats each mix their own data: a run of one format must not
    build (or ask a model for) the data of the others, but keeps what its data is built
    from and any build that no choice names."""
    built = []

    def records(argv, log_path, **kw):
        built.append(argv[argv.index("--out") + 1])
        (tmp_path / argv[argv.index("--out") + 1]).write_text("{}")
        return 0

    monkeypatch.setattr(process, "run_command", records)

    def build(out, *inputs):
        return {"output": out, "command": ["data", "x", *inputs, "--out", out]}

    meta = {
        "builds": [
            build("model"), build("answers-a"), build("answers-b"),
            build("mix-a", "answers-a"), build("mix-b", "answers-b"), build("shared", "answers-b"),
        ],
        "choices": {"format": {"a": {"datasets": [{"path": "mix-a"}]},
                               "b": {"datasets": [{"path": "mix-b"}]}}},
        "choose": {"format": "a"},
    }  # fmt: skip
    config = {"base_model": "model", "datasets": [{"path": "mix-a"}]}
    said = []
    process.ensure_builds(meta, tmp_path, said.append, config)
    # `shared` is named by no choice: kept, and so is what it reads
    assert built == ["model", "answers-a", "answers-b", "mix-a", "shared"]
    assert [s for s in said if s.startswith("skip")] == [
        "skip   build mix-b: only choices this run did not pick use it"
    ]
    built.clear()
    process.ensure_builds(meta, tmp_path, said.append)  # no config: every build, as before
    assert built == ["mix-b"]  # the others are up to date


def test_recipe_env_reaches_the_training_process(tmp_path):
    meta = {"env": {"TORCH_COMPILE_DISABLE": 1, "OMP_NUM_THREADS": "2"}}
    env = process.build_env({"base_model": "x"}, tmp_path, meta)
    assert env["TORCH_COMPILE_DISABLE"] == "1" and env["OMP_NUM_THREADS"] == "2"
    assert "TORCH_COMPILE_DISABLE" not in process.build_env({"base_model": "x"}, tmp_path, {})


def test_a_build_is_not_stale_because_another_wrote_into_its_output_folder(tmp_path):
    """`data facts ... --out-dir build/data/facts` writes a folder other builds write into
    too: their outputs must not make it stale (it rebuilt, rewrote its suites, and every
    build reading them rebuilt in turn, on every run)."""
    (tmp_path / "table.yaml").write_text("a")
    (tmp_path / "out").mkdir()
    build = {"output": "out/x.jsonl",
             "command": ["data", "facts", "table.yaml", "--out-dir", "out"]}  # fmt: skip
    (tmp_path / "out" / "x.jsonl").write_text("{}")
    stamp = process.build_stamp("out/x.jsonl", tmp_path)
    stamp.parent.mkdir(parents=True)
    stamp.write_text(json.dumps(process.build_state(build, tmp_path)))
    (tmp_path / "out" / "another-build.jsonl").write_text("{}")
    assert stale_builds({"builds": [build]}, tmp_path) == []
    (tmp_path / "table.yaml").write_text("changed")  # its real input still counts
    assert stale_builds({"builds": [build]}, tmp_path) == [build]
