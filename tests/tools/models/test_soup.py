"""Model soups through mergekit: the weighted average, the YAML beside it, the registry
record with both parents, and a recipe stage that runs mergekit instead of Axolotl."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from cosmosage.tools.cli.main import main
from cosmosage.tools.models import soup
from cosmosage.tools.run import registry
from cosmosage.tools.run.launcher import run_recipe

pytest.importorskip("mergekit", reason="the `merge` extra (mergekit) is not installed")


@pytest.fixture(scope="module")
def tuned(tiny_model, tmp_path_factory) -> Path:
    """A second model of the tiny model's architecture: its weights moved by noise."""
    out = tmp_path_factory.mktemp("tuned") / "model"
    shutil.copytree(tiny_model, out)
    gen = torch.Generator().manual_seed(0)
    weights = load_file(str(tiny_model / "model.safetensors"))
    moved = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in weights.items()}
    save_file(moved, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(folder.glob("*.safetensors"))))


def test_linear_soup_is_the_weighted_average_and_hangs_under_both_parents(
    tiny_model, tuned, tmp_path
):
    runs = tmp_path / "runs"
    registry.append(
        runs,
        {
            "run_id": "fam/1",
            "recipe": "fam/tuned",
            "parent_model": str(tiny_model),
            "model": str(tuned),
            "metrics": {"eval_loss_best": 1.5},
        },
    )
    out = tmp_path / "soups" / "mix"
    res = CliRunner().invoke(
        main,
        [
            "model",
            "soup",
            "--model",
            f"{tuned}:0.75",
            "--model",
            f"{tiny_model}:0.25",
            "--method",
            "linear",
            "--out",
            str(out),
            "--runs-dir",
            str(runs),
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"made {out} in ")

    a, b, mixed = weights(tuned), weights(tiny_model), weights(out)
    assert set(mixed) == set(a)
    for name, t in mixed.items():
        torch.testing.assert_close(t, 0.75 * a[name] + 0.25 * b[name], rtol=0, atol=1e-6)
    assert (out / "tokenizer.json").read_bytes() == (tuned / "tokenizer.json").read_bytes()

    cfg = yaml.safe_load((tmp_path / "soups" / "mix.mergekit.yaml").read_text())
    assert cfg == {
        "merge_method": "linear",
        "models": [
            {"model": str(tuned.resolve()), "parameters": {"weight": 0.75}},
            {"model": str(tiny_model.resolve()), "parameters": {"weight": 0.25}},
        ],
    }
    assert (tmp_path / "soups" / "mix.mergekit.log").is_file()

    rec = registry.records(runs)[-1]
    assert rec["recipe"] == "soup" and rec["run_id"].startswith("soup/")
    assert rec["parents"] == [str(tuned.resolve()), str(tiny_model.resolve())]
    assert rec["parent_model"] == str(tuned.resolve())
    assert rec["soup"]["method"] == "linear" and rec["soup"]["weights"] == [0.75, 0.25]

    tree = CliRunner().invoke(main, ["runs", "tree", "--runs-dir", str(runs)]).output.splitlines()
    root = registry.ROOT.resolve()
    shown = tiny_model.resolve()
    shown = shown.relative_to(root) if shown.is_relative_to(root) else shown
    assert tree[0] == str(shown)  # a project folder prints relative to the project
    assert tree[1].startswith("  └─ fam/tuned [fam/1] eval_loss=1.5000")
    assert tree[2].startswith("    └─ soup [soup/") and "soup:linear x0.75" in tree[2]
    assert tree[3].startswith("  └─ soup [soup/") and "soup:linear x0.25" in tree[3]
    assert len(tree) == 4


def test_bad_soups_fail_before_mergekit_runs(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("mergekit must not run")

    monkeypatch.setattr(soup.subprocess, "run", boom)
    a, b = soup.Ingredient("a", 0.5), soup.Ingredient("b", 0.5)
    with pytest.raises(soup.SoupError, match="expected MODEL:WEIGHT"):
        soup.parse_ingredient("runs/x/model")
    assert soup.parse_ingredient("C:/x/model:0.25") == soup.Ingredient("C:/x/model", 0.25)
    with pytest.raises(soup.SoupError, match="give --base BASE"):
        soup.make_soup([a, b], "ties", tmp_path / "o")
    with pytest.raises(soup.SoupError, match="linear soups take no --base"):
        soup.make_soup([a, b], "linear", tmp_path / "o", base="c")
    with pytest.raises(soup.SoupError, match="weights must be >= 0 and not all 0"):
        soup.make_soup([a, soup.Ingredient("b", -1)], "linear", tmp_path / "o")
    with pytest.raises(soup.SoupError, match="unknown soup method 'slerp'"):
        soup.make_soup([a, b], "slerp", tmp_path / "o")
    # a model that is neither a model folder nor a Hub id: named, no mergekit files left
    (tmp_path / "empty").mkdir()
    for model, why in (
        (str(tmp_path / "nowhere"), "no such model folder, and not a Hub id ORG/NAME"),
        (str(tmp_path / "empty"), "not a model folder (no config.json)"),
    ):
        with pytest.raises(soup.SoupError, match=re.escape(f"{model}: {why}")):
            soup.make_soup([soup.Ingredient(model, 0.5), b], "linear", tmp_path / "o")
    assert not list(tmp_path.glob("o.*"))
    # ORG/NAME whose ORG is a folder here is a mistyped folder, not a Hub id
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        soup.SoupError, match=re.escape("empty/nope: no such model folder (empty/ is")
    ):
        soup.make_soup([soup.Ingredient("empty/nope", 0.5), b], "linear", tmp_path / "o")
    res = CliRunner().invoke(
        main, ["model", "soup", "--model", "a:x", "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 1 and "expected MODEL:WEIGHT" in res.output
    assert not (tmp_path / "o").exists()


def test_a_hub_id_neither_cached_nor_reachable_is_refused_before_mergekit(
    tiny_model, tmp_path, monkeypatch
):
    import httpx
    import huggingface_hub
    from huggingface_hub import constants

    def boom(*a, **k):
        raise AssertionError("mergekit must not run")

    monkeypatch.setattr(soup.subprocess, "run", boom)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "soups" / "x6"
    args = ["model", "soup", "--model", "models/smollm2:0.5", "--model", f"{tiny_model}:0.5"]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets
    res = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert res.exit_code == 1
    assert res.output.splitlines() == [
        "Error: --model models/smollm2: not a local folder, and the Hub id is not in the "
        "Hugging Face cache (HF_HUB_OFFLINE is set)"
    ]
    assert not (tmp_path / "soups").exists()  # no mergekit yaml or log left behind

    # online allowed but no network: one line, still nothing written
    def unreachable(*a, **k):
        raise httpx.ConnectError("no route to host")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    with pytest.raises(soup.SoupError, match=re.escape("--base org/base: not a local folder")):
        soup.make_soup([soup.Ingredient(str(tiny_model), 1)], "ties", out, base="org/base")
    with pytest.raises(soup.SoupError, match=re.escape("could not be reached (offline?)")):
        soup.check_model("models/smollm2")
    assert not (tmp_path / "soups").exists()

    # a Hub id whose config.json is in the cache is taken without asking the Hub
    snapshot = tmp_path / "hf" / "models--org--cached" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    soup.check_model("org/cached")


def test_ties_and_dare_configs_carry_the_base_and_densities():
    cfg = soup.mergekit_config(
        [soup.Ingredient("org/tuned", 1.0)], "dare_ties", base="org/base", density=0.3
    )
    assert cfg == {
        "merge_method": "dare_ties",
        "models": [{"model": "org/tuned", "parameters": {"weight": 1.0, "density": 0.3}}],
        "base_model": "org/base",
    }
    ties = soup.mergekit_config([soup.Ingredient("org/tuned", 1.0)], "ties", base="org/base")
    assert ties["models"][0]["parameters"]["density"] == soup.DEFAULT_DENSITY


def soup_recipes(root: Path, tiny_model: Path) -> None:
    (root / "recipes" / "fam").mkdir(parents=True)
    (root / "recipes" / "fam" / "tuned.yaml").write_text("recipe: {description: trained}\n")
    suite = root / "suite.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "prompts": [
                    {"id": "a", "prompt": "The universe", "expect": ["x"], "kind": "general"},
                    {"id": "b", "prompt": "Dark matter", "expect": ["y"], "kind": "domain"},
                ]
            }
        )
    )
    stage = {
        "recipe": {
            "description": "half the tuned model, half the original",
            "soup": {
                "method": "linear",
                "models": [
                    {"model": "fam/tuned", "weight": 0.5},
                    {"model": str(tiny_model), "weight": 0.5},
                ],
            },
            "eval": {"suites": [str(suite)], "preset": {"preset": "greedy", "max_new_tokens": 4}},
            "card": {"base_model": "none"},  # the tiny model is built from scratch
        }
    }
    (root / "recipes" / "fam" / "soup.yaml").write_text(yaml.safe_dump(stage))


