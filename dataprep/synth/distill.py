"""Teacher distributions for distillation (`data distill`): each chat record gains the
teacher model's top-k next-token log-probabilities at every position, in the form
Axolotl's knowledge-distillation trainer reads (`type: axolotl.integrations.kd.chat_template`,
`logprobs_field: logprobs`, with pre-tokenised `target_token_ids`).

Why: training on a model's own answers as text (`data replay`) pulls it toward one
sampled or greedy continuation; the KD loss pulls it toward the base's whole next-token
distribution on those contexts, the exact KL(base || tuned) that replaying draws only
estimates. Records named `gold` (a `data mix` source, or an input file's stem) are what
the run teaches: their answer positions get the answer's own next token as a one-hot
target (log-probability 0, the others -20), so the KD loss is cross-entropy on them.

Alignment: Axolotl's KD trainer compares the student's prediction at position t with
the target at t, so row t is the distribution of token t+1 (the logits at t). The rows
must cover exactly the tokens Axolotl will make of the record, so tokenisation is
Axolotl's own chat-template strategy with the recipe's settings (`chat_template`,
`sequence_len`); each record keeps `kd_tokens`, its length, for `recipe check`.

A forward pass per batch; rows are appended to OUT's partial file as they come, so a
killed run, started again with the same command and inputs, computes only what is left.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmosage.dataprep.io import (
    JsonlAppender,
    Manifest,
    check_outputs,
    read_jsonl,
    sha256_file,
    sibling,
    write_json,
    write_rejects,
)
from cosmosage.dataprep.records import DataError, Reject

# the log-probability of every non-answer entry of a gold row: far below the answer's
# 0 but finite (Axolotl renormalises the rows; an exact zero probability would make its
# KL term 0 * -inf)
GOLD_OTHERS = -20.0
DECIMALS = 4


@dataclass
class DistillConfig:
    inputs: list[str]
    out: str
    model: str
    top_k: int = 16
    gold: tuple[str, ...] = ()
    chat_template: str = "tokenizer_default"
    sequence_len: int = 2048
    field_messages: str = "messages"
    batch_size: int = 8
    device: str = "cpu"
    settings: dict = field(init=False)

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise DataError(f"--top-k {self.top_k}: at least 1")
        if self.batch_size < 1:
            raise DataError(f"--batch-size {self.batch_size}: at least 1")
        self.settings = {
            "top_k": self.top_k,
            "gold": sorted(self.gold),
            "chat_template": self.chat_template,
            "sequence_len": self.sequence_len,
            "field_messages": self.field_messages,
        }


@dataclass
class Item:
    record: dict
    input_ids: list[int]
    labels: list[int]
    gold: bool
    path: str


def is_gold(rec: dict, path: str, gold: tuple[str, ...]) -> bool:
    return rec.get("mix_source") in gold or Path(path).stem in gold


def chat_tokenizer(cfg: DistillConfig, tokenizer) -> Callable[[dict], dict]:
    """Axolotl's chat-template strategy with the recipe's settings: the same tokens the
    trainer will make of a record (its KD strategy subclasses this one)."""
    from axolotl.prompt_strategies.chat_template import load
    from axolotl.utils.dict import DictDefault

    acfg = DictDefault(
        chat_template=cfg.chat_template, train_on_inputs=False, sequence_len=cfg.sequence_len
    )
    strategy = load(tokenizer, acfg, {"field_messages": cfg.field_messages})
    return strategy.tokenize_prompt


def _malformed_turn(turns: list, field: str) -> str | None:
    """Why a turn is not a mapping with a text `content`, else None."""
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            return f"{field}[{i}]: not an object"
        if not isinstance(turn.get("content"), str):
            return f"{field}[{i}].content: expected text, got {type(turn.get('content')).__name__}"
    return None


def read_items(cfg: DistillConfig, tokenize: Callable[[dict], dict]) -> Iterator[Item | Reject]:
    """Every input record tokenised, or a reject naming file, line and reason."""
    for path in cfg.inputs:
        for line, rec in read_jsonl(path):
            if isinstance(rec, Reject):
                yield rec
                continue
            turns = rec.get(cfg.field_messages)
            if not isinstance(turns, list) or not turns:
                yield Reject(path, line, f"no chat turns in `{cfg.field_messages}`")
                continue
            if why := _malformed_turn(turns, cfg.field_messages):
                yield Reject(path, line, why)  # never str() of a number or a mapping
                continue
            try:
                tok = tokenize(
                    {k: v for k, v in rec.items() if k not in ("logprobs", "target_token_ids")}
                )
            except Exception as exc:  # Axolotl raises plain errors on malformed turns
                yield Reject(path, line, f"not tokenisable by the chat template: {exc}"[:300])
                continue
            ids, labels = list(tok.get("input_ids") or []), list(tok.get("labels") or [])
            if not ids or len(ids) > cfg.sequence_len:
                yield Reject(path, line, f"{len(ids)} tokens: past sequence_len {cfg.sequence_len}")
                continue
            if all(lab == -100 for lab in labels):
                yield Reject(path, line, "no trained token (no assistant turn)")
                continue
            yield Item(rec, ids, labels, is_gold(rec, path, cfg.gold), path)


def teacher_rows(logprobs, item: Item, top_k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Row t: the top-k of the distribution of token t+1 (logits at t). For a gold
    record, the rows predicting an answer token are that token's one-hot instead."""
    values, indices = logprobs.topk(top_k, dim=-1)
    ids, lps = indices.tolist(), [[round(v, DECIMALS) for v in row] for row in values.tolist()]
    if item.gold:
        n = len(item.input_ids)
        for t in range(n - 1):
            if item.labels[t + 1] == -100:
                continue
            want = item.input_ids[t + 1]
            others = [i for i in ids[t] if i != want][: top_k - 1]
            ids[t] = [want, *others]
            lps[t] = [0.0] + [GOLD_OTHERS] * len(others)
    return ids, lps


