"""How far a tuned model has moved from its base on general prompts, finer than a pass rate.

Two figures per tuned model, over the general prompts of the suites and the base model's
own greedy answers to them:

- `kl`: the mean per-token KL(base || tuned) of the next-token distributions, with both
  models reading the base's answer (teacher forcing). Zero for an unchanged model; it
  grows before any answer flips from right to wrong, so it can steer a choice where 24
  pass/fail prompts cannot.
- `changed`: the share of general prompts whose greedy answer is not, word for word, the
  base model's.
"""

from __future__ import annotations

from pathlib import Path


def _load(path: str | Path, device: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    model.eval()
    return tok, model


def sequences(tok, items: list[tuple[dict, str]]) -> list[tuple[list[int], int]]:
    """(token ids of prompt + answer, where the answer starts) per item; the answer ends
    with the end-of-turn token, so stopping is part of what is compared."""
    from cosmosage.tools.eval.generation import chat_ids

    out = []
    for prompt, answer in items:
        head = chat_ids(tok, prompt)
        tail = tok(answer, add_special_tokens=False)["input_ids"]
        if tok.eos_token_id is not None:
            tail = [*tail, tok.eos_token_id]
        out.append((head + tail, len(head)))
    return out


def _log_probs(model, ids: list[int], start: int, device: str):
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids], device=device)).logits[0]
    # the distribution that predicts token t is at position t - 1
    return torch.log_softmax(logits[start - 1 : len(ids) - 1].float(), dim=-1)


def kl_to_base(
    base: str | Path, tuned: str | Path, items: list[tuple[dict, str]], device: str = "cpu"
) -> dict:
    """Mean per-token KL(base || tuned) over the answer tokens of `items` (prompt, the base
    model's answer); both models must share a tokenizer."""
    tok, base_model = _load(base, device)
    seqs = sequences(tok, items)
    base_lp = [_log_probs(base_model, ids, start, device) for ids, start in seqs]
    del base_model
    tuned_tok, tuned_model = _load(tuned, device)
    if tuned_tok.get_vocab() != tok.get_vocab():
        raise ValueError(f"{tuned}: another tokenizer than the base {base}; KL is not defined")
    total, tokens, per_item = 0.0, 0, []
    for (ids, start), lp in zip(seqs, base_lp, strict=True):
        tlp = _log_probs(tuned_model, ids, start, device)
        kl = (lp.exp() * (lp - tlp)).sum(dim=-1)
        per_item.append(float(kl.mean()))
        total += float(kl.sum())
        tokens += kl.numel()
    return {"kl": total / max(tokens, 1), "tokens": tokens, "per_prompt": per_item}


def general_items(rows: list[dict], base_label: str = "base") -> list[tuple[dict, str]]:
    """(prompt, base answer) of every general prompt the base model answered."""
    out = []
    for r in rows:
        if r.get("kind") == "general" and isinstance(r.get(base_label), str):
            prompt = {k: r[k] for k in ("prompt", "system", "history") if r.get(k)}
            out.append((prompt, r[base_label]))
    return out


def changed_share(rows: list[dict], label: str, base_label: str = "base") -> float | None:
    """The share of general prompts whose answer differs from the base model's."""
    pairs = [
        (r[base_label], r[label])
        for r in rows
        if r.get("kind") == "general" and isinstance(r.get(base_label), str) and label in r
    ]
    if not pairs:
        return None
    return sum(" ".join(a.split()) != " ".join(b.split()) for a, b in pairs) / len(pairs)
