"""Sweeps: the grid, one run per combination, reruns that skip or resume, failures that
do not stop the sweep, and the table, CSV and plot. The trainer and the evaluation are
faked (the eval loss and the scores follow the learning rate, so every order is known);
the last test trains the tiny model for real."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cosmosage.tools.cli.main import main
from cosmosage.tools.run import evaluation, process, registry, sweep
from cosmosage.tools.run.sweep import SweepError, expand, parse_grid, run_sweep
from cosmosage.tools.run.sweep_report import report

ROOT = Path(__file__).resolve().parents[3]
SETS = ["max_steps=2"]  # fixed overrides of the fast sweeps, besides the grid

TOY = """\
recipe:
  description: Toy full fine-tune of the tiny model for sweep tests
  extends: [methods/full, hardware/cpu]
  eval: {suites: []}    # the evaluation is faked: scores follow the learning rate
  card: {base_model: none}  # the tiny model is built from scratch
base_model: BASE
special_tokens: {pad_token: "<pad>"}
datasets: [{path: data/train.jsonl, ds_type: json, type: completion}]
test_datasets: [{path: data/val.jsonl, ds_type: json, type: completion, split: train}]
sequence_len: 128
micro_batch_size: 2
max_steps: 4
learning_rate: 1.0e-3
warmup_ratio: null
warmup_steps: 5
eval_steps: 1
save_steps: 1
metric_for_best_model: eval_loss
"""


@pytest.fixture
def root(tmp_path, tiny_model) -> Path:
    """A project root with the real fragments and two recipes of its own: `toy/pretrain`
    (one stage) and `toy` (a pipeline of toy/pretrain and toy/again, which starts from it)."""
    root = tmp_path / "project"
    (root / "recipes" / "toy").mkdir(parents=True)
    (root / "recipes" / "_base").symlink_to(ROOT / "recipes" / "_base")
    (root / "recipes" / "toy" / "pretrain.yaml").write_text(TOY.replace("BASE", str(tiny_model)))
    (root / "recipes" / "toy" / "again.yaml").write_text(
        TOY.replace("BASE", str(tiny_model)).replace("recipe:", "recipe:\n  parent: toy/pretrain")
    )
    (root / "recipes" / "toy.yaml").write_text(
        "recipe:\n  description: two toy stages\n  stages: [toy/pretrain, toy/again]\n"
        "  card: {base_model: none}\n"
    )
    (root / "data").mkdir()
    for name in ("train", "val"):
        (root / "data" / f"{name}.jsonl").write_text('{"text": "The CMB is 2.7 K."}\n' * 8)
    return root


def eval_loss(lr: float, warmup: int) -> float:
    return round(6.0 - 50 * lr + 0.01 * warmup, 4)


def held_out(lr: float) -> float:
    return round(0.9 - 40 * lr, 4)


class FakeTrainer:
    """Stands in for `axolotl train`: one checkpoint whose eval loss follows the learning
    rate; can fail (exit 1) or be interrupted (Ctrl-C) at chosen calls."""

    def __init__(self, fail_lrs: tuple[float, ...] = (), interrupt_at: int | None = None):
        self.configs: list[dict] = []
        self.fail_lrs = set(fail_lrs)
        self.interrupt_at = interrupt_at
        self.real = process.run_command
        self.model = None

    def __call__(self, argv, log_path, env=None, cwd=None, total_steps=None, desc="train"):
        if argv[1:3] == ["-m", "cosmosage.tools.cli.main"]:  # a data build: run it for real
            return self.real(argv, log_path, env=env, cwd=cwd, desc=desc)
        cfg = yaml.safe_load(Path(argv[2]).read_text())
        self.configs.append(cfg)
        if len(self.configs) == self.interrupt_at:
            raise KeyboardInterrupt
        log_path.write_text("fake\n")
        if cfg["learning_rate"] in self.fail_lrs:
            log_path.write_text("RuntimeError: loss is nan\n")
            return 1
        from transformers import AutoModelForCausalLM, AutoTokenizer

        out = Path(cfg["output_dir"])
        if self.model is None:
            self.model = AutoModelForCausalLM.from_pretrained(cfg["base_model"])
        self.model.save_pretrained(out / "checkpoint-1")
        history = [
            {"step": 0, "eval_loss": 7.0},
            {"step": 1, "loss": 6.9},
            {"step": 1, "eval_loss": eval_loss(cfg["learning_rate"], cfg["warmup_steps"])},
        ]
        (out / "checkpoint-1" / "trainer_state.json").write_text(
            json.dumps({"log_history": history})
        )
        AutoTokenizer.from_pretrained(cfg["base_model"]).save_pretrained(out)
        return 0


def fake_evaluate(threshold: float | None = None):
    """Scores of base and the stage; held-out recall falls as the learning rate rises."""

    def recipe_eval(run_dir, record, meta, base, root, echo):
        lr = yaml.safe_load((run_dir / "pretrain" / "axolotl.yaml").read_text())["learning_rate"]
        final = {"all": 0.5, "held_out": held_out(lr), "ppl": 30.0 + 1000 * lr}
        failures = []
        if threshold is not None and final["held_out"] < threshold:
            failures = [f"final.held_out >= {threshold}: got {final['held_out']}"]
        return {
            "scores": {"base": {"all": 0.25, "held_out": 0.1, "ppl": 40.0}, "pretrain": final},
            "forgetting": [
                {"before": "base", "after": "pretrain", "general_drop": 0.05, "ppl_rise": -0.1}
            ],
            "threshold_failures": failures,
        }

    return recipe_eval


@pytest.fixture
def trainer(monkeypatch, tiny_model) -> FakeTrainer:
    fake = FakeTrainer()
    monkeypatch.setattr(process, "run_command", fake)
    monkeypatch.setattr(evaluation, "recipe_eval", fake_evaluate())
    return fake


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- the grid


def test_grid_expands_in_order_to_the_product():
    grid = parse_grid(["learning_rate=1e-4,1e-3", "lora_r=8,64 num_epochs=3,10"])
    assert grid == {
        "learning_rate": ["1e-4", "1e-3"],
        "lora_r": ["8", "64"],
        "num_epochs": ["3", "10"],
    }
    combos = expand(grid)
    assert len(combos) == 8
    assert combos[0] == {"learning_rate": "1e-4", "lora_r": "8", "num_epochs": "3"}
    assert combos[1] == {"learning_rate": "1e-4", "lora_r": "8", "num_epochs": "10"}
    assert combos[-1] == {"learning_rate": "1e-3", "lora_r": "64", "num_epochs": "10"}
    assert len({tuple(c.values()) for c in combos}) == 8
    # commas inside a YAML list belong to the value
    assert parse_grid(["lora_target_modules=[q_proj, v_proj],[o_proj]"]) == {
        "lora_target_modules": ["[q_proj, v_proj]", "[o_proj]"]
    }
    for bad, message in [
        ("learning_rate", "expected KEY=V1,V2"),
        ("learning_rate=", "expected KEY=V1,V2"),
        ("learning_rate=1,,2", "expected KEY=V1,V2"),
        ("lr=1,1", "repeated"),
        ("lr=1 lr=2", "given twice"),
    ]:
        with pytest.raises(SweepError, match=message):
            parse_grid([bad])


def test_a_pipeline_axis_for_one_stage_and_a_bad_name_are_refused(root):
    with pytest.raises(SweepError, match="--name '../x': letters, digits"):
        run_sweep("toy/pretrain", ["learning_rate=1e-3"], name="../x", root=root)
    with pytest.raises(
        SweepError, match="apply to every stage of toy; to sweep one stage, sweep its own"
    ):
        run_sweep("toy", ["again.learning_rate=1e-3,1e-2"], root=root, echo=lambda s: None)


# --------------------------------------------------------------------------- running


def test_each_combination_runs_once_and_a_rerun_skips_them(tmp_path, root, trainer):
    lines: list[str] = []
    grid = ["learning_rate=1e-3,1e-2 warmup_steps=1,2"]
    result = run_sweep("toy/pretrain", grid, SETS, root=root, runs_dir=tmp_path, echo=lines.append)
    folder = result["dir"]
    assert folder.parent == tmp_path.resolve() / "sweeps" / "toy" / "pretrain"
    ran = [(c["learning_rate"], c["warmup_steps"]) for c in trainer.configs]
    assert ran == [(1e-3, 1), (1e-3, 2), (1e-2, 1), (1e-2, 2)]
    # the sweep's overrides reach every run, and the runs share one tokenized dataset
    assert all(c["max_steps"] == 2 for c in trainer.configs)
    assert {c["dataset_prepared_path"] for c in trainer.configs} == {str(folder / "prepared")}

    doc = json.loads((folder / "sweep.json").read_text())
    assert [c["status"] for c in doc["combinations"]] == ["complete"] * 4
    runs = [c["run"] for c in doc["combinations"]]
    assert len(set(runs)) == 4 and all((tmp_path / r / "run.json").is_file() for r in runs)
    reg = registry.records(tmp_path)
    assert sorted(r["run_id"] for r in reg) == sorted(runs)
    assert all(r["sweep"] == f"toy/pretrain/{doc['name']}" for r in reg)

    # sorted by the eval loss (default): lower first; ties never happen here
    order = [(r["learning_rate"], r["warmup_steps"]) for r in result["rows"]]
    assert result["sort"] == "pretrain.eval_loss"
    assert order == [("1e-2", "1"), ("1e-2", "2"), ("1e-3", "1"), ("1e-3", "2")]
    assert [r["pretrain.eval_loss"] for r in result["rows"]] == [5.51, 5.52, 5.96, 5.97]

    rows = read_csv(folder / "results.csv")
    assert [float(r["pretrain.eval_loss"]) for r in rows] == [5.51, 5.52, 5.96, 5.97]
    for column in [
        "combination",
        "learning_rate",
        "warmup_steps",
        "status",
        "pretrain.eval_loss",
        "wall_s",
        "final.all",
        "final.held_out",
        "final.ppl",
        "base.held_out",
        "base.ppl",
        "pretrain.general_drop",
        "pretrain.ppl_rise",
        "error",
        "run",
    ]:
        assert column in rows[0], column
    assert all(float(r["wall_s"]) > 0 and r["status"] == "complete" for r in rows)
    assert rows[0]["final.held_out"] == "0.5" and rows[0]["base.held_out"] == "0.1"

    md = (folder / "results.md").read_text()
    assert "Sorted by `pretrain.eval_loss`, lower is better." in md
    assert "Best: combination 3 (learning_rate=1e-2 warmup_steps=1): 5.5100." in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4 and table[1].startswith("| 3 | 1e-2 | 1 | complete | 5.5100 |")
    assert (folder / "results.png").read_bytes()[:4] == b"\x89PNG"

    # the same command again: nothing trains, every combination is reported as skipped
    lines.clear()
    again = run_sweep("toy/pretrain", grid, SETS, root=root, runs_dir=tmp_path, echo=lines.append)
    assert len(trainer.configs) == 4 and again["ran"] == [] and again["skipped"] == [1, 2, 3, 4]
    skips = [line for line in lines if line.startswith("skip")]
    assert len(skips) == 4 and all("complete in" in line for line in skips)

    # the same sweep sorted by a score: higher first
    by_score = report(folder, "held_out")
    assert by_score["sort"] == "final.held_out"
    assert [r["combination"] for r in by_score["rows"]] == [1, 2, 3, 4]
    assert "Sorted by `final.held_out`, higher is better." in (folder / "results.md").read_text()
    assert [r["combination"] for r in read_csv(folder / "results.csv")] == ["1", "2", "3", "4"]
    by_ppl = report(folder, "final.ppl")
    assert [r["combination"] for r in by_ppl["rows"]] == [1, 2, 3, 4]
    with pytest.raises(SweepError, match="--sort nothing: no such column; one of: combination"):
        report(folder, "nothing")


def test_an_interrupted_sweep_resumes_with_only_the_rest(tmp_path, root, trainer):
    trainer.interrupt_at = 2
    grid = ["learning_rate=1e-3,3e-3,1e-2"]
    with pytest.raises(KeyboardInterrupt):
        run_sweep("toy/pretrain", grid, SETS, root=root, runs_dir=tmp_path, echo=lambda s: None)
    folder = next((tmp_path / "sweeps" / "toy" / "pretrain").iterdir())
    doc = json.loads((folder / "sweep.json").read_text())
    assert [c["status"] for c in doc["combinations"]] == ["complete", "interrupted", "pending"]
    interrupted = doc["combinations"][1]["run"]
    assert json.loads((tmp_path / interrupted / "run.json").read_text())["status"] == "interrupted"

    lines: list[str] = []
    result = run_sweep("toy/pretrain", grid, SETS, root=root, runs_dir=tmp_path, echo=lines.append)
    assert [c["learning_rate"] for c in trainer.configs] == [1e-3, 3e-3, 3e-3, 1e-2]
    assert result["ran"] == [2, 3] and result["skipped"] == [1]
    assert f"resume {tmp_path / interrupted}" in lines
    doc = json.loads((folder / "sweep.json").read_text())
    assert [c["status"] for c in doc["combinations"]] == ["complete"] * 3
    assert doc["combinations"][1]["run"] == interrupted and doc["combinations"][1]["attempts"] == 2
    assert [r["learning_rate"] for r in result["rows"]] == ["1e-2", "3e-3", "1e-3"]


def test_more_values_on_the_same_axes_grow_the_sweep_and_run_only_the_new(tmp_path, root, trainer):
    small = ["learning_rate=1e-3 warmup_steps=1"]
    first = run_sweep("toy/pretrain", small, SETS, name="s", root=root, runs_dir=tmp_path)
    assert first["ran"] == [1] and len(trainer.configs) == 1
    big = ["learning_rate=1e-3,1e-2 warmup_steps=1"]
    grown = run_sweep("toy/pretrain", big, SETS, name="s", root=root, runs_dir=tmp_path)
    assert grown["skipped"] == [1] and grown["ran"] == [2]
    assert [c["learning_rate"] for c in trainer.configs] == [1e-3, 1e-2]
    doc = json.loads((first["dir"] / "sweep.json").read_text())
    assert doc["grid"] == {"learning_rate": ["1e-3", "1e-2"], "warmup_steps": ["1"]}
    assert [c["status"] for c in doc["combinations"]] == ["complete", "complete"]
    assert len(grown["rows"]) == 2
    # another axis, or fewer values, is another sweep
    with pytest.raises(SweepError, match="holds another sweep"):
        run_sweep(
            "toy/pretrain", ["learning_rate=1e-3"], SETS, name="s", root=root, runs_dir=tmp_path
        )
    with pytest.raises(SweepError, match="holds another sweep"):
        run_sweep(
            "toy/pretrain", ["warmup_steps=1,2"], SETS, name="s", root=root, runs_dir=tmp_path
        )


def test_failed_combinations_are_recorded_and_the_sweep_goes_on(
    tmp_path, root, trainer, monkeypatch
):
    monkeypatch.setattr(sweep, "ROOT", root)  # the command line's project root
    trainer.fail_lrs = {3e-3}
    monkeypatch.setattr(evaluation, "recipe_eval", fake_evaluate(threshold=0.6))
    args = ["sweep", "toy/pretrain", "--grid", "learning_rate=1e-3,3e-3,1e-2"]
    args += [f"--set={s}" for s in SETS] + ["--runs-dir", str(tmp_path)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    assert "2 of 3 combinations did not complete: 2 (failed), 3 (failed thresholds)" in res.output
    assert [c["learning_rate"] for c in trainer.configs] == [1e-3, 3e-3, 1e-2]
    folder = next((tmp_path / "sweeps" / "toy" / "pretrain").iterdir())
    rows = {r["learning_rate"]: r for r in read_csv(folder / "results.csv")}
    assert rows["3e-3"]["status"] == "failed" and "exit 1" in rows["3e-3"]["error"]
    assert rows["3e-3"]["pretrain.eval_loss"] == "" and rows["3e-3"]["run"]
    assert rows["1e-2"]["status"] == "failed thresholds"
    assert rows["1e-2"]["error"] == "final.held_out >= 0.6: got 0.5"
    assert float(rows["1e-2"]["pretrain.eval_loss"]) == 5.55  # its results still count
    md = (folder / "results.md").read_text()
    assert (
        "## Combinations that did not complete" in md
        and "- 2 (learning_rate=3e-3): failed: axolotl" in md
    )

    # again: the failure is not retried unless asked
    res = CliRunner().invoke(main, args)
    assert len(trainer.configs) == 3 and "failed earlier" in res.output
    trainer.fail_lrs = set()
    res = CliRunner().invoke(main, [*args, "--retry-failed"])
    assert [c["learning_rate"] for c in trainer.configs] == [1e-3, 3e-3, 1e-2, 3e-3]
    assert "1 of 3 combinations did not complete: 3 (failed thresholds)" in res.output

    # `sweep report` rebuilds the table with another order; `sweep X` means `sweep run X`
    res = CliRunner().invoke(main, ["sweep", "report", str(folder), "--sort", "held_out"])
    assert res.exit_code == 0, res.output
    assert [r["learning_rate"] for r in read_csv(folder / "results.csv")] == [
        "1e-3",
        "3e-3",
        "1e-2",
    ]
    res = CliRunner().invoke(main, ["sweep", "report", str(folder), "--sort", "nothing"])
    assert res.exit_code == 1 and "no such column" in res.output


def test_dry_run_lists_the_combinations_and_writes_nothing(tmp_path, root, monkeypatch):
    monkeypatch.setattr(sweep, "ROOT", root)

    def boom(*a, **k):
        raise AssertionError("a dry run trains nothing")

    monkeypatch.setattr(process, "run_command", boom)
    res = CliRunner().invoke(
        main,
        ["sweep", "toy/pretrain", "--grid", "learning_rate=1e-3,1e-2", "--dry-run"]
        + ["--runs-dir", str(tmp_path)],
    )
    assert res.exit_code == 0, res.output
    assert "run    [1/2] learning_rate=1e-3" in res.output and "[2/2]" in res.output
    assert not (tmp_path / "sweeps").exists()


# --------------------------------------------------------------------------- real training


@pytest.mark.train
def test_sweep_trains_the_tiny_model_over_two_learning_rates(tmp_path, tiny_model):
    sets = ["max_steps=2", "eval_steps=2", "save_steps=2", "metric_for_best_model=eval_loss"]
    result = run_sweep(
        "tiny/qlora",
        ["learning_rate=1e-4,5e-2"],
        sets,
        runs_dir=tmp_path,
        echo=lambda s: None,
    )
    rows = result["rows"]
    assert len(rows) == 2 and {r["status"] for r in rows} == {"complete"}
    losses = [r["qlora.eval_loss"] for r in rows]
    assert all(isinstance(x, float) and math.isfinite(x) and 0 < x < 20 for x in losses), rows
    assert losses == sorted(losses)
    csv_rows = read_csv(result["dir"] / "results.csv")
    assert [float(r["qlora.eval_loss"]) for r in csv_rows] == losses
    assert (result["dir"] / "prepared").is_dir()  # the second run reused the tokenized data
    assert (result["dir"] / "results.png").stat().st_size > 10_000


def test_the_report_gives_the_sort_metric_its_interval_where_the_run_kept_counts(tmp_path):
    import json

    from cosmosage.tools.run.sweep import read_counts
    from cosmosage.tools.run.sweep_report import interval_lines

    run = tmp_path / "r" / "1"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "scores.json").write_text(json.dumps({"counts": {"s": {"held_out": [8, 24]}}}))
    assert read_counts(tmp_path, "r/1") == {"s": {"held_out": [8, 24]}}
    assert read_counts(tmp_path, "r/none") == {}
    rows = [
        {"combination": 1, "_counts": {"final.held_out": [8, 24]}},
        {"combination": 2, "_counts": {}},  # an older run without counts: left out
    ]
    lines = interval_lines(rows, "final.held_out")
    assert lines[-1] == "| 1 | 33% [18-53] | 8/24 |" and len(lines) == 4
    assert interval_lines([rows[1]], "final.held_out") == []


def test_a_seed_axis_gives_each_configuration_its_mean_and_spread():
    from cosmosage.tools.run.sweep_report import seed_lines, seed_spread

    doc = {"grid": {"seed": ["1", "2", "3"], "lr": ["a", "b"]}, "stages": ["s"]}
    held = {("a", "1"): 1.0, ("a", "2"): 0.5, ("a", "3"): 0.75, ("b", "1"): 0.25}
    rows = []
    for i, (seed, lr) in enumerate([(s, x) for s in "123" for x in "ab"], start=1):
        done = (lr, seed) in held
        rows.append(
            {
                "combination": i,
                "seed": seed,
                "lr": lr,
                "status": "complete" if done else "failed",
                "final.held_out": held.get((lr, seed)),
                "final.kl": 0.5 if done else None,
                "error": "",
                "run": "",
            }
        )
    cols = ["combination", "seed", "lr", "status", "final.held_out", "final.kl", "error", "run"]
    table = seed_spread(rows, cols, doc, "final.held_out")
    a, b = table
    assert a["lr"] == "a" and a["seeds"] == ["1", "2", "3"]
    assert a["final.held_out"]["mean"] == pytest.approx(0.75)
    assert a["final.held_out"]["sd"] == pytest.approx(0.25)  # sample sd of 1, 0.5, 0.75
    assert (a["final.held_out"]["min"], a["final.held_out"]["max"]) == (0.5, 1.0)
    assert b["seeds"] == ["1"] and b["final.held_out"]["n"] == 1  # failed seeds left out
    lines = seed_lines(rows, cols, doc, "final.held_out")
    assert "| a | 1, 2, 3 | 0.75 ± 0.25 [0.5-1] | 0.5 ± 0 [0.5-0.5] |" in lines
    assert "| b | 1 | 0.25 | 0.5 |" in lines
    # without a seed axis (or with one seed) there is nothing to aggregate
    assert seed_lines(rows, cols, {"grid": {"lr": ["a", "b"]}, "stages": ["s"]}, "lr") == []
