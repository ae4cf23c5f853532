"""Token-weighted chat mixes and staged curricula: the `data mix SPEC.yaml` job.

A spec names sources (local JSONL/CSV files or Hub datasets), each with a share of the
output's tokens (`weight`) or a number of conversations (`count`), a priority tier and
an optional held-out validation fraction. Every source is converted to chat records,
measured with the tokenizer's chat template, deduplicated against the sources listed
before it, split into train and validation slices, then drawn from until its token
target is met. With `stages`, one output is written per stage, each stage taking the
sources of its tiers. See docs/chat-data.md for the format.

    seed: 0
    tokenizer: build/models/tiny-llama
    sequence_len: 256
    validation: 0.1
    out: build/data/quickstart/chat.jsonl
    val_out: build/data/quickstart/chat.val.jsonl
    sources:
      - {name: domain, path: samples/qa/cosmology_qa.jsonl, weight: 0.7}
      - {name: general, path: samples/general/chat.jsonl, weight: 0.3}
"""

from __future__ import annotations

import bisect
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cosmosage.dataprep.chat.convert import (
    TokenCounter,
    convert,
    measure,
    public,
)
from cosmosage.dataprep.chat.mix_spec import (  # noqa: F401 (load_spec, parse_spec: the mix API)
    MixSpec,
    Source,
    Stage,
    load_spec,
    parse_spec,
)
from cosmosage.dataprep.io import (
    Manifest,
    check_outputs,
    read_jsonl,
    read_records,
    write_jsonl,
    write_rejects,
)
from cosmosage.dataprep.records import DataError, Reject
from cosmosage.dataprep.steps import Drops, write_failed_rejects

# --------------------------------------------------------------------------- reading


def hub_cache_path(src: Source, cache_dir: str | Path) -> Path:
    """Where the rows read from a Hub source are kept, named by what was read."""
    files = json.dumps(src.data_files, sort_keys=True) if src.data_files else ""
    key = f"{src.dataset}|{src.config}|{src.split}|{src.revision}|{src.max_records}|{files}"
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{src.dataset}-{src.split}")[:80]
    return Path(cache_dir) / f"{slug}-{digest}.jsonl"


def read_hub(src: Source, cache_dir: str | Path | None = None) -> Iterator[tuple[int, dict]]:
    """Rows of a Hub (or `datasets` builder) dataset as (row number, record), streamed
    when asked. With a cache folder, the rows read (up to `max_records`) are saved as
    JSONL on the first run and read back from there on later ones, offline."""
    cached = hub_cache_path(src, cache_dir) if cache_dir and src.cache else None
    if cached is not None and cached.is_file():
        yield from read_jsonl(cached)
        return
    rows = _stream_hub(src)
    if cached is None:
        yield from rows
        return
    kept: list[dict] = []
    for i, row in rows:
        kept.append(row)
        yield i, row
    write_jsonl(cached, kept)


class HubError(DataError):
    """A Hub source could not be read; `load_pools` names the spec."""


def _stream_hub(src: Source) -> Iterator[tuple[int, dict]]:
    from datasets import load_dataset

    kwargs = {"split": src.split, "streaming": src.streaming}
    if src.config:
        kwargs["name"] = src.config
    if src.data_files:
        kwargs["data_files"] = src.data_files
    if src.revision:
        kwargs["revision"] = src.revision
    try:  # offline, a wrong name or split, the connection lost while streaming
        ds = load_dataset(src.dataset, **kwargs)
        for i, row in enumerate(ds, start=1):
            if src.max_records and i > src.max_records:
                break
            yield i, dict(row)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        why = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise HubError(
            f"source {src.name}: could not read the Hub dataset {src.dataset} "
            f"({type(exc).__name__}: {why}); check the name and the network, or give a "
            "local `path:` (rows read once are kept under `cache_dir` for offline runs)"
        ) from exc


def read_source(
    src: Source, cache_dir: str | Path | None = None
) -> Iterator[tuple[int, dict | Reject]]:
    if src.path:
        for n, item in enumerate(read_records(src.path), start=1):
            if src.max_records and n > src.max_records:
                break
            yield item
    else:
        yield from read_hub(src, cache_dir)


def dedup_key(messages: list[dict]) -> str:
    """Same user and assistant turns (case and spacing aside) = same conversation;
    system prompts do not count."""
    text = "\x1e".join(
        " ".join(m["content"].lower().split()) for m in messages if m["role"] != "system"
    )
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@dataclass
class Pool:
    source: Source
    train: list[dict]
    val: list[dict]
    rejects: list[Reject]
    dropped: Counter


