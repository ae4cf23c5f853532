"""bench/mfu_candidates.sh's plumbing, with gpu_check replaced by a stand-in that writes
the JSON it would (the real one needs a GPU): ONLY picks candidates, each candidate's
flags reach gpu_check, the table gives each one's ratio to the baseline, and with OUT
set the table and one JSON file come back (two files, however many candidates)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE = """\
import json, sys
args = sys.argv[1:]
if args and args[0] == "-":  # the table's here-document
    sys.argv = args
    exec(compile(sys.stdin.read(), "<table>", "exec"), {"__name__": "__main__"})
    raise SystemExit
if "-c" in args[:1]:
    raise SystemExit(1)  # `import flash_attn`: not installed
out = args[args.index("--json") + 1]
tps = 2000.0 if "xformers" in args else 1000.0
open(LOG, "a").write(" ".join(args) + "\\n")
json.dump({"docs_per_row": int(args[args.index("--docs-per-row") + 1]), "results": [
    {"tokens_per_s": tps, "mfu": tps / 1e5, "peak_memory_gib": 3.0}]}, open(out, "w"))
"""


def run_script(tmp_path: Path, only: str, out: Path | None) -> subprocess.CompletedProcess:
    fake = tmp_path / "python"
    log = tmp_path / "calls.txt"
    fake.write_text(f"#!{sys.executable}\nLOG = {str(log)!r}\n" + FAKE)
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "ONLY": only, "MFU_DIR": str(tmp_path / "mfu")}
    env.pop("OUT", None)
    if out is not None:
        env["OUT"] = str(out)
    return subprocess.run(
        ["bash", str(ROOT / "bench" / "mfu_candidates.sh")],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )


def test_candidates_table_and_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    done = run_script(tmp_path, "baseline-sdpa xformers sdpa-dense-mask", out)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 3 and "--attn xformers" in calls[2]
    assert "--set sdpa_varlen=false" in calls[1]
    assert all("--preset 1b" in c and "--docs-per-row 4" in c for c in calls)
    table = (out / "table.txt").read_text()
    assert "xformers" in table and "x2.00 of baseline" in table
    every = json.loads((out / "mfu.json").read_text())
    assert set(every) == {"baseline-sdpa", "sdpa-dense-mask", "xformers"}
    assert sorted(p.name for p in out.iterdir()) == ["mfu.json", "table.txt"]


def test_an_unknown_candidate_stops_the_script(tmp_path):
    done = run_script(tmp_path, "baseline-sdpa flash-atn", None)
    assert done.returncode == 2 and "unknown candidate flash-atn" in done.stderr
    assert "xformers" in done.stderr  # the known names are listed
    assert not (tmp_path / "calls.txt").exists()
