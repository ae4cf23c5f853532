"""Tokenizers that only tests and benchmarks build: small byte-level BPEs for checking
code that must also handle Llama-3 / GPT-2 style tokenizers."""

from __future__ import annotations

# Llama-3's pre-tokenizer split: contractions, letter runs with one leading non-letter,
# digit groups of up to three, punctuation runs, newlines, other whitespace.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_byte_level_tokenizer(texts: list[str], vocab_size: int = 800, style: str = "llama3"):
    """A small byte-level BPE for checks of code that must also handle Llama-3 / GPT-2
    style tokenizers: Llama-3's split regex and ignore_merges ("llama3"), or GPT-2's
    built-in regex ("gpt2"), or GPT-2's with SmolLM2's empty normalizer sequence
    ("smollm2")."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if style == "llama3":
        tok = Tokenizer(models.BPE(ignore_merges=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    elif style in ("gpt2", "smollm2"):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        if style == "smollm2":
            tok.normalizer = normalizers.Sequence([])
    else:
        raise ValueError(f"style must be llama3, gpt2 or smollm2, not {style!r}")
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        show_progress=False,
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return tok