def test_a_soup_stage_runs_mergekit_and_is_evaluated_like_any_stage(tiny_model, tuned, tmp_path):
    root, runs = tmp_path / "project", tmp_path / "runs"
    soup_recipes(root, tiny_model)
    registry.append(
        runs,
        {
            "run_id": "fam/tuned/1",
            "recipe": "fam/tuned",
            "parent_model": str(tiny_model),
            "model": str(tuned),
        },
    )
    said: list[str] = []

    plan = run_recipe("fam/soup", dry_run=True, root=root, runs_dir=runs, echo=said.append)
    assert plan["stages"][0]["config"]["models"][0] == {
        "model": str(tuned.resolve()),
        "parameters": {"weight": 0.5},
    }

    record = run_recipe("fam/soup", root=root, runs_dir=runs, echo=said.append)
    run_dir = Path(record["run_dir"])
    stage = record["stages"]["soup"]
    assert stage["parents"] == [str(tuned.resolve()), str(tiny_model.resolve())]
    assert stage["soup"]["weights"] == [0.5, 0.5] and stage["model"] == str(
        (run_dir / "soup" / "model").resolve()
    )
    assert yaml.safe_load((run_dir / "soup" / "mergekit.yaml").read_text())["merge_method"] == (
        "linear"
    )
    a, b, mixed = weights(tuned), weights(tiny_model), weights(run_dir / "soup" / "model")
    name = "model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(mixed[name], 0.5 * a[name] + 0.5 * b[name], rtol=0, atol=1e-6)
    assert any(line.startswith("soup   fam/soup: linear of 0.5 x ") for line in said)

    # evaluated like any stage: the base (the soup's first model) and the soup
    assert set(record["eval"]) == {"base", "soup"}
    scores = json.loads((run_dir / "eval" / "scores.json").read_text())
    assert scores["models"]["soup"] == stage["model"]
    assert record["status"] == "complete" and (run_dir / "publish" / "README.md").is_file()
    rec = registry.records(runs)[-1]
    assert rec["recipe"] == "fam/soup" and rec["parents"] == stage["parents"]
    assert "scores" in rec


