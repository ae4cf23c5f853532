from cosmosage.dataprep.env import child_env


def test_a_child_with_only_local_inputs_runs_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    env = child_env(local=True, HF_HUB_CACHE="/c")
    assert env["HF_HUB_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == "1"
    assert env["TOKENIZERS_PARALLELISM"] == "false" and env["HF_HUB_CACHE"] == "/c"
    online = child_env(local=False)
    assert "HF_HUB_OFFLINE" not in online and "HF_DATASETS_OFFLINE" not in online


def test_the_users_own_setting_wins(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert child_env(local=True)["HF_HUB_OFFLINE"] == "0"


def test_nothing_the_project_runs_reports_to_axolotls_telemetry(monkeypatch):
    """The command line, the in-process Axolotl loaders and every child turn it off,
    whether or not the Makefile set it; a user's own value wins."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("AXOLOTL_DO_NOT_TRACK", "DO_NOT_TRACK")}
    for module in ("cosmosage.tools.cli.main", "cosmosage.dataprep.chat.labels"):
        code = f"import os, {module}; print(os.environ.get('AXOLOTL_DO_NOT_TRACK'), os.environ.get('DO_NOT_TRACK'))"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.stdout.split() == ["1", "1"], (module, out.stderr[-500:])
    mine = subprocess.run([sys.executable, "-c", code], env={**env, "AXOLOTL_DO_NOT_TRACK": "0"},
                          capture_output=True, text=True)  # fmt: skip
    assert mine.stdout.split()[0] == "0"
    monkeypatch.delenv("AXOLOTL_DO_NOT_TRACK", raising=False)
    monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    child = child_env(local=True)
    assert child["AXOLOTL_DO_NOT_TRACK"] == child["DO_NOT_TRACK"] == "1"


def test_a_task_after_a_bigger_one_reports_its_own_peak():
    """A worker that ran a task holding 200 MB, then one holding little: after the
    release and the reset, the second task's peak is near what it holds, not 200 MB up."""
    import subprocess
    import sys

    code = """
import numpy as np
from cosmosage.dataprep.env import memory_mb, peak_memory_mb, release_memory, reset_peak_memory
big = np.ones(200 * 2**20 // 8)          # the first task: 200 MB
first = peak_memory_mb()
del big
release_memory()
assert reset_peak_memory()
start = memory_mb()
small = np.ones(10 * 2**20 // 8)         # the second task: 10 MB
print(first, start, peak_memory_mb())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, start, second = map(float, out.stdout.split())
    assert first - start > 180  # the 200 MB were handed back
    assert start + 5 < second < start + 40  # the second task's 10 MB, not the first's 200
