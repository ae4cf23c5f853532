"""Whole dataprep jobs: read sources, run the steps, write output + manifest + rejects.

Each `build_*` function is what one `cosmosage data ...` command does.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from dataprep import corpus as corpusmod
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
    """Documents -> cleaned, chunked completion JSONL (`{"text": ...}`), split by document."""
    tok = load_tokenizer(tokenizer)
    tok.model_max_length = 1 << 30  # whole documents are tokenized before chunking
    # Room for the BOS and EOS tokens Axolotl adds around each completion record.
    budget = sequence_len - 2
    manifest = Manifest(str(out), extra={"sequence_len": sequence_len, "tokenizer": tokenizer})
    val_manifest = Manifest(str(val_out)) if val_out else None
    rejects: list[Reject] = []
    docs = []
    for item in corpusmod.read_documents(inputs):
        if isinstance(item, Reject):
            rejects.append(item)
            manifest.dropped[item.reason] += 1
            continue
        manifest.add_input(item.source, license=item.meta.get("license", "unknown"), doc_id=item.id)
        docs.append(item)
    val_ids = {d.id for d in docs if corpusmod.is_validation(d.id, val_fraction, seed)}
    if val_out and val_fraction > 0 and not val_ids and len(docs) > 1:
        # Tiny corpora: keep at least one whole document for validation.
        val_ids = {docs[-1].id}
    train, val = [], []
    token_count = Counter()
    for doc in tqdm(docs, desc="chunk", unit="doc", disable=None):
        cleaned = corpusmod.clean(doc)
        side = "val" if doc.id in val_ids and val_out else "train"
        for rec in corpusmod.chunk(cleaned, tok, budget):
            n_tok = len(tok(rec["text"], add_special_tokens=False)["input_ids"])
            if n_tok > budget:
                rejects.append(Reject(doc.source, None, f"chunk {rec['chunk']} has {n_tok} tokens > {budget}"))
                manifest.dropped["chunk over budget"] += 1
                continue
            token_count[side] += n_tok
            (val if side == "val" else train).append(rec)
    manifest.kept = write_jsonl(out, train)
    manifest.tokens = token_count["train"]
    manifest.extra["documents"] = len(docs) - len(val_ids)
    write_rejects(out, rejects)
    manifest.write()
    result = {"output": str(out), "records": manifest.kept, "tokens": manifest.tokens}
    if val_manifest is not None:
        val_manifest.inputs = [i for i in manifest.inputs if i["doc_id"] in val_ids]
        val_manifest.kept = write_jsonl(val_out, val)
        val_manifest.tokens = token_count["val"]
        val_manifest.write()
        result["val_records"] = val_manifest.kept
    return result


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
