"""Defects that make a GPU recipe waste days without an error, and the checks that now
catch them. Each test shows the check failing on the recipe as it was and passing on the
recipe as it is.

The end-of-turn tests render chat templates with REAL tokenizers obtained offline
(tests/helpers/vocab.py): Mistral-7B-v0.1's own SentencePiece model from the
mistral-common package, and llama.cpp's vocabulary-only GGUFs of Llama-3 and Llama-2
from the llama-cpp-python sdist; SmolLM2's comes from the imported model. No stand-in
tokenizer is hand-made here.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from cosmosage.tools.paths import ROOT
from cosmosage.tools.recipe.check import (
    BYTES_PER_PARAM,
    GB,
    OVERHEAD,
    GiB,
    Problem,
    check_checkpoints,
    check_deprecated,
    check_end_of_turn,
    check_hardware,
    check_relora,
    check_rendered,
    disk_estimate,
    memory_estimate,
    model_params,
    sharding,
)
from cosmosage.tools.recipe.render import Rendered, list_recipes, render
from tests.helpers import vocab

# GPU stage recipes whose header comment states their memory and disk
# every GPU stage (a recipe of its own with a hardware profile that has GPUs)
HEADERS = [
    n
    for n in list_recipes()
    if not render(n).stages and (render(n).meta.get("hardware") or {}).get("gpus")
]


def stage(name: str) -> Rendered:
    r = render(name)
    return Rendered(name, copy.deepcopy(r.config), copy.deepcopy(r.meta))


def found(problems: list[Problem], check: str, severity: str = "error") -> list[str]:
    return [p.message for p in problems if p.check == check and p.severity == severity]


def gpu_stages() -> list[str]:
    out = []
    for name in list_recipes():
        top = render(name)
        for s in top.stages or [name]:
            r = render(s)
            if int((r.meta.get("hardware") or {}).get("gpus") or 0) and s not in out:
                out.append(s)
    return out


@pytest.fixture(scope="session")
def real_vocab() -> Callable[[str], Path]:
    """build/tokenizers/<name>/ for a real vocabulary (made on first use, cached); the
    test is skipped, with the reason, only when its package cannot be had here."""
    made: dict[str, Path | Exception] = {}

    def get(name: str) -> Path:
        if name not in made:
            try:
                made[name] = vocab.tokenizer_folder(name)
            except vocab.VocabUnavailable as exc:
                made[name] = exc
        got = made[name]
        if isinstance(got, Exception):
            pytest.skip(f"the {vocab.VOCABS[name].family} vocabulary cannot be had: {got}")
        return got

    return get


def with_vocab(r: Rendered, folder: Path) -> Rendered:
    """The recipe with its tokenizer read from `folder` (the model fragment's local copy)."""
    r.meta.setdefault("tokenizer", {})["local_copy"] = str(folder)
    return r


# --------------------------------------------------------------------------- tokenizers


@pytest.mark.parametrize("name", ["llama-3", "llama-2"])
def test_the_llama_cpp_vocabularies_tokenize_as_llama_cpp_says(name, real_vocab):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_vocab(name))
    pairs = vocab.reference_tokenizations(name)
    assert len(pairs) > 40
    wrong = [t for t, ids in pairs if tok.encode(t, add_special_tokens=False) != ids]
    assert wrong == []


def test_the_mistral_vocabulary_tokenizes_as_its_sentencepiece_model(real_vocab):
    import sentencepiece
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_vocab("mistral-7b-v0.1"))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(vocab.mistral_sentencepiece_model()))
    texts = [t for t, _ in vocab.reference_tokenizations("llama-2")]
    assert [tok.encode(t, add_special_tokens=False) for t in texts] == [sp.encode(t) for t in texts]
    assert len(tok) == 32000 and (tok.bos_token, tok.eos_token, tok.unk_token) == (
        "<s>",
        "</s>",
        "<unk>",
    )
    assert tok.encode("Hi")[0] == tok.bos_token_id == 1