def _naming_spec(spec: MixSpec, items: Iterator) -> Iterator:
    try:
        yield from items
    except HubError as exc:
        raise DataError(f"{spec.path}: {exc}") from exc


def load_pools(spec: MixSpec, counter: TokenCounter) -> list[Pool]:
    """Each source converted, measured, deduplicated against earlier ones, split train/val."""
    seen: dict[str, str] = {}
    pools = []
    for src in spec.sources:
        drops = Drops()
        records = []
        if src.type == "completion":
            items = text_records(read_source(src, spec.cache_dir), src.label, counter)
        else:
            items = measure(
                convert(read_source(src, spec.cache_dir), src.label, src.opts),
                counter,
                spec.sequence_len,
            )
        for rec in _naming_spec(spec, drops.keep(items)):
            key = dedup_key(rec["messages"]) if "messages" in rec else text_key(rec["text"])
            if key in seen:
                line = rec["source"].rpartition(":")[2]
                drops.add(
                    Reject(
                        src.label,
                        int(line) if line.isdigit() else None,
                        f"duplicate: same conversation as {seen[key]}",
                        public(rec),
                    )
                )
                continue
            seen[key] = f"{src.name}/{rec['source']}"
            rec["mix_source"] = src.name
            records.append(rec)
        rng = random.Random(f"{spec.seed}:{src.name}")
        rng.shuffle(records)
        n_val = round(len(records) * src.validation)
        if src.validation > 0 and n_val == 0 and len(records) > 1:
            n_val = 1
        pools.append(Pool(src, records[n_val:], records[:n_val], drops.rejects, drops.counts))
    return pools


