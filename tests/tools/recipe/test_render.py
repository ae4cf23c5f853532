"""Rendering: fragments merge in order, overrides apply, errors name file and line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from cosmosage.tools.recipe.render import (
    RecipeError,
    apply_overrides,
    deep_merge,
    list_recipes,
    render,
    to_yaml,
)

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "golden"


def write(root: Path, rel: str, text: str) -> Path:
    p = root / "recipes" / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_deep_merge_merges_mappings_and_replaces_lists():
    base = {"a": {"x": 1, "y": 2}, "l": [1, 2], "k": 1}
    over = {"a": {"y": 3, "z": 4}, "l": [9]}
    assert deep_merge(base, over) == {"a": {"x": 1, "y": 3, "z": 4}, "l": [9], "k": 1}
    assert base["a"] == {"x": 1, "y": 2}, "inputs are not mutated"


def test_overrides_parse_yaml_scalars_and_dotted_paths():
    cfg = {
        "learning_rate": 1e-4,
        "datasets": [{"path": "a"}],
        "special_tokens": {"pad_token": "<pad>"},
    }
    out = apply_overrides(
        cfg,
        ["learning_rate=2e-4", "datasets.0.path=b", "lora_r=8", "bf16=false", "new.nested=x"],
        ["special_tokens.pad_token"],
    )
    assert out["learning_rate"] == 2e-4 and isinstance(out["learning_rate"], float)
    assert out["datasets"][0]["path"] == "b"
    assert out["lora_r"] == 8 and out["bf16"] is False
    assert out["new"] == {"nested": "x"}
    assert out["special_tokens"] == {}
    with pytest.raises(RecipeError, match="key=value"):
        apply_overrides(cfg, ["learning_rate"])


def test_fragments_then_recipe_then_overrides(tmp_path):
    write(
        tmp_path,
        "_base/models/m.yaml",
        "base_model: m\nlearning_rate: 1.0\nrecipe: {model: m, params: 10}\n",
    )
    write(
        tmp_path,
        "_base/methods/lora.yaml",
        "adapter: lora\nlearning_rate: 2.0\nwarmup_ratio: 0.1\nrecipe: {method: lora}\n",
    )
    write(
        tmp_path,
        "fam/r.yaml",
        "recipe:\n  description: d\n  extends: [models/m, methods/lora]\nlearning_rate: 3.0\nwarmup_ratio: null\n",
    )
    r = render("fam/r", root=tmp_path)
    assert r.config == {"base_model": "m", "learning_rate": 3.0, "adapter": "lora"}
    assert r.meta == {"model": "m", "params": 10, "method": "lora", "description": "d"}
    assert "recipe" not in r.config
    assert r.files == [
        "recipes/_base/models/m.yaml",
        "recipes/_base/methods/lora.yaml",
        "recipes/fam/r.yaml",
    ]
    r2 = render(
        "fam/r", sets=["learning_rate=4", "recipe.params=20"], unsets=["adapter"], root=tmp_path
    )
    assert r2.config == {"base_model": "m", "learning_rate": 4}
    assert r2.meta["params"] == 20
    assert r.digest() != r2.digest()


def test_builds_from_fragments_are_concatenated(tmp_path):
    write(
        tmp_path,
        "_base/models/m.yaml",
        "recipe:\n  builds: [{output: build/m, command: [model]}]\n",
    )
    write(
        tmp_path, "_base/data/d.yaml", "recipe:\n  builds: [{output: build/d, command: [data]}]\n"
    )
    write(tmp_path, "r.yaml", "recipe: {extends: [models/m, data/d]}\nbase_model: x\n")
    assert [b["output"] for b in render("r", root=tmp_path).meta["builds"]] == [
        "build/m",
        "build/d",
    ]


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "bad.yaml", "base_model: x\ndatasets:\n  - path: a\n   type: completion\n")
    with pytest.raises(RecipeError) as err:
        render("bad", root=tmp_path)
    assert f"{p}:4:" in str(err.value)


def test_unknown_recipe_suggests_close_names(tmp_path):
    write(tmp_path, "quickstart.yaml", "recipe: {stages: []}\n")
    with pytest.raises(RecipeError, match="Did you mean: quickstart"):
        render("quikstart", root=tmp_path)


def test_unknown_fragment_and_cycles_are_reported(tmp_path):
    write(tmp_path, "_base/methods/lora.yaml", "adapter: lora\n")
    write(tmp_path, "r.yaml", "recipe: {extends: [methods/lorra]}\n")
    with pytest.raises(RecipeError, match="unknown fragment 'methods/lorra'.*methods/lora"):
        render("r", root=tmp_path)
    write(tmp_path, "_base/a.yaml", "recipe: {extends: [b]}\n")
    write(tmp_path, "_base/b.yaml", "recipe: {extends: [a]}\n")
    write(tmp_path, "c.yaml", "recipe: {extends: [a]}\n")
    with pytest.raises(RecipeError, match="fragment cycle"):
        render("c", root=tmp_path)


def test_a_fragment_name_cannot_reach_outside_the_fragments_folder(tmp_path):
    write(tmp_path, "secret.yaml", "base_model: leaked\n")  # recipes/secret.yaml, not a fragment
    write(tmp_path, "r.yaml", "recipe: {extends: [../secret]}\n")
    with pytest.raises(RecipeError, match=r"recipe.extends '../secret' points outside"):
        render("r", root=tmp_path)


def test_a_fragment_description_never_describes_the_recipe(tmp_path):
    write(tmp_path, "_base/m.yaml", "recipe: {description: fragment text}\nbase_model: m\n")
    write(tmp_path, "r.yaml", "recipe: {extends: [m]}\n")
    assert "description" not in render("r", root=tmp_path).meta


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_matches_its_golden_file(name):
    """Rendering is pure: the output of each bundled recipe is pinned.

    After an intended change, regenerate with UPDATE_GOLDEN=1 and review the diff.
    """
    r = render(name)
    text = to_yaml({"config": r.config, "meta": r.meta})
    golden = GOLDEN / f"{name.replace('/', '__')}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.is_file(), f"no golden file for {name}: run with UPDATE_GOLDEN=1"
    assert yaml.safe_load(text) == yaml.safe_load(golden.read_text())


def test_every_golden_file_has_a_recipe():
    names = {n.replace("/", "__") for n in list_recipes()}
    stale = [p.name for p in GOLDEN.glob("*.yaml") if p.stem not in names]
    assert not stale, f"golden files without a recipe: {stale}"


CHOICES_RECIPE = """
recipe:
  choices:
    method:
      small: {adapter: lora, lora_r: 8, learning_rate: 1.0e-3}
      full: {adapter: null, lora_r: null, learning_rate: 1.0e-4, recipe: {method: full}}
    format:
      qa: {datasets: [{path: qa.jsonl, type: completion}]}
      chat: {datasets: [{path: chat.jsonl, type: chat_template}]}
  choose: {method: small, format: qa}
  method: lora