def test_the_families_specials(real_vocab):
    from transformers import AutoTokenizer

    llama3 = AutoTokenizer.from_pretrained(real_vocab("llama-3"))
    assert len(llama3) == 128256 and llama3.eos_token == "<|end_of_text|>"
    assert llama3.encode("<|eot_id|>", add_special_tokens=False) == [128009]
    assert llama3.encode("Hi")[0] == 128000  # bos added, as Llama-3's own tokenizer does
    for name in ("mistral-7b-v0.1", "llama-2"):
        tok = AutoTokenizer.from_pretrained(real_vocab(name))
        assert len(tok.encode("<|im_end|>", add_special_tokens=False)) > 1  # no ChatML tokens


# --------------------------------------------------------------------------- 1. end of turn


def test_chatml_on_mistral_was_never_trained_to_stop(real_vocab):
    for name in ("mistral-7b-v0.1", "llama-2"):
        r = with_vocab(stage("mistral-7b/instruct-qlora"), real_vocab(name))
        r.config["chat_template"] = "chatml"  # the fragment as it was
        errs = found(check_end_of_turn(r.config, r.meta, ROOT), "end-of-turn")
        assert len(errs) == 1, (name, errs)
        assert "'<|im_end|>', which this tokenizer encodes as 7 tokens" in errs[0]
        assert "['</s>']" in errs[0] and "never learns to stop" in errs[0]


def test_mistral_now_ends_every_answer_with_a_trained_eos(real_vocab):
    r = with_vocab(stage("mistral-7b/instruct-qlora"), real_vocab("mistral-7b-v0.1"))
    assert r.config["chat_template"] == "mistral_v1"
    problems = check_end_of_turn(r.config, r.meta, ROOT)
    assert found(problems, "end-of-turn") == [] and found(problems, "end-of-turn", "warning") == []
    infos = found(problems, "end-of-turn", "info")
    assert infos and all("'</s>', one token that trains" in m for m in infos)


def test_chatml_with_added_tokens_trains_only_with_its_embeddings(real_vocab):
    r = with_vocab(stage("mistral-7b/instruct-qlora"), real_vocab("mistral-7b-v0.1"))
    r.config.update(chat_template="chatml", eot_tokens=["<|im_end|>"])
    errs = found(check_end_of_turn(r.config, r.meta, ROOT), "end-of-turn")
    assert any("encoded as multiple tokens" in e for e in errs), errs  # Axolotl's refusal
    r.config["tokens"] = ["<|im_start|>", "<|im_end|>"]
    errs = found(check_end_of_turn(r.config, r.meta, ROOT), "end-of-turn")
    assert any("lora_modules_to_save" in e for e in errs), errs  # new rows must train
    r.config["lora_modules_to_save"] = ["embed_tokens", "lm_head"]
    problems = check_end_of_turn(r.config, r.meta, ROOT)
    assert found(problems, "end-of-turn") == []
    # it trains, but generation stops at eos only
    assert any(
        "'<|im_end|>' trains, but eos is '</s>'" in w
        for w in found(problems, "end-of-turn", "warning")
    )


@pytest.mark.parametrize("name", ["llama-3.2-1b/qlora-1x24gb", "llama-3.1-8b/instruct-lora-8bit"])
def test_llama3_eot_id_was_never_trained(name, real_vocab):
    r = with_vocab(stage(name), real_vocab("llama-3"))
    old = copy.deepcopy(r)
    old.config["special_tokens"].pop("eos_token")  # the fragment as it was
    errs = found(check_end_of_turn(old.config, old.meta, ROOT), "end-of-turn")
    assert len(errs) == 1 and "'<|eot_id|>', which this tokenizer encodes as one token" in errs[0]
    assert "['<|end_of_text|>']" in errs[0] and "eos_token: '<|eot_id|>'" in errs[0]
    problems = check_end_of_turn(r.config, r.meta, ROOT)
    assert found(problems, "end-of-turn") == [] and found(problems, "end-of-turn", "warning") == []
    assert any(
        "'<|eot_id|>', one token that trains" in m for m in found(problems, "end-of-turn", "info")
    )
    # Axolotl's other fix, eot_tokens, trains it too but leaves eos for generation
    old.config["eot_tokens"] = ["<|eot_id|>"]
    problems = check_end_of_turn(old.config, old.meta, ROOT)
    assert found(problems, "end-of-turn") == [] and found(problems, "end-of-turn", "warning")


