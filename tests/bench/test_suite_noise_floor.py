"""The suite noise-floor bench runs end to end on the tiny model: every perturbed model,
the bfloat16 rounding and a trained model get a pass rate with its interval and their
weight change, the unperturbed model's change being zero."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_noise_floor_bench_prints_every_model_with_its_change(tiny_model, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "prompts:\n"
        "  - {id: a, prompt: 'What is the capital of France?', expect: [Paris], kind: general}\n"
        "  - {id: b, prompt: 'Name a colour.', expect: [e], kind: general}\n"
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "suite_noise_floor.py"), "--model", str(tiny_model),
         "--suite", str(suite), "--levels", "0.01,0.5", "--seeds", "1",
         "--trained", str(tiny_model)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in proc.stdout.splitlines()
        if line.startswith("| ") and "---" not in line and "model" not in line.split("|")[1]
    }
    rows = {k: v[0] for k, v in cells.items()}
    assert set(rows) == {"unperturbed", "bf16 rounding", "noise 0.01 seed 1",
                         "noise 0.5 seed 1", "trained 1"}  # fmt: skip
    assert rows["unperturbed"] == rows["trained 1"] == "0.00%, 0.00%"
    size = {k: float(re.match(r"([\d.]+)%", v)[1]) for k, v in rows.items()}
    # noise of 1% and 50% of each tensor's RMS: about that much of the weights' size
    assert 0.5 < size["noise 0.01 seed 1"] < 2 and 30 < size["noise 0.5 seed 1"] < 70
    assert 0 < size["bf16 rounding"] < 1
    assert re.search(
        r"\| unperturbed \|.*\| \d+% \[\d+%-\d+%\] \(\d/2\) \| \+0 pts \|", proc.stdout
    )
    # drift from the unperturbed model's own answers: none for itself and the same
    # weights, some for noise of half the weights' size
    kl = {k: float(v[1]) for k, v in cells.items()}
    assert kl["unperturbed"] == kl["trained 1"] == 0.0 and kl["noise 0.5 seed 1"] > 0.01
    assert cells["unperturbed"][2] == "0%" and cells["noise 0.5 seed 1"][2] != "n/a"
