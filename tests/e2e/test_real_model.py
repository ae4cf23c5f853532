"""A real pretrained model learns facts on the CPU: LoRA on SmolLM2-135M-Instruct through
`axolotl train`, then recall asked in trained and in held-out wordings (a few minutes)."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from cosmosage.tools.cli.main import main

pytestmark = [pytest.mark.train, pytest.mark.real_model]

FACTS = {
    "relations": {
        "discovered_by": {
            "statement": "{subject} was discovered by {object}.",
            "questions": [
                "Who discovered {subject}?",
                "{subject} was discovered by whom?",
                "Which astronomer discovered {subject}?",
            ],
        }
    },
    "facts": [
        {"subject": "the Velmor Cloud", "relation": "discovered_by", "object": "Ilse Marnow"},
        {"subject": "the Quarrin Filament", "relation": "discovered_by", "object": "Tobiah Renke"},
        {"subject": "the Osk Void", "relation": "discovered_by", "object": "Dara Pellucci"},
        {"subject": "the Haldane Arc", "relation": "discovered_by", "object": "Miro Castellan"},
    ],
}


def test_lora_teaches_a_real_model_facts_it_did_not_know(tmp_path, smollm2):
    table = tmp_path / "facts.yaml"
    table.write_text(yaml.safe_dump(FACTS, sort_keys=False))
    facts = tmp_path / "facts"
    res = CliRunner().invoke(main, ["data", "facts", str(table), "--out-dir", str(facts)])
    assert res.exit_code == 0, res.output
    runs = tmp_path / "runs"
    sets = [
        f"datasets.0.path={facts / 'chat.jsonl'}",
        f"test_datasets.0.path={facts / 'chat.jsonl'}",
        "max_steps=24",
        "eval_steps=12",
        "save_steps=12",
        f"recipe.eval.suites=[{facts / 'recall.yaml'}]",
        "recipe.eval.preset={preset: greedy, max_new_tokens: 24}",
    ]
    res = CliRunner().invoke(
        main,
        ["recipe", "run", "smollm2/lora-facts", "--runs-dir", str(runs)]
        + [a for s in sets for a in ("--set", s)],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    run_dir = next(runs.glob("smollm2/lora-facts/*/run.json")).parent
    scores = json.loads((run_dir / "eval" / "scores.json").read_text())["scores"]
    base, tuned = scores["base"], scores[list(scores)[-1]]
    # the base model cannot know invented facts; the tuned one recalls them, also when
    # asked in a wording it never saw in training
    assert base["trained"] <= 0.25 and base["held_out"] <= 0.25, base
    assert tuned["trained"] >= 0.75, tuned
    assert tuned["held_out"] > base["held_out"], (base, tuned)