def test_an_untrained_terminator_fails(real_vocab):
    r = with_vocab(stage("mistral-7b/instruct-qlora"), real_vocab("mistral-7b-v0.1"))
    r.config["datasets"][0]["train_on_eos"] = "none"
    errs = found(check_end_of_turn(r.config, r.meta, ROOT), "end-of-turn")
    assert len(errs) == 1 and "'</s>' follows each assistant turn but is not trained" in errs[0]


def test_the_tiny_tokenizer_has_no_chatml_tokens(tiny_model):
    r = stage("tiny/qlora")
    assert check_rendered(r) and not [p for p in check_rendered(r) if p.severity == "error"]
    r.config["chat_template"] = "chatml"  # accepted by `recipe check` until now
    errs = found(check_rendered(r), "end-of-turn")
    assert len(errs) == 1 and "7 tokens" in errs[0] and "tiny-llama" in errs[0]


@pytest.mark.real_model
def test_smollm2_chatml_trains_its_im_end(smollm2):
    r = stage("smollm2/lora-facts")
    r.config["base_model"] = str(smollm2)  # the session fixture: the imported model
    problems = check_end_of_turn(r.config, r.meta, ROOT)
    assert found(problems, "end-of-turn") == []
    assert any(
        "'<|im_end|>', one token that trains" in m for m in found(problems, "end-of-turn", "info")
    )
    r.config["chat_template"] = "llama3"  # a template whose terminator it does not have
    errs = found(check_end_of_turn(r.config, r.meta, ROOT), "end-of-turn")
    assert len(errs) == 1 and "'<|eot_id|>'" in errs[0]


def test_without_a_tokenizer_on_disk_the_render_is_skipped_with_a_warning():
    r = stage("mistral-7b/instruct-qlora")
    r.meta["tokenizer"]["local_copy"] = "build/tokenizers/nowhere"
    problems = check_end_of_turn(r.config, r.meta, ROOT)
    assert [p.severity for p in problems] == ["warning"]
    assert "make tokenizers" in problems[0].message


# --------------------------------------------------------------------------- 2. checkpoints


def test_the_best_checkpoint_was_not_protected_from_rotation():
    r = stage("mistral-7b/pretrain-full")
    old = copy.deepcopy(r.config)
    old.pop("metric_for_best_model")  # the method fragment as it was
    errs = found(check_checkpoints(old), "checkpoints")
    assert len(errs) == 1 and "save_total_limit 4" in errs[0] and "lowest eval loss" in errs[0]
    r2 = stage("llama-3.2-1b/qlora-1x24gb")
    r2.config.pop("metric_for_best_model")
    assert "save_total_limit 4 (default)" in found(check_checkpoints(r2.config), "checkpoints")[0]
    for name in gpu_stages():
        assert found(check_checkpoints(stage(name).config), "checkpoints") == [], name


def test_transformers_rotates_the_best_checkpoint_away_unless_it_knows_the_best(tmp_path):
    """What the check guards against, in transformers' own rotation: six saves, the best
    at step 1, the limit 4."""
    from transformers.trainer_utils import rotate_checkpoints

    for protect in (False, True):
        out = tmp_path / str(protect)
        for step in range(1, 7):
            (out / f"checkpoint-{step}").mkdir(parents=True)
        best = str(out / "checkpoint-1") if protect else None
        rotate_checkpoints(str(out), save_total_limit=4, best_model_checkpoint=best)
        assert (out / "checkpoint-1").is_dir() == protect


