"""Build a tiny Llama-style model offline: a byte-fallback BPE tokenizer trained on local
text (shaped like Llama/Mistral's so llama.cpp's GGUF converter accepts it) and a small
randomly initialised `LlamaForCausalLM`.

The result is an ordinary Hugging Face model folder that Axolotl, transformers, peft and
`transformers serve` load like any other.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from cosmosage.dataprep.corpus.sources import iter_input_files
from cosmosage.dataprep.io import atomic_path, read_text
from cosmosage.dataprep.records import DataError

SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]

# Mistral-style [INST] template: the end-of-turn token is eos, distinct from <pad>.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set messages = messages[1:] %}"
    "{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{% if loop.first and system %}[INST] {{ system }}\n\n{{ message['content'] }} [/INST]"
    "{% else %}[INST] {{ message['content'] }} [/INST]{% endif %}"
    "{% elif message['role'] == 'assistant' %} {{ message['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{% endif %}"
)

FORMAT = 2  # bump when the build changes, so cached tiny models are rebuilt

DEFAULTS = {
    "vocab_size": 1024,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
}


def train_tokenizer(texts: list[str], vocab_size: int):
    """Llama-style BPE: `▁` for spaces, byte fallback with the 256 <0xNN> tokens."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE

    def normalizer():
        return normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])

    # Train merges on the normalised text split before each `▁` (as SentencePiece's
    # split_by_whitespace does for Llama and Mistral, so no piece holds a `▁` after another
    # character), then rebuild the model with Llama's id layout: specials 0-3, bytes 4-259,
    # learned pieces after. The final tokenizer has no pre-tokenizer, like Llama's.
    draft = Tokenizer(BPE(unk_token="<unk>"))
    draft.normalizer = normalizer()
    draft.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(BYTE_TOKENS),
        special_tokens=SPECIAL,
        show_progress=False,
        min_frequency=2,
    )
    draft.train_from_iterator(texts, trainer=trainer)
    learned = json.loads(draft.to_str())["model"]
    vocab: dict[str, int] = {}
    for tok in SPECIAL + BYTE_TOKENS:
        vocab[tok] = len(vocab)
    for tok, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        if tok not in vocab:
            vocab[tok] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]

    tok = Tokenizer(
        BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    )
    tok.normalizer = normalizer()
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.add_special_tokens(SPECIAL)
    return tok


TEXT_SUFFIXES = {".md", ".mmd", ".txt", ".jsonl"}


def corpus_texts(inputs: list[str]) -> list[str]:
    texts = []
    for path, _ in iter_input_files(inputs, suffixes=TEXT_SUFFIXES):
        texts.extend(line for line in read_text(path).splitlines() if line.strip())
    if not texts:
        raise DataError(f"no text found in {', '.join(inputs)}")
    return texts


def fingerprint(inputs: list[str], params: dict) -> str:
    """Hash of the settings and the input files (by path inside each input, so the
    same folder named relatively or absolutely gives the same model)."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for item in inputs:
        base = Path(item)
        for path, _ in iter_input_files([item], suffixes=TEXT_SUFFIXES):
            h.update(str(path.relative_to(base) if base.is_dir() else path.name).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build_tiny_model(
    inputs: list[str], out: str | Path, seed: int = 0, force: bool = False, **overrides
) -> dict:
    """Write a tiny model folder at `out`; reuse it when inputs and settings are unchanged."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    params = {**DEFAULTS, **overrides, "seed": seed, "format": FORMAT}
    fp = fingerprint(inputs, params)
    stamp = out / "cosmosage-tiny.json"
    if not force and stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == fp:
        return {**json.loads(stamp.read_text()), "reused": True}

    raw = train_tokenizer(corpus_texts(inputs), params["vocab_size"])
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=params["max_position_embeddings"],
        padding_side="right",
        add_bos_token=True,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    # BOS is added by a post-processor so that `tokenizer(text)` starts with <s> as Llama's does.
    from tokenizers import processors

    bos_id = raw.token_to_id("<s>")
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    hf_tok._tokenizer.post_processor = raw.post_processor

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=params["hidden_size"],
        intermediate_size=params["intermediate_size"],
        num_hidden_layers=params["num_hidden_layers"],
        num_attention_heads=params["num_attention_heads"],
        num_key_value_heads=params["num_key_value_heads"],
        max_position_embeddings=params["max_position_embeddings"],
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())

    with atomic_path(out) as tmp:
        tmp.unlink()
        model.save_pretrained(tmp)
        hf_tok.save_pretrained(tmp)
        info = {"fingerprint": fp, "params": n_params, "vocab_size": len(hf_tok), **params}
        (tmp / "cosmosage-tiny.json").write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
    return {**info, "reused": False}