def test_recipe_check_validates_a_soup_stage_instead_of_axolotl_keys():
    from cosmosage.tools.recipe.render import describe

    row = describe("smollm2/soup-facts")
    assert row["method"] == "soup" and "smollm2/lora-facts" in row["model"]
    ok = CliRunner().invoke(main, ["recipe", "check", "smollm2/soup-facts"])
    assert ok.exit_code == 0, ok.output
    assert "ok    smollm2/soup-facts" in ok.output and "datasets" not in ok.output
    bad = CliRunner().invoke(
        main,
        [
            "recipe",
            "check",
            "smollm2/soup-facts",
            "--set",
            "recipe.soup.models=[{model: nowhere/x/y, weight: 1}, {model: smollm2/lora-facts, weight: -1}]",
            "--set",
            "recipe.soup.method=ties",
        ],
    )
    assert bad.exit_code != 0
    assert "nowhere/x/y: no such recipe, model folder or Hub id" in bad.output
    assert "soup weights must be >= 0" in bad.output
    hub = CliRunner().invoke(
        main,
        [
            "recipe",
            "check",
            "smollm2/soup-facts",
            "--set",
            "recipe.soup.models=[{model: HuggingFaceTB/SmolLM2-135M-Instruct, weight: 1}, {model: smollm2/lora-facts, weight: 1}]",
        ],
    )
    assert hub.exit_code == 0, hub.output
    assert "[info] soup: HuggingFaceTB/SmolLM2-135M-Instruct: a Hub id" in hub.output


def test_soup_weights_are_chosen_by_the_rule_not_the_last_one(
    tiny_model, tuned, tmp_path, monkeypatch
):
    from cosmosage.tools.run import select as sel

    root, runs = tmp_path / "project", tmp_path / "runs"
    soup_recipes(root, tiny_model)
    path = root / "recipes" / "fam" / "soup.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["recipe"]["soup"]["weights"] = [0.2, 0.5, 0.8]
    doc["recipe"]["soup"]["select"] = {
        "suites": [str(root / "suite.yaml")], "maximize": "domain", "general_drop": 0.05,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(doc))
    registry.append(
        runs,
        {
            "run_id": "fam/tuned/1",
            "recipe": "fam/tuned",
            "parent_model": str(tiny_model),
            "model": str(tuned),
        },
    )
    asked = {}

    def scripted(parent, candidates, rule, root_):
        asked["weights"] = [w for w, _ in candidates]
        asked["parent"] = parent
        # more of the tuned model: more domain, more forgetting; 0.5 is the best within 5 pts
        rows = [
            {"step": 0.2, "scores": {"domain": 0.2}, "general_drop": 0.0},
            {"step": 0.5, "scores": {"domain": 0.6}, "general_drop": 0.04},
            {"step": 0.8, "scores": {"domain": 0.9}, "general_drop": 0.3},
        ]
        return {"domain": 0.0}, rows

    monkeypatch.setattr(sel, "score_checkpoints", scripted)
    said: list[str] = []
    record = run_recipe("fam/soup", root=root, runs_dir=runs, echo=said.append)
    run_dir = Path(record["run_dir"])
    assert asked["weights"] == [0.2, 0.5, 0.8] and asked["parent"] == str(tiny_model.resolve())
    table = json.loads((run_dir / "soup" / "select.json").read_text())
    assert table["chosen"] == 0.5 and table["within"]
    a, b, mixed = weights(tuned), weights(tiny_model), weights(run_dir / "soup" / "model")
    name = "model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(mixed[name], 0.5 * a[name] + 0.5 * b[name], rtol=0, atol=1e-6)
    assert record["stages"]["soup"]["soup"]["weights"] == [0.5, 0.5]
    assert not (run_dir / "soup" / "select").exists()
    assert any("weight 0.5" in s and "<- chosen" in s for s in said)