def test_saves_where_no_eval_ran_fail():
    r = stage(
        "quickstart-tiny/pretrain"
        if "quickstart-tiny/pretrain" in list_recipes()
        else "tiny/relora"
    )
    r.config.update(save_steps=15, eval_steps=10)
    errs = found(check_checkpoints(r.config), "checkpoints")
    assert len(errs) == 1 and "not a multiple of eval_steps" in errs[0]
    # below 1 a step count is a share of the run: 0.5 is a multiple of 0.25, not of 0.3
    r.config.update(save_steps=0.5, eval_steps=0.25)
    assert not found(check_checkpoints(r.config), "checkpoints")
    r.config.update(save_steps=0.5, eval_steps=0.3)
    assert "not a multiple of eval_steps" in found(check_checkpoints(r.config), "checkpoints")[0]
    r.config.update(save_steps=0.5, eval_steps=10)
    assert "counted differently" in found(check_checkpoints(r.config), "checkpoints")[0]


def test_evals_between_saves_are_flagged():
    r = stage("scratch/150m")  # eval and save every 1000 steps: nothing to say
    assert not found(check_checkpoints(r.config), "checkpoints", "warning")
    r.config.update(eval_steps=500)  # as the recipe had it: every other eval unselectable
    (msg,) = found(check_checkpoints(r.config), "checkpoints", "warning")
    assert "2 times per save" in msg and "set `eval_steps: 1000`" in msg
    r.config.update(eval_steps=None, save_steps=None, saves_per_epoch=2, evals_per_epoch=8)
    (msg,) = found(check_checkpoints(r.config), "checkpoints", "warning")
    assert "4 times per save" in msg and "evals_per_epoch: 2" in msg
    r.config.update(evals_per_epoch=2)
    assert not found(check_checkpoints(r.config), "checkpoints", "warning")


def test_disk_is_printed_and_a_zero3_7b_checkpoint_is_about_100_gb():
    r = stage("mistral-7b/pretrain-full")
    total, text = disk_estimate(r.config, r.meta, ROOT)
    assert "4 checkpoints x 101.4 GB" in text  # 7.24e9 x (2 B weights + 12 B fp32 Adam)
    assert 420 < total / GB < 450
    assert any(p.check == "disk" and p.severity == "info" for p in check_rendered(r))


def test_disk_counts_only_the_checkpoints_a_run_writes(tmp_path):
    r = stage("smoke/1gpu")  # 20 steps, a save every 20: one checkpoint, not the limit's 4
    assert ": 1 checkpoint x " in disk_estimate(r.config, r.meta, tmp_path)[1]
    r.config.update(max_steps=50, save_steps=20)  # saves at 20, 40 and the last step
    assert ": 3 checkpoints x " in disk_estimate(r.config, r.meta, tmp_path)[1]
    r.config.update(max_steps=None, num_epochs=1)  # no data yet: steps unknown, the limit
    assert ": 4 checkpoints x " in disk_estimate(r.config, r.meta, tmp_path)[1]
    data = tmp_path / "build" / "data" / "quickstart-tiny"  # 2 rows x 1024 tokens a step
    data.mkdir(parents=True)
    (data / "corpus.jsonl").write_text('{"text": "x"}\n')
    (data / "corpus.manifest.json").write_text(json.dumps({"tokens": 40 * 2048}))
    assert ": 2 checkpoints x " in disk_estimate(r.config, r.meta, tmp_path)[1]  # 40 steps


@pytest.mark.parametrize("name", HEADERS)
def test_each_gpu_header_states_the_memory_and_disk_the_check_computes(name):
    """Every GPU stage: the estimate comes from the model's shape (no rule of thumb), the
    header states it and the disk, and the check gives no memory advice against the
    recipe (such as gradient checkpointing that the estimate does not need)."""
    r = stage(name)
    header = (ROOT / "recipes" / f"{name}.yaml").read_text().splitlines()[0]
    mem = re.search(r"~(\d+(?:\.\d+)?) GiB", header)
    disk = re.search(r"disk ~(\d+(?:\.\d+)?) GB", header)
    assert mem and disk, header
    est = memory_estimate(r.config, r.meta, ROOT)
    assert not any("rule of thumb" in k for k in est.parts), (name, est.describe())
    assert abs(float(mem.group(1)) - est.total / GiB) <= max(1.0, 0.1 * float(mem.group(1)))
    advice = [
        str(p)
        for p in check_hardware(r.config, r.meta, ROOT)
        if p.check in ("memory", "hardware") and p.severity != "info"
    ]
    assert advice == [], advice
    assert abs(float(disk.group(1)) - disk_estimate(r.config, r.meta, ROOT)[0] / GB) <= max(
        1.0, 0.1 * float(disk.group(1))
    )


