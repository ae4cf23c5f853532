"""A recipe's `eval:` block on a run's models: the files it writes into eval/."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from cosmosage.tools.run.evaluation import recipe_eval

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_the_calibration_plot_is_written_only_with_self_consistency_and_the_docs_say_so(
    tmp_path, tiny_model
):
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"prompts": [{"id": "a", "prompt": "Hi", "expect": ["z"]}]}))
    written = {}
    for samples in (0, 1, 2):
        run = tmp_path / f"run{samples}"
        run.mkdir()
        meta = {"eval": {"suites": [str(suite)], "samples": samples, "drift": False}}
        meta["eval"]["preset"] = {"preset": "greedy", "max_new_tokens": 2}
        recipe_eval(run, {"stages": {}}, meta, str(tiny_model), tmp_path, lambda s: None)
        written[samples] = sorted(p.name for p in (run / "eval").glob("*.png"))
    assert written[0] == written[1] == ["loss.png", "scores.png"]
    assert written[2] == ["calibration.png", "loss.png", "scores.png"]

    text = " ".join((DOCS / "evaluation.md").read_text().split())
    said = re.search(r"`recipe run` writes (.*?) into the run folder,(.*?);", text)
    assert said and "calibration.png" not in said.group(1)
    assert "`eval/calibration.png` too when self-consistency is on (`samples` 2 or more" in (
        said.group(2)
    )