def test_a_soup_rule_that_says_stop_keeps_no_soup_past_the_limits(
    tiny_model, tuned, tmp_path, monkeypatch
):
    from cosmosage.tools.run import select as sel
    from cosmosage.tools.run.stage import LaunchError

    root, runs = tmp_path / "project", tmp_path / "runs"
    soup_recipes(root, tiny_model)
    path = root / "recipes" / "fam" / "soup.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["recipe"]["soup"]["weights"] = [0.3, 0.75]
    doc["recipe"]["soup"]["select"] = {
        "suites": [str(root / "suite.yaml")], "maximize": "domain", "general_drop": 0.05,
        "otherwise": "stop",
    }  # fmt: skip
    path.write_text(yaml.safe_dump(doc))
    registry.append(
        runs,
        {"run_id": "fam/tuned/1", "recipe": "fam/tuned", "parent_model": str(tiny_model),
         "model": str(tuned)},
    )  # fmt: skip
    rows = [
        {"step": 0.3, "scores": {"domain": 0.0}, "general_drop": 0.12},
        {"step": 0.75, "scores": {"domain": 0.83}, "general_drop": 0.17},
    ]
    monkeypatch.setattr(sel, "score_checkpoints", lambda *a: ({"domain": 0.0}, rows))
    with pytest.raises(LaunchError, match="no soup keeps within the limits"):
        run_recipe("fam/soup", root=root, runs_dir=runs, echo=lambda s: None)
    run_dir = next((runs / "fam" / "soup").iterdir())
    table = json.loads((run_dir / "soup" / "select.json").read_text())
    assert table["chosen"] is None and not table["within"]
    assert not (run_dir / "soup" / "model").exists() and not (run_dir / "soup" / "select").exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_recipe_check_reports_soup_weights_without_a_rule(tiny_model, tmp_path):
    from cosmosage.tools.recipe.check import check_soup
    from cosmosage.tools.recipe.render import Rendered

    spec = {"method": "linear", "models": [{"model": str(tiny_model), "weight": 0.5},
                                           {"model": str(tiny_model), "weight": 0.5}]}  # fmt: skip
    ok = {**spec, "weights": [0.5, 0.8], "select": {"suites": ["s.yaml"], "maximize": "all"}}
    assert check_soup(Rendered("s", {}, {"soup": ok}), tmp_path) == []
    bad = check_soup(Rendered("s", {}, {"soup": {**spec, "weights": [0.5, 2]}}), tmp_path)
    assert any("recipe.soup.select must be a mapping" in p.message for p in bad)


def test_a_soup_stage_dry_run_shows_the_mergekit_command_it_would_run(tiny_model, tmp_path):
    root, runs = tmp_path / "project", tmp_path / "runs"
    soup_recipes(root, tiny_model)
    plan = run_recipe("fam/soup", root=root, runs_dir=runs, dry_run=True, echo=lambda s: None)
    (step,) = [s for s in plan["stages"] if s["stage"] == "fam/soup"]
    assert "fam/tuned, which has no finished run yet" in step["config"]["error"]
    registry.append(
        runs,
        {"run_id": "fam/tuned/1", "recipe": "fam/tuned", "parent_model": str(tiny_model),
         "model": str(tiny_model)},
    )  # fmt: skip
    plan = run_recipe("fam/soup", root=root, runs_dir=runs, dry_run=True, echo=lambda s: None)
    (step,) = [s for s in plan["stages"] if s["stage"] == "fam/soup"]
    stage_dir = Path(plan["run_dir"]) / "soup"
    assert step["argv"] == soup.mergekit_argv(stage_dir / "mergekit.yaml", stage_dir / "model")
    assert step["builds"] == [] and "error" not in step["config"]
    assert not (runs / "fam").exists()  # a dry run writes no run folder