# --------------------------------------------------------------------------- 3. attention


def test_flash_attention_flag_made_every_attn_override_fail():
    r = stage("mistral-7b/instruct-qlora")
    old = {k: v for k, v in r.config.items() if k != "attn_implementation"}
    old["flash_attention"] = True  # the hardware fragment as it was
    assert found(check_deprecated(old), "deprecated", "warning")
    old["attn_implementation"] = "sdpa"  # --set attn_implementation=sdpa
    errs = found(check_rendered(Rendered(r.name, old, r.meta)), "axolotl")
    assert errs and "cannot be combined with legacy" in errs[0]


@pytest.mark.parametrize("name", ["mistral-7b/instruct-qlora", "llama-3.2-1b/qlora-1x24gb"])
def test_attn_implementation_can_be_overridden_on_gpu_recipes(name):
    r = render(name, sets=["attn_implementation=sdpa"])
    problems = check_rendered(Rendered(name, r.config, r.meta))
    assert [p for p in problems if p.severity == "error"] == []
    assert found(problems, "deprecated", "warning") == []


def test_no_recipe_carries_a_deprecated_key():
    for name in list_recipes():
        for s in render(name).stages or [name]:
            assert check_deprecated(render(s).config) == [], s


def test_the_cpu_profile_uses_sdpa_and_refuses_flash_kernels(tiny_model):
    r = stage("tiny/qlora")
    assert r.config["attn_implementation"] == "sdpa" and "flash_attention" not in r.config
    r.config["attn_implementation"] = "flash_attention_2"
    assert found(check_rendered(r), "cpu-profile")


# --------------------------------------------------------------------------- 5. ReLoRA


def test_relora_had_no_first_warmup():
    r = stage("mistral-7b/relora")
    old = {k: v for k, v in r.config.items() if k != "warmup_ratio"}
    errs = found(check_relora(old, r.meta, ROOT), "relora")
    assert len(errs) == 1 and "starts at the full learning rate" in errs[0]
    assert found(check_relora(r.config, r.meta, ROOT), "relora") == []


def _corpus(root: Path, tokens: int) -> None:
    data = root / "build" / "data" / "cosmology"
    data.mkdir(parents=True, exist_ok=True)
    (data / "corpus.jsonl").write_text('{"text": "x"}\n')
    (data / "corpus.manifest.json").write_text(json.dumps({"tokens": tokens}))


def test_relora_on_a_small_corpus_is_plain_lora(tmp_path):
    r = stage("mistral-7b/relora")  # 2 x 4096 x 8 = 65,536 tokens a step, restarts every 150
    _corpus(tmp_path, 5_000_000)
    warns = found(check_relora(r.config, r.meta, tmp_path), "relora", "warning")
    assert len(warns) == 1 and "no restart happens" in warns[0] and "9.8M tokens" in warns[0]
    _corpus(tmp_path, 50_000_000)
    assert found(check_relora(r.config, r.meta, tmp_path), "relora", "warning") == []
    assert "5 restart(s)" in found(check_relora(r.config, r.meta, tmp_path), "relora", "info")[0]
    notes = found(check_relora(r.config, r.meta, tmp_path / "empty"), "relora", "info")
    assert "restarts not estimated" in notes[0] and "no manifest" in notes[0]


# --------------------------------------------------------------------------- 6. memory


def test_logits_make_the_1b_qlora_recipe_need_far_more_than_8_gb():
    r = stage("llama-3.2-1b/qlora-1x24gb")
    old = float(r.meta["params"]) * BYTES_PER_PARAM["qlora"] * OVERHEAD / GiB
    assert 1.0 < old < 1.2  # what the check used to say
    est = memory_estimate(r.config, r.meta, ROOT)
    logits = next(v for k, v in est.parts.items() if k.startswith("logits"))
    assert logits == 4 * 2048 * 128256 * (2 + 4 + 4)  # bf16 logits, fp32 log-probs, grad
    assert 9.5 < logits / GiB < 10 and 12 < est.total / GiB < 18
    assert est.total / GiB < r.meta["hardware"]["gpu_memory_gb"]


