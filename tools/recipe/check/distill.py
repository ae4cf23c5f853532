"""Distillation datasets (`data distill`, Axolotl's KD plugin): the plugin and trainer are
on, and the teacher's rows line up with the tokens this recipe's chat template makes.

Axolotl's KD strategy places a record's rows at the end of its tokens: with more tokens
than rows (another chat template, a system prompt added) every row silently lands one
or more tokens early and the student is taught the wrong next token. `data distill`
writes each record's token count (`kd_tokens`); the first records of each local file are
tokenised here with the recipe's settings and compared.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from cosmosage.dataprep.io import read_jsonl
from cosmosage.dataprep.records import Reject
from cosmosage.tools.recipe.check.base import Problem, _one_line, _quiet
from cosmosage.tools.recipe.check.files import _local
from cosmosage.tools.recipe.check.template import tokenizer_folder

KD_TYPE = "axolotl.integrations.kd"
KD_PLUGIN = "axolotl.integrations.kd.KDPlugin"
SAMPLED = 3  # records of each file compared


def kd_datasets(cfg: dict) -> list[tuple[str, dict]]:
    return [
        (f"{group}[{i}]", ds)
        for group in ("datasets", "test_datasets")
        for i, ds in enumerate(cfg.get(group) or [])
        if isinstance(ds, dict) and str(ds.get("type") or "").startswith(KD_TYPE)
    ]


def check_distillation(cfg: dict, meta: dict, root: Path) -> list[Problem]:
    found = kd_datasets(cfg)
    if not found:
        return []
    problems = []
    if KD_PLUGIN not in (cfg.get("plugins") or []) or not cfg.get("kd_trainer"):
        problems.append(Problem("distill", f"{found[0][0]} is a distillation dataset: it needs "
                                f"`plugins: [{KD_PLUGIN}]` and `kd_trainer: true`"))  # fmt: skip
    if cfg.get("sample_packing"):
        problems.append(Problem("distill", (
            "sample_packing with a distillation dataset: measured here, the KD loss of the "
            "base model against its own rows was 3 to 6 times higher packed than unpacked "
            "(0.8-1.3 against 0.05-0.23 a token), so the rows do not reach the trainer as "
            "written; set sample_packing: false"), severity="warning"))  # fmt: skip
    folder, _ = tokenizer_folder(cfg, meta, root)
    if folder is None:
        return problems
    for where, ds in found:
        path = _local(str(ds.get("path") or ""), root)
        if path is None or not path.is_file():
            continue  # a build makes it (check_files says so otherwise)
        problems += _aligned(cfg, ds, where, path, folder)
    return problems


def _aligned(cfg: dict, ds: dict, where: str, path: Path, folder: Path) -> list[Problem]:
    """The first records' rows against the tokens of Axolotl's chat-template strategy."""
    try:
        with _quiet():
            from axolotl.prompt_strategies.chat_template import load
            from axolotl.utils.dict import DictDefault
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(folder)
            acfg = DictDefault({k: cfg.get(k) for k in ("chat_template", "chat_template_jinja",
                                                        "train_on_inputs", "sequence_len")})  # fmt: skip
            tokenize = load(
                tokenizer, acfg, {k: v for k, v in ds.items() if k != "type"}
            ).tokenize_prompt
    except Exception as exc:  # the schema check reports a bad template
        return [Problem("distill", f"{where}: could not tokenise to compare: {_one_line(exc)}",
                        severity="warning")]  # fmt: skip
    field = ds.get("logprobs_field") or "logprobs"
    for line, rec in islice(read_jsonl(path), SAMPLED):
        if isinstance(rec, Reject):
            return [Problem("distill", f"{where}: {ds.get('path')}:{line}: {rec.reason}")]
        rows = len(rec.get(field) or [])
        turns = {k: v for k, v in rec.items() if k not in (field, "target_token_ids")}
        with _quiet():
            tokens = len(tokenize(turns)["input_ids"])
        if rows != tokens:
            return [Problem("distill", (
                f"{where}: {ds.get('path')}:{line}: {rows} teacher rows, but this recipe's chat "
                f"template makes {tokens} tokens of the record: every row would sit "
                f"{abs(tokens - rows)} token(s) off; rebuild it with `cosmosage data "
                "distill --chat-template ... --sequence-len ...` as the recipe sets them"))]  # fmt: skip
    return []
