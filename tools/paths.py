"""Where things live: the project root, the runs folder, and the layout of one run.

Every module that needs a path inside a run asks here, so the layout is written once:

    runs/                      runs_dir(): --runs-dir, else ROOT/runs
      registry.jsonl           one line per finished stage (tools/run/registry.py)
      <recipe>/<run-id>/       a RunFolder
        run.json               the run's record: status, timings, lineage of every stage
        summary.md
        <stage>/               a StageFolder
          axolotl.yaml         exactly what Axolotl was given
          train.log            Axolotl's output
          metrics.json         loss per step, eval loss per step, best checkpoint
          output/              Axolotl's output_dir (checkpoints)
          prepared/            Axolotl's tokenized datasets
          model/               the selected checkpoint, merged into full weights
          select.json          what recipe.select asked of each checkpoint
          select/              the candidates while they are asked (removed after)
          early_stop.json      each checkpoint asked during training (early stopping)
          merge_check.json     a LoRA merge's logits against base + adapter (peft)
          mergekit.yaml        a soup stage (recipe.soup): what mergekit was given
        eval/                  scores.json, report.md and plots of the run's evaluation
        publish/               final model + model card (`cosmosage model publish`)
        gguf/                  `cosmosage model quantize`'s files
        upload/                publish/ + gguf/, what `model publish --with-gguf` sends

This module imports nothing of the project: every area may use it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(os.environ.get("COSMOSAGE_ROOT") or Path(__file__).resolve().parents[1])


def runs_dir(given: str | Path | None = None, root: Path | None = None) -> Path:
    """The folder of run folders: the one given, else `runs/` in the project."""
    return Path(given) if given else (root or ROOT) / "runs"


@dataclass(frozen=True)
class StageFolder:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "axolotl.yaml"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def output(self) -> Path:
        return self.path / "output"

    @property
    def prepared(self) -> Path:
        return self.path / "prepared"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def select(self) -> Path:
        return self.path / "select.json"

    @property
    def early_stop(self) -> Path:
        return self.path / "early_stop.json"

    @property
    def candidates(self) -> Path:
        """Where recipe.select puts the models it asks (merged checkpoints, soups) while
        it asks them; removed afterwards."""
        return self.path / "select"

    @property
    def merge_check(self) -> Path:
        return self.path / "merge_check.json"

    @property
    def mergekit_config(self) -> Path:
        return self.path / "mergekit.yaml"

    @property
    def mergekit_log(self) -> Path:
        return self.path / "mergekit.log"


@dataclass(frozen=True)
class RunFolder:
    path: Path

    # ------------------------------------------------------------------ finding one

    @staticmethod
    def is_run(path: str | Path) -> bool:
        return (Path(path) / "run.json").is_file()

    @classmethod
    def of(cls, source: str | Path, runs: Path | None = None) -> RunFolder | None:
        """The run a path names: a run folder or a run id under `runs` (RECIPE/ID);
        None for anything else (a model folder, say)."""
        path = cls.under(source, runs)
        return cls(path) if cls.is_run(path) else None

    @staticmethod
    def under(source: str | Path, runs: Path | None) -> Path:
        """`source` as given when it is a folder, else the same name under `runs` when
        that is one (a run id, RECIPE/ID), else as given."""
        path = Path(source)
        if not path.is_dir() and runs is not None and (runs / path).is_dir():
            return runs / path
        return path

    # ------------------------------------------------------------------ its files

    @property
    def record_file(self) -> Path:
        return self.path / "run.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.md"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def scores(self) -> Path:
        return self.eval_dir / "scores.json"

    @property
    def publish(self) -> Path:
        return self.path / "publish"

    @property
    def gguf(self) -> Path:
        return self.path / "gguf"

    @property
    def upload(self) -> Path:
        """What `model publish --with-gguf` uploads: publish/ and gguf/ as links."""
        return self.path / "upload"

    def stage(self, key: str) -> StageFolder:
        return StageFolder(self.path / key)

    # ------------------------------------------------------------------ its record

    def record(self) -> dict:
        """run.json, or {} for a run not started yet."""
        if not self.record_file.is_file():
            return {}
        return json.loads(self.record_file.read_text())

    def read_scores(self) -> dict | None:
        return json.loads(self.scores.read_text()) if self.scores.is_file() else None

    def final_model(self) -> str | None:
        """The model of the last finished stage (None while no stage has finished)."""
        stages = self.record().get("stages") or {}
        done = [s["model"] for s in stages.values() if s.get("status") == "complete"]
        return done[-1] if done else None