def test_gradient_checkpointing_keeps_one_layer_input_per_layer():
    r = stage("mistral-7b/instruct-qlora")
    on = memory_estimate(r.config, r.meta, ROOT).parts
    r.config["gradient_checkpointing"] = False
    off = memory_estimate(r.config, r.meta, ROOT).parts
    ckpt = on["activations (checkpointed)"]
    assert off["activations"] > 4 * ckpt


def test_sharding_is_read_from_the_deepspeed_json_and_fsdp_keys(tmp_path):
    meta = {"hardware": {"gpus": 8}}
    (tmp_path / "zero3_named.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    (tmp_path / "plain.json").write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    assert sharding({"deepspeed": "zero3_named.json"}, meta, tmp_path).kind == "zero2"
    assert sharding({"deepspeed": "plain.json"}, meta, tmp_path).kind == "zero3"
    fsdp = {"fsdp_version": 2, "fsdp_config": {"reshard_after_forward": True}}
    assert sharding(fsdp, meta, tmp_path).kind == "fsdp-full"
    fsdp["fsdp_config"]["reshard_after_forward"] = False
    assert sharding(fsdp, meta, tmp_path).kind == "fsdp-grad-op"
    assert sharding({}, meta, tmp_path).kind == "none"


def test_zero_paper_figures_for_mixed_precision_adam():
    """ZeRO (Rajbhandari et al. 2020), Figure 1: a 7.5B model on 64 GPUs holds 120 GB of
    training states per GPU unsharded (16 bytes a parameter), 31.4 GB with the optimizer
    states partitioned, 16.6 GB with the gradients too, 1.9 GB with everything."""
    r = stage("mistral-7b/pretrain-full")
    params = model_params(r.config, r.meta, ROOT)
    per_param = {}
    for stage_no in (0, 1, 2, 3):
        cfg = copy.deepcopy(r.config)
        cfg["deepspeed"] = {"zero_optimization": {"stage": stage_no}}
        meta = {**r.meta, "hardware": {**r.meta["hardware"], "gpus": 64}}
        parts = memory_estimate(cfg, meta, ROOT).parts
        states = parts["weights"] + parts["grads"] + parts["optimizer"]
        per_param[stage_no] = states / params
    published = {0: 120.0, 1: 31.4, 2: 16.6, 3: 1.9}
    for stage_no, gb in published.items():
        assert abs(per_param[stage_no] * 7.5e9 / GB - gb) < 0.1, (stage_no, per_param)


@pytest.mark.parametrize("method, published", [("qlora", 7.4), ("lora", 16.2)])
def test_torchtune_llama_3_1_8b_figures(method, published):
    """torchtune's README: Llama-3.1-8B on one GPU, batch 2 x 2048 packed tokens,
    activation checkpointing, chunked cross-entropy: QLoRA 7.4 GiB, LoRA 16.2 GiB peak.
    Our estimate of the same setting, without the CUDA context and fragmentation, is
    above it by less than 25%."""
    arch = yaml.safe_load((ROOT / "recipes/_base/models/llama-3.1-8b.yaml").read_text())
    cfg = {
        "base_model": "meta-llama/Llama-3.1-8B",
        "adapter": method,
        "load_in_4bit": method == "qlora",
        "lora_r": 8,
        "lora_target_modules": ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "lora_dropout": 0.0,
        "micro_batch_size": 2,
        "sequence_len": 2048,
        "gradient_checkpointing": True,
        "chunked_cross_entropy": True,
        "bf16": True,
        "optimizer": "adamw_torch",
    }
    meta = {
        "method": method,
        "architecture": arch["recipe"]["architecture"],
        "hardware": {"gpus": 1},
    }
    parts = memory_estimate(cfg, meta, ROOT).parts
    ours = (sum(parts.values()) - parts["overhead"]) / GiB
    assert published <= ours <= published * 1.25, parts