def text_key(text: str) -> str:
    return hashlib.sha1(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def text_records(rows, label: str, counter: TokenCounter) -> Iterator[dict | Reject]:
    """Completion records of a source: each needs a non-empty `text`; `_tokens` is its
    length in tokens plus the end-of-text token (words without a tokenizer). A text
    longer than sequence_len is kept: Axolotl's completion type splits it into rows."""
    for item in rows:
        if isinstance(item, Reject):
            yield item
            continue
        line, row = item
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            yield Reject(label, line, "no text: a completion source needs a `text` field", row)
            continue
        rec = dict(row)
        rec["source"] = f"{label}:{line}"
        rec["_tokens"] = counter.count_text(text)
        yield rec


# --------------------------------------------------------------------------- drawing


def fill(records: list[dict], target: float, repeat: bool, rng: random.Random) -> list[dict]:
    """Records whose tokens add up as close to `target` as the pool allows: take each
    record that still fits, in the (shuffled) pool order (with `repeat`, go round again
    in a new order while there is room), then close the gap by swaps."""
    chosen, total = [], 0
    order = list(records)
    while True:
        added = False
        for rec in order:
            if total + rec["_tokens"] <= target:
                chosen.append(rec)
                total += rec["_tokens"]
                added = True
        smallest = min((r["_tokens"] for r in records), default=0)
        if not repeat or not added or target - total < smallest:
            return close_gap(chosen, records, target)
        order = list(records)
        rng.shuffle(order)


def close_gap(
    chosen: list[dict], records: list[dict], target: float, rounds: int = 8
) -> list[dict]:
    """Swap a chosen record for a longer unchosen one while that brings the total
    closer to `target` without passing it; then pass it by one record if that lands
    closer."""
    chosen = list(chosen)
    picked = {id(r) for r in chosen}
    spare = sorted((r for r in records if id(r) not in picked), key=lambda r: r["_tokens"])
    sizes = [r["_tokens"] for r in spare]
    total = sum(r["_tokens"] for r in chosen)
    for _ in range(rounds):
        gap = target - total
        best = None  # (gain, index in chosen, index in spare)
        for i, rec in enumerate(chosen):
            j = bisect.bisect_right(sizes, rec["_tokens"] + gap) - 1
            if j >= 0 and id(spare[j]) not in picked:
                gain = sizes[j] - rec["_tokens"]
                if gain > 0 and (best is None or gain > best[0]):
                    best = (gain, i, j)
        if best is None:
            break
        gain, i, j = best
        out, new = chosen[i], spare[j]
        chosen[i] = new
        picked.discard(id(out))
        picked.add(id(new))
        spare[j] = out
        sizes[j] = out["_tokens"]
        order = sorted(range(len(spare)), key=lambda k: sizes[k])
        spare, sizes = [spare[k] for k in order], [sizes[k] for k in order]
        total += gain
    # one more record when passing the target by it misses by less than stopping short
    if spare and sizes[0] - (target - total) < target - total:
        chosen.append(spare[0])
    return chosen


def plan_stage(stage: Stage, pools: list[Pool], seed: int) -> tuple[list[dict], dict]:
    """Draw one stage's training records; return them and the per-source report."""
    members = [p for p in pools if p.source.tier in stage.tiers]
    weighted = [p for p in members if p.source.weight is not None]
    counted = [p for p in members if p.source.count is not None]
    rng = random.Random(f"{seed}:stage:{stage.name}")
    picks: dict[str, list[dict]] = {}
    for p in counted:
        n = p.source.count
        take = list(p.train[:n])
        while p.source.repeat and p.train and len(take) < n:
            more = list(p.train)
            rng.shuffle(more)
            take.extend(more[: n - len(take)])
        picks[p.source.name] = take
    fixed = sum(r["_tokens"] for p in counted for r in picks[p.source.name])
    wsum = sum(p.source.weight for p in weighted)
    shares: dict[str, float] = {}
    targets: dict[str, float] = {}
    if weighted:
        if counted:
            shares = {p.source.name: p.source.weight for p in weighted}
        else:
            shares = {p.source.name: p.source.weight / wsum for p in weighted}
        if stage.total_tokens:
            total = float(stage.total_tokens)
        elif counted:
            total = fixed / (1.0 - wsum)
        else:
            # the largest mix in which no source repeats (a source with repeat: true
            # never limits it)
            limits = [
                sum(r["_tokens"] for r in p.train) / shares[p.source.name]
                for p in weighted
                if not p.source.repeat
            ]
            total = (
                min(limits)
                if limits
                else float(sum(sum(r["_tokens"] for r in p.train) for p in weighted))
            )
        for p in weighted:
            targets[p.source.name] = shares[p.source.name] * total
            picks[p.source.name] = fill(p.train, targets[p.source.name], p.source.repeat, rng)
    train = [r for p in members for r in picks[p.source.name]]
    rng.shuffle(train)
    grand = sum(r["_tokens"] for r in train) or 1
    report = {}
    for p in members:
        got = picks[p.source.name]
        tokens = sum(r["_tokens"] for r in got)
        report[p.source.name] = {
            "source": p.source.label,
            "tier": p.source.tier,
            "requested_share": round(shares[p.source.name], 4) if p.source.name in shares else None,
            "requested_count": p.source.count,
            "target_tokens": round(targets[p.source.name]) if p.source.name in targets else None,
            "realized_share": round(tokens / grand, 4),
            "records": len(got),
            "tokens": tokens,
            "available_records": len(p.train),
            "available_tokens": sum(r["_tokens"] for r in p.train),
            "val_records": len(p.val),
            "val_tokens": sum(r["_tokens"] for r in p.val),
            "dropped": dict(p.dropped),
        }
    return train, report


def _strip(rec: dict) -> dict:
    return public(rec)


def _add_inputs(manifest: Manifest, spec: MixSpec, members: list[Pool]) -> None:
    """The spec and every source of the stage (a file, or a Hub dataset with its cache)
    as the manifest's inputs, with what each source dropped."""
    if Path(spec.path).is_file():
        manifest.add_input(spec.path, role="spec")
    for p in members:
        if p.source.path:
            manifest.add_input(p.source.path, source=p.source.name)
        else:
            entry = {
                "dataset": p.source.dataset,
                "split": p.source.split,
                "config": p.source.config,
                "revision": p.source.revision,
                "source": p.source.name,
            }
            if spec.cache_dir and p.source.cache:
                entry["cache"] = str(hub_cache_path(p.source, spec.cache_dir))
            manifest.inputs.append(entry)
        manifest.dropped.update(p.dropped)


def _write_text_part(stage: Stage, texts: list[dict], inputs: list, report: dict) -> dict:
    """A stage's completion-text records (`text_out`), with their manifest."""
    tm = Manifest(
        stage.text_out,
        inputs=inputs,
        extra={"stage": stage.name, "completion_of": stage.out, "sources": report},
    )
    tm.kept = write_jsonl(stage.text_out, (_strip(r) for r in texts))
    tm.tokens = sum(r["_tokens"] for r in texts)
    write_rejects(stage.text_out, [])
    tm.write()
    return {"text_output": stage.text_out, "text_records": tm.kept, "text_tokens": tm.tokens}


def _write_val_part(stage: Stage, members: list[Pool], inputs: list, seed: int) -> dict:
    """A stage's validation records: every member's held-out slice, shuffled by the seed."""
    val = [r for p in members for r in p.val]
    random.Random(f"{seed}:val:{stage.name}").shuffle(val)
    vm = Manifest(
        stage.val_out,
        inputs=inputs,
        extra={"stage": stage.name, "validation_of": stage.out},
    )
    vm.kept = write_jsonl(stage.val_out, (_strip(r) for r in val))
    vm.tokens = sum(r["_tokens"] for r in val)
    vm.extra["sources"] = {p.source.name: len(p.val) for p in members}
    vm.write()
    return {"val_output": stage.val_out, "val_records": vm.kept}


def build_mix(spec: MixSpec, stage_names: list[str] | None = None) -> dict:
    """Write every stage's train (and validation) JSONL with manifest and rejects."""
    from cosmosage.dataprep.tokenizer import load_tokenizer

    if spec.sequence_len and not spec.tokenizer:
        raise DataError(f"{spec.path}: sequence_len needs a tokenizer to measure conversations")
    local = [s.path for s in spec.sources if s.path]
    outputs: dict[str, str | None] = {}
    for st in spec.stages:
        outputs |= {f"{st.name}.out": st.out, f"{st.name}.val_out": st.val_out,
                    f"{st.name}.text_out": st.text_out}  # fmt: skip
    check_outputs([*local, spec.path], outputs)
    for s in spec.sources:
        if s.path and not Path(s.path).is_file():
            raise DataError(f"{spec.path}: source {s.name}: {s.path} does not exist")
    counter = TokenCounter(load_tokenizer(spec.tokenizer) if spec.tokenizer else None)
    pools = load_pools(spec, counter)
    empty = [p for p in pools if not p.train and (p.source.weight is not None or p.source.count)]
    if empty:
        # keep the reasons aside (an earlier mix's outputs stay whole), then stop
        failed = write_failed_rejects(spec.stages[0].out, [r for p in pools for r in p.rejects])
        why = "; ".join(
            f"{p.source.name}: {', '.join(f'{k} x{n}' for k, n in p.dropped.most_common(3)) or 'no records'}"
            for p in empty
        )
        raise DataError(
            f"{spec.path}: no usable conversations in source(s) {why} (rejects in {failed})"
        )
    results = []
    for stage in spec.stages:
        if stage_names and stage.name not in stage_names:
            continue
        train, report = plan_stage(stage, pools, spec.seed)
        members = [p for p in pools if p.source.tier in stage.tiers]
        manifest = Manifest(
            stage.out,
            extra={
                "spec": spec.path,
                "stage": stage.name,
                "tiers": stage.tiers,
                "seed": spec.seed,
                "tokenizer": spec.tokenizer,
                "token_unit": counter.unit,
                "sequence_len": spec.sequence_len,
                "sources": report,
            },
        )
        _add_inputs(manifest, spec, members)
        chat = [r for r in train if "messages" in r]
        texts = [r for r in train if "messages" not in r]
        manifest.kept = write_jsonl(stage.out, (_strip(r) for r in chat))
        manifest.tokens = sum(r["_tokens"] for r in chat)
        write_rejects(stage.out, [r for p in members for r in p.rejects])
        manifest.write()
        result = {
            "stage": stage.name,
            "output": stage.out,
            "records": manifest.kept,
            "tokens": manifest.tokens,
            "shares": {
                k: {"requested": v["requested_share"], "realized": v["realized_share"]}
                for k, v in report.items()
            },
        }
        short = {k: f"{v['records']} of {v['requested_count']}" for k, v in report.items()
                 if v["requested_count"] and v["records"] < v["requested_count"]}  # fmt: skip
        if short:  # a count the source could not fill: the mix is smaller than asked
            result["short_counts"] = short
        if stage.text_out:
            result |= _write_text_part(stage, texts, manifest.inputs, report)
        if stage.val_out:
            result |= _write_val_part(stage, members, manifest.inputs, spec.seed)
        results.append(result)
    if stage_names and not results:
        raise DataError(
            f"{spec.path}: no stage named {', '.join(stage_names)}; stages are {[s.name for s in spec.stages]}"
        )
    return {"stages": results}
