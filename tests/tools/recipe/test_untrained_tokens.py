"""Chat tokens the base never trained (Llama-3.x: the llama3 template's header and
end-of-turn tokens): an adapter recipe must train their rows, or its model hardly learns
to stop. Read with Llama-3's real 128k vocabulary (tests/helpers/vocab.py)."""

from __future__ import annotations

from cosmosage.tools.paths import ROOT
from cosmosage.tools.recipe.check import check_rendered, check_untrained_tokens
from tests.tools.recipe.test_gpu_defects import found, real_vocab, stage, with_vocab

__all__ = ["real_vocab"]  # the session fixture, shared with test_gpu_defects

IDS = [128006, 128007, 128009]  # <|start_header_id|>, <|end_header_id|>, <|eot_id|>


def problems(name: str, vocab_folder, **change):
    r = with_vocab(stage(name), vocab_folder)
    for key, value in change.items():
        if value is None:
            r.config.pop(key, None)
        else:
            r.config[key] = value
    return check_untrained_tokens(r.config, r.meta, ROOT)


def test_llama3_adapters_without_the_chat_tokens_rows_fail(real_vocab):
    llama3 = real_vocab("llama-3")
    for name in ("llama-3.1-8b/instruct-lora-8bit", "llama-3.1-8b/fsdp-qlora"):
        (err,) = found(
            problems(name, llama3, peft_trainable_token_indices=None), "untrained-tokens"
        )
        assert "<|eot_id|>" in err and str(IDS) in err and "run on" in err
        assert f"{{embed_tokens: {IDS}, lm_head: {IDS}}}" in err  # the fix, as YAML
        # the embedding alone: the 8B's output layer is not tied, its rows stay frozen
        (err,) = found(problems(name, llama3, peft_trainable_token_indices=IDS), "untrained-tokens")
        assert f"lm_head rows {IDS}" in err and "embed_tokens rows" not in err
        # modules saved whole train every row
        saved = problems(name, llama3, peft_trainable_token_indices=None,
                         lora_modules_to_save=["embed_tokens", "lm_head"])  # fmt: skip
        assert found(saved, "untrained-tokens") == []


def test_the_bundled_llama3_adapters_train_those_rows(real_vocab):
    llama3 = real_vocab("llama-3")
    for name in ("llama-3.1-8b/instruct-lora-8bit", "llama-3.1-8b/fsdp-qlora"):
        got = problems(name, llama3)
        assert found(got, "untrained-tokens") == [], name
        assert "train in embed_tokens and lm_head" in found(got, "untrained-tokens", "info")[0]
    # Llama-3.2-1B ties its output layer to the embedding: the embedding's rows suffice
    got = problems("llama-3.2-1b/qlora-1x24gb", llama3)
    assert found(got, "untrained-tokens") == []
    assert "(tied to lm_head)" in found(got, "untrained-tokens", "info")[0]
    (err,) = found(
        problems("llama-3.2-1b/qlora-1x24gb", llama3, peft_trainable_token_indices=None),
        "untrained-tokens",
    )
    assert f"`peft_trainable_token_indices: {IDS}`" in err


def test_full_fine_tunes_and_other_models_are_not_asked(real_vocab):
    llama3 = real_vocab("llama-3")
    assert problems("llama-3.1-8b/instruct-full", llama3) == []  # every row trains
    assert problems("llama-3.1-8b/pretrain-full", llama3) == []  # completion: no template
    r = stage("mistral-7b/instruct-qlora")  # no untrained_tokens in its fragment
    assert "untrained_tokens" not in r.meta
    assert not [p for p in check_rendered(r) if p.check == "untrained-tokens"]
