"""Whole dataprep jobs: read sources, run the steps, write output + manifest + rejects.

Each `build_*` function is what one `cosmosage data ...` command does.
"""

from __future__ import annotations

import random
from pathlib import Path

from dataprep.io import Manifest, Reject, read_jsonl, write_jsonl, write_rejects


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path)


def build_corpus(
    inputs: list[str],
    out: str | Path,
    tokenizer: str,
    sequence_len: int,
    val_out: str | Path | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> dict:
    """Documents -> cleaned, deduplicated, token-exact completion JSONL (`{"text": ...}`),
    split by document. The full set of options is `dataprep.pipeline.build_files`."""
    from dataprep.pipeline import CorpusConfig, build_files

    cfg = CorpusConfig(sequence_len=sequence_len, val_fraction=val_fraction, seed=seed)
    return build_files(list(inputs), out, tokenizer, cfg, val_out=val_out)


def build_chat(
    inputs: list[str],
    out: str | Path,
    val_out: str | Path | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    system_prompt: str | None = None,
) -> dict:
    """Q&A / chat sources (ShareGPT, Alpaca, camel-ai, messages) -> shuffled chat JSONL."""
    from dataprep.convert import ConvertOptions, convert, public, reason_kind

    opts = ConvertOptions(system_prompt=system_prompt)
    manifest = Manifest(str(out))
    rejects: list[Reject] = []
    records = []
    for path in inputs:
        manifest.add_input(path)
        for rec in convert(read_jsonl(path), str(path), opts):
            if isinstance(rec, Reject):
                rejects.append(rec)
                manifest.dropped[reason_kind(rec.reason)] += 1
                continue
            records.append(public(rec))
    rng = random.Random(seed)
    rng.shuffle(records)
    n_val = round(len(records) * val_fraction) if val_out else 0
    if val_out and val_fraction > 0 and n_val == 0 and len(records) > 1:
        n_val = 1
    val, train = records[:n_val], records[n_val:]
    manifest.kept = write_jsonl(out, train)
    write_rejects(out, rejects)
    manifest.write()
    result = {"output": str(out), "records": manifest.kept, "rejected": len(rejects)}
    if val_out:
        vm = Manifest(str(val_out), inputs=manifest.inputs)
        vm.kept = write_jsonl(val_out, val)
        vm.write()
        result["val_records"] = vm.kept
    return result