base_model: m
adapter: lora
lora_r: 16
learning_rate: 2.0e-4
datasets: [{path: default.jsonl}]
"""


def test_choices_merge_the_chosen_bundle_of_each_axis(tmp_path):
    write(tmp_path, "c.yaml", CHOICES_RECIPE)
    r = render("c", root=tmp_path)
    assert (r.config["adapter"], r.config["lora_r"], r.config["learning_rate"]) == ("lora", 8, 1e-3)
    assert r.config["datasets"] == [{"path": "qa.jsonl", "type": "completion"}]
    assert r.meta["method"] == "lora"


def test_choose_override_picks_another_bundle_and_its_recipe_block(tmp_path):
    write(tmp_path, "c.yaml", CHOICES_RECIPE)
    r = render("c", ["recipe.choose.method=full", "recipe.choose.format=chat"], root=tmp_path)
    assert "adapter" not in r.config and "lora_r" not in r.config, "null in a bundle removes"
    assert r.config["learning_rate"] == 1e-4
    assert r.config["datasets"] == [{"path": "chat.jsonl", "type": "chat_template"}]
    assert r.meta["method"] == "full", "a bundle's recipe: block reaches the metadata"
    # plain --set overrides still come last
    r = render("c", ["recipe.choose.method=full", "learning_rate=5e-5"], root=tmp_path)
    assert r.config["learning_rate"] == 5e-5


def test_unknown_axis_or_choice_is_refused_with_the_file_and_the_known_names(tmp_path):
    path = write(tmp_path, "c.yaml", CHOICES_RECIPE)
    with pytest.raises(
        RecipeError,
        match=r"c\.yaml: recipe\.choose\.method=huge: no such choice \(choices: small, full\)",
    ):
        render("c", ["recipe.choose.method=huge"], root=tmp_path)
    with pytest.raises(
        RecipeError, match=r"recipe\.choose\.rank: no such axis \(axes: method, format\)"
    ):
        render("c", ["recipe.choose.rank=8"], root=tmp_path)
    assert path.is_file()


def test_lr_scale_multiplies_the_learning_rate_each_bundle_sets(tmp_path):
    write(tmp_path, "c.yaml", CHOICES_RECIPE)
    small = render("c", ["recipe.lr_scale=0.5"], root=tmp_path)
    full = render("c", ["recipe.lr_scale=2", "recipe.choose.method=full"], root=tmp_path)
    assert small.config["learning_rate"] == pytest.approx(5e-4)
    assert full.config["learning_rate"] == pytest.approx(2e-4)
    write(tmp_path, "nolr.yaml", "base_model: m\n")
    with pytest.raises(RecipeError, match="lr_scale is set but the recipe has no learning_rate"):
        render("nolr", ["recipe.lr_scale=2"], root=tmp_path)
    with pytest.raises(RecipeError, match="expected a number"):
        render("c", ["recipe.lr_scale=fast"], root=tmp_path)


def test_the_study_recipe_renders_every_format_and_method():
    seen = set()
    for fmt in ("statements", "qa", "dialogue"):
        for method in ("lora-r8", "lora-r64", "full"):
            r = render(
                "study/facts", [f"recipe.choose.format={fmt}", f"recipe.choose.method={method}"]
            )
            assert r.config["datasets"][0]["path"] == f"build/data/facts/{fmt}.jsonl"
            assert r.config["test_datasets"][0]["path"] == f"build/data/facts/{fmt}.jsonl"
            assert r.meta["method"] == ("full" if method == "full" else "lora")
            assert ("adapter" in r.config) == (method != "full")
            seen.add((fmt, r.config.get("lora_r"), r.config["learning_rate"]))
    assert len(seen) == 9
    mixed = render("study/facts", ["recipe.choose.format=chat-general"]).config
    assert [d["path"] for d in mixed["datasets"]] == [
        "build/data/facts/chat.jsonl",
        "samples/general/chat.jsonl",
    ]
    assert mixed["datasets"][1]["message_property_mappings"] == {"role": "from", "content": "value"}
    assert [d["path"] for d in mixed["test_datasets"]] == ["build/data/facts/chat.jsonl"]


def test_the_papers_study_renders_every_route_and_method():
    """Each route of study/papers is its own data (completion, chat or both in one
    stage); every route but `documents` trains the hand-written Q&A; every file a route
    trains on is a build output whose closed-book suite was decontaminated against it."""
    routes = {
        "documents": [("documents.jsonl", "completion")],
        "qa": [("qa.jsonl", "chat_template")],
        "mixed": [("mixed.text.jsonl", "completion"), ("mixed.chat.jsonl", "chat_template")],
        "augmented": [("augmented.jsonl", "completion"), ("qa.jsonl", "chat_template")],
        "cloze": [("cloze_prefix.jsonl", "chat_template"), ("qa.jsonl", "chat_template")],
        "cloze-span": [("cloze.jsonl", "chat_template"), ("qa.jsonl", "chat_template")],
        "cloze-sentence": [
            ("cloze_sentence.jsonl", "chat_template"),
            ("qa.jsonl", "chat_template"),
        ],
        "all": [
            ("augmented.jsonl", "completion"),
            ("cloze_prefix.jsonl", "chat_template"),
            ("qa.jsonl", "chat_template"),
        ],
        # token-share mixes with self-replay: the renderings go to the text file, the Q&A,
        # written questions and replayed answers to the chat file
        "augmented-replay50": [
            ("replay50_mix.text.jsonl", "completion"),
            ("replay50_mix.chat.jsonl", "chat_template"),
        ],
        "questions-augmented-replay": [
            ("questions_augmented_replay_mix.text.jsonl", "completion"),
            ("questions_augmented_replay_mix.chat.jsonl", "chat_template"),
        ],
    }
    for route, want in routes.items():
        for method in ("lora-r64", "full"):
            r = render(
                "study/papers", [f"recipe.choose.route={route}", f"recipe.choose.method={method}"]
            )
            got = [
                (d["path"].removeprefix("build/data/papers/"), d["type"])
                for d in r.config["datasets"]
            ]
            assert got == want, route
            assert ("adapter" in r.config) == (method != "full")
    meta = render("study/papers").meta
    made_by = {
        str(o): b["command"]
        for b in meta["builds"]
        for o in [b["output"], *(b.get("extra_outputs") or [])]
    }
    suite = "build/data/papers/closed_book.yaml"

    def against(command: list[str]) -> set[str]:
        return {a for a, prev in zip(command[1:], command, strict=False) if prev == "--against"}

    def decontaminated(path: str) -> bool:
        """The suite was checked against the file, or the file's own build checked it
        against the suite (written questions, replayed answers), or it is a mix of such
        files (the sources its spec names), or it is the trainable Q&A the suite's build
        writes beside it."""
        command = made_by[path]
        if (
            path in against(made_by[suite])
            or suite in against(command)
            or command == made_by[suite]
        ):
            return True
        if command[:2] == ["data", "mix"]:
            spec = yaml.safe_load((ROOT / command[2]).read_text())
            return all(decontaminated(source["path"]) for source in spec["sources"])
        return False

    for files in routes.values():
        for name, _ in files:
            assert decontaminated(f"build/data/papers/{name}"), name