def batch_logprobs(model, batch: list[Item], device: str):
    """Per item, the [tokens, vocab] log-softmax of the model's logits (right-padded
    batch; a padded position never reaches a real one)."""
    import torch

    width = max(len(it.input_ids) for it in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, it in enumerate(batch):
        ids[row, : len(it.input_ids)] = torch.tensor(it.input_ids)
        mask[row, : len(it.input_ids)] = 1
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    out = torch.log_softmax(logits.float(), dim=-1).cpu()
    return [out[row, : len(it.input_ids)] for row, it in enumerate(batch)]


def _state_key(cfg: DistillConfig) -> str:
    ident = {"model": cfg.model, "settings": cfg.settings,
             "inputs": [sha256_file(p) for p in cfg.inputs]}  # fmt: skip
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _resume(cfg: DistillConfig, key: str) -> None:
    """Keep OUT's partial file only if it was written with the same model, settings and
    inputs (its key in the state file beside it); otherwise start it afresh."""
    partial, state = sibling(cfg.out, ".partial.jsonl"), sibling(cfg.out, ".partial.json")
    partial.parent.mkdir(parents=True, exist_ok=True)
    same = state.exists() and json.loads(state.read_text() or "{}").get("key") == key
    if not same:
        partial.unlink(missing_ok=True)
    write_json(state, {"key": key})


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for ln in fh if ln.strip())


def run_distill(
    cfg: DistillConfig, model, tokenizer, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Write OUT (the records with `logprobs`, `target_token_ids`, `kd_tokens`), its
    rejects and manifest; the model and tokenizer are given by the caller."""
    check_outputs(cfg.inputs, {"--out": cfg.out})
    items, rejects = [], []
    for it in read_items(cfg, chat_tokenizer(cfg, tokenizer)):
        (rejects if isinstance(it, Reject) else items).append(it)
    if not items:
        write_rejects(cfg.out, rejects)
        raise DataError(f"no record left to distil from {', '.join(cfg.inputs)}")
    missing = set(cfg.gold) - {
        g for it in items for g in cfg.gold if is_gold(it.record, it.path, (g,))
    }
    if missing:  # a misspelt source would distil the taught answers toward the teacher
        sources = sorted({it.record.get("mix_source") or Path(it.path).stem for it in items})
        raise DataError(f"--gold {', '.join(sorted(missing))}: no record of that source "
                        f"(the inputs' sources: {', '.join(sources)})")  # fmt: skip
    _resume(cfg, _state_key(cfg))
    partial = sibling(cfg.out, ".partial.jsonl")
    with JsonlAppender(partial) as sink:  # opening cuts a line a kill left half-written
        done = _count_lines(partial)
        if done:
            echo(f"resuming: {done} of {len(items)} records already distilled")
        todo = items[done:]
        _distil(cfg, model, todo, sink)
    return _finish(cfg, items, rejects, partial)


def _distil(cfg: DistillConfig, model, todo: list[Item], sink: JsonlAppender) -> None:
    from tqdm import tqdm

    with tqdm(total=len(todo), desc="distil", unit="record", disable=None) as bar:
        for start in range(0, len(todo), cfg.batch_size):
            batch = todo[start : start + cfg.batch_size]
            for it, lp in zip(batch, batch_logprobs(model, batch, cfg.device), strict=True):
                ids, lps = teacher_rows(lp, it, cfg.top_k)
                sink.write({**it.record, "logprobs": lps, "target_token_ids": ids,
                            "kd_tokens": len(it.input_ids)})  # fmt: skip
            bar.update(len(batch))


def _finish(cfg: DistillConfig, items: list[Item], rejects: list[Reject], partial: Path) -> dict:
    import os

    manifest = Manifest(str(cfg.out), extra={"step": "distill", "model": cfg.model,
                                             "settings": cfg.settings})  # fmt: skip
    for path in cfg.inputs:
        manifest.add_input(path)
    for r in rejects:
        manifest.drop(r.reason)
    kinds = Counter("gold" if it.gold else "teacher" for it in items)
    manifest.kept = len(items)
    manifest.tokens = sum(len(it.input_ids) for it in items)
    manifest.extra.update(records_by_target=dict(kinds))
    os.replace(partial, cfg.out)
    sibling(cfg.out, ".partial.json").unlink(missing_ok=True)
    write_rejects(cfg.out, rejects)
    manifest.write()
    return manifest.to_json()
