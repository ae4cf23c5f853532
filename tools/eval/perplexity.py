"""Perplexity of a causal LM on a held-out text, with a sliding window.

The text is tokenized once. Windows of `max_length` tokens start every `stride` tokens;
each window scores only the tokens the previous one did not, so every token after the first
is scored exactly once, with between `max_length - stride` and `max_length - 1` tokens of
context (fewer at the start of the text). A smaller stride gives each token more context
and costs more forward passes; with `stride == max_length` the windows do not overlap and
the first token of each window, having no context in it, is not scored.
"""

from __future__ import annotations

import math
from pathlib import Path

from tqdm import tqdm

from cosmosage.dataprep.records import DataError, decode_text


def perplexity(
    model_path: str | Path,
    text_path: str | Path,
    *,
    max_length: int = 256,
    stride: int = 128,
) -> dict:
    """Return {"perplexity", "tokens", "nll"} of the model on the text in `text_path`:
    `nll` is the summed negative log-likelihood (nats) of the `tokens` scored, and
    perplexity is exp(nll / tokens). Runs in float32 on the CPU."""
    if max_length < 2:
        raise ValueError("max_length must be at least 2 tokens")
    if not 1 <= stride <= max_length:
        raise ValueError("stride must be between 1 and max_length")
    model_path, text_path = Path(model_path), Path(text_path)
    if not (model_path / "config.json").is_file():
        raise DataError(f"{model_path}: not a model folder (no config.json)")
    if not text_path.is_file():
        raise DataError(f"{text_path}: no such text file")
    text = decode_text(text_path.read_bytes(), str(text_path))  # a binary file is an error

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.to("cpu").eval()
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise ValueError(f"max_length {max_length} exceeds the model's {limit} positions")

    # verbose=False: a text longer than the model's context is expected here
    ids = torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.long)
    if len(ids) < 2:
        raise DataError(f"{text_path}: too little text to score (under two tokens)")
    return _sliding_nll(model, ids, max_length, stride)


def _sliding_nll(model, ids, max_length: int, stride: int) -> dict:
    import torch

    n = len(ids)
    starts = [0]
    while starts[-1] + max_length < n:
        starts.append(starts[-1] + stride)
    nll = 0.0
    scored = 0
    done = 1  # tokens [0, done) are scored or have no context (the first)
    with torch.inference_mode():
        for begin in tqdm(starts, desc="perplexity", unit="window", disable=None):
            end = min(begin + max_length, n)
            first = max(done, begin + 1)  # a token needs one token of context in the window
            if first >= end:
                continue
            logits = model(ids[begin:end].unsqueeze(0)).logits[0].float()
            # logits at position p predict token p + 1
            logprobs = torch.log_softmax(logits[first - 1 - begin : end - 1 - begin], dim=-1)
            targets = ids[first:end]
            nll -= logprobs.gather(1, targets.unsqueeze(1)).sum().item()
            scored += end - first
            done = end
    return {"perplexity": math.exp(nll / scored), "tokens": scored, "nll": nll}
