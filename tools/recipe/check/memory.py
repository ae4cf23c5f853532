"""Model size, sharding (DeepSpeed, FSDP) and the memory a stage needs per GPU."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmosage.tools.paths import ROOT
from cosmosage.tools.recipe.check.base import (
    BYTES_PER_PARAM,
    CUDA_ATTN,
    CUDA_ONLY,
    OVERHEAD,
    GiB,
    Problem,
    _truthy,
)
from cosmosage.tools.recipe.check.files import _local
from cosmosage.tools.recipe.check.template import _hub_cached_folder, check_flash_attention

# --------------------------------------------------------------------------- model size


def params_from_config(c: dict) -> int | None:
    """Parameter count of a decoder-only transformer from its config.json (dense models)."""
    try:
        h, layers, vocab = int(c["hidden_size"]), int(c["num_hidden_layers"]), int(c["vocab_size"])
        inter = int(c.get("intermediate_size") or 4 * h)
        heads = int(c.get("num_attention_heads") or 1)
        kv = int(c.get("num_key_value_heads") or heads)
    except (KeyError, TypeError, ValueError):
        return None
    head_dim = int(c.get("head_dim") or h // heads)
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q, o + k, v
    mlp = 3 * h * inter  # gate, up, down
    embed = vocab * h * (1 if c.get("tie_word_embeddings") else 2)
    return embed + layers * (attn + mlp + 2 * h) + h


def model_architecture(cfg: dict, meta: dict, root: Path) -> dict | None:
    """The model's config.json when it is on disk (a folder or the Hub cache), else the
    model fragment's `recipe.architecture` (the same keys)."""
    base = str(cfg.get("base_model") or "")
    local = _local(base, root)
    path = local / "config.json" if local and (local / "config.json").is_file() else None
    if path is None:
        cached = _hub_cached_folder(base, "config.json")
        path = cached / "config.json" if cached else None
    if path is not None:
        c = json.loads(path.read_text())
        c = c.get("text_config", c) if "hidden_size" not in c else c
        if params_from_config(c):
            return c
    arch = meta.get("architecture")
    return dict(arch) if isinstance(arch, dict) and params_from_config(arch) else None


def model_params(cfg: dict, meta: dict, root: Path) -> float | None:
    """From the model's config.json when it is on disk (a folder or the Hub cache),
    else the fragment's `recipe.architecture`, else its `recipe.params`."""
    arch = model_architecture(cfg, meta, root)
    if arch:
        return float(params_from_config(arch))
    return float(meta["params"]) if meta.get("params") else None


def method_of(cfg: dict, meta: dict) -> str:
    if meta.get("method"):
        return str(meta["method"])
    if cfg.get("relora"):
        return "relora"
    if cfg.get("load_in_4bit") or cfg.get("adapter") == "qlora":
        return "qlora"
    return "lora" if cfg.get("adapter") else "full"


# --------------------------------------------------------------------------- sharding


@dataclass
class Sharding:
    """How training states are spread over the GPUs, read from the DeepSpeed JSON or the
    FSDP keys (never from a file name)."""

    kind: str = "none"  # none | zero1 | zero2 | zero3 | fsdp-full | fsdp-grad-op
    shards: int = 1
    offload_optimizer: bool = False
    offload_params: bool = False
    source: str = ""
    note: str = ""

    def divides(self, part: str) -> int:
        """Over how many GPUs `part` (weights | grads | optimizer) is split."""
        split = {
            "zero1": {"optimizer"},
            "zero2": {"optimizer", "grads"},
            "zero3": {"optimizer", "grads", "weights"},
            "fsdp-grad-op": {"optimizer", "grads"},
            "fsdp-full": {"optimizer", "grads", "weights"},
        }.get(self.kind, set())
        return self.shards if part in split else 1


def _deepspeed_json(value: Any, root: Path) -> tuple[dict | None, str]:
    if isinstance(value, dict):
        return value, "the inline DeepSpeed config"
    path = _local(str(value), root)
    if path is None or not path.is_file():
        return None, f"DeepSpeed config {value} not found"
    try:
        return json.loads(path.read_text()), str(value)
    except json.JSONDecodeError as exc:
        return None, f"DeepSpeed config {value} is not JSON ({exc})"


def sharding(cfg: dict, meta: dict, root: Path) -> Sharding:
    gpus = max(int((meta.get("hardware") or {}).get("gpus") or 1), 1)
    if cfg.get("deepspeed"):
        ds, source = _deepspeed_json(cfg["deepspeed"], root)
        if ds is None:
            return Sharding(note=f"{source}: sharding unknown, estimated unsharded")
        zero = ds.get("zero_optimization") or {}
        stage = int(zero.get("stage") or 0)
        off_opt = str((zero.get("offload_optimizer") or {}).get("device", "none")) != "none"
        off_par = str((zero.get("offload_param") or {}).get("device", "none")) != "none"
        kind = {1: "zero1", 2: "zero2", 3: "zero3"}.get(stage, "none")
        return Sharding(kind, gpus, off_opt, off_par and stage == 3, f"{source} (stage {stage})")
    fsdp = cfg.get("fsdp_config") or {}
    legacy = cfg.get("fsdp") or []
    if fsdp or legacy:
        fsdp = fsdp if isinstance(fsdp, dict) else {}
        get = lambda k: fsdp.get(k, fsdp.get(f"fsdp_{k}"))  # noqa: E731
        strategy = str(get("sharding_strategy") or "").upper()
        reshard = get("reshard_after_forward")
        full = (
            reshard is not False
            and strategy not in ("SHARD_GRAD_OP", "NO_SHARD")
            and not (isinstance(legacy, list) and "shard_grad_op" in legacy)
        )
        if strategy == "NO_SHARD":
            return Sharding(source="FSDP (NO_SHARD)")
        offload = bool(get("offload_params"))
        return Sharding(
            "fsdp-full" if full else "fsdp-grad-op",
            gpus,
            offload,
            offload,
            "fsdp_config" + (" (reshard_after_forward)" if full else ""),
        )
    return Sharding()


# --------------------------------------------------------------------------- memory


def checkpointing(cfg: dict) -> bool:
    """Gradient (activation) checkpointing: Axolotl's key, or FSDP's own."""
    fsdp = cfg.get("fsdp_config") if isinstance(cfg.get("fsdp_config"), dict) else {}
    return any(
        _truthy(v)
        for v in (
            cfg.get("gradient_checkpointing"),
            fsdp.get("activation_checkpointing"),
            fsdp.get("fsdp_activation_checkpointing"),
        )
    )


def _dtype_bytes(cfg: dict) -> int:
    """2 for bf16/fp16 training (Axolotl then loads the weights in that dtype), else 4."""
    return 2 if _truthy(cfg.get("bf16")) or _truthy(cfg.get("fp16")) else 4


# the Axolotl plugin that keeps a full fine-tune's weights in fp32 under bf16 compute
# (tools/run/master_weights.py; named in recipes/_base/methods/full.yaml)
MASTER_WEIGHTS_PLUGIN = "cosmosage.tools.run.master_weights.FP32MasterWeights"


def master_copy(cfg: dict) -> str | None:
    """Who keeps fp32 master weights of a 16-bit full fine-tune: "deepspeed" (its
    mixed-precision optimizer), "plugin" (FP32MasterWeights: the weights themselves are
    fp32, compute bf16), or None (AdamW updates 16-bit weights, or training is fp32)."""
    if _dtype_bytes(cfg) != 2:
        return None
    if cfg.get("deepspeed"):
        return "deepspeed"
    if MASTER_WEIGHTS_PLUGIN in (cfg.get("plugins") or []):
        return "plugin"
    return None


def check_master_weights(cfg: dict, meta: dict) -> list[Problem]:
    """A full fine-tune in bf16/fp16 mixed precision outside DeepSpeed without the fp32
    master-weights plugin: Axolotl loads the weights in 16 bits and AdamW updates them
    there, so every update below half a bf16 step (about 1e-3 of the weight) rounds away."""
    if method_of(cfg, meta) != "full" or _dtype_bytes(cfg) != 2 or master_copy(cfg):
        return []
    precision = "bf16" if _truthy(cfg.get("bf16")) else "fp16"
    lr = cfg.get("learning_rate")
    at = f" at learning rate {lr}" if lr is not None else ""
    return [
        Problem(
            "precision",
            f"full fine-tune with `{precision}: {cfg.get(precision)}` outside DeepSpeed stores "
            "the weights in 16 bits with no fp32 master copy: AdamW's updates smaller than half "
            f"a {precision} step (most of them{at}) round away. Add `plugins: "
            f"[{MASTER_WEIGHTS_PLUGIN}]` (recipes/_base/methods/full.yaml has it; keep it beside "
            "any other plugin), or train under DeepSpeed",
        )
    ]


def _optimizer_state_bytes(cfg: dict, param_bytes: int, master: bool) -> float:
    """Optimizer bytes per trained parameter: 8-bit Adam keeps two 1-byte states; DeepSpeed
    keeps an fp32 master copy and two fp32 moments (12); torch AdamW keeps two moments in
    the parameter's dtype."""
    name = str(cfg.get("optimizer") or "adamw_torch")
    if "8bit" in name:
        return 2.0
    if master:
        return 12.0
    return 2.0 * param_bytes


def lora_targets(cfg: dict) -> list[str]:
    targets = cfg.get("lora_target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    if cfg.get("lora_target_linear") or not targets:
        return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return targets


def adapter_params(cfg: dict, arch: dict) -> int:
    """LoRA parameters: r x (in + out) for every targeted linear layer of every block."""
    h, layers = int(arch["hidden_size"]), int(arch["num_hidden_layers"])
    inter = int(arch.get("intermediate_size") or 4 * h)
    heads = int(arch.get("num_attention_heads") or 1)
    head_dim = int(arch.get("head_dim") or h // heads)
    kvd = int(arch.get("num_key_value_heads") or heads) * head_dim
    shapes = {
        "q_proj": (h, heads * head_dim),
        "k_proj": (h, kvd),
        "v_proj": (h, kvd),
        "o_proj": (heads * head_dim, h),
        "gate_proj": (h, inter),
        "up_proj": (h, inter),
        "down_proj": (inter, h),
    }
    r = int(cfg.get("lora_r") or 8)
    per_layer = sum(r * (a + b) for name, (a, b) in shapes.items() if name in lora_targets(cfg))
    return per_layer * layers


@dataclass
class MemoryEstimate:
    """Bytes per device while training; `parts` in the order they are printed."""

    parts: dict[str, float]
    per_device_of: str  # "GPU" or "CPU"
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        shown = " + ".join(f"{k} {v / GiB:.1f}" for k, v in self.parts.items() if v >= 0.05 * GiB)
        return f"~{self.total / GiB:.1f} GiB per {self.per_device_of} = {shown} GiB"


def _training_states(
    cfg: dict, arch: dict, method: str, params: float, d: int, embed: int
) -> tuple[float, float, float, float]:
    """Bytes of (weights, grads, optimizer states, adapters with their states) before
    sharding: fp32 master weights for a full fine-tune under the plugin, 4- or 8-bit
    frozen weights for QLoRA and 8-bit LoRA, fp32 adapters (PEFT) and full-size copies of
    the modules LoRA saves."""
    h, vocab = int(arch["hidden_size"]), int(arch["vocab_size"])
    master = master_copy(cfg) if method == "full" else None
    if method == "full" and master == "plugin":
        # the weights, their gradients and AdamW's moments all fp32
        weights, grads = params * 4, params * 4
        optimizer = params * _optimizer_state_bytes(cfg, 4, False)
        adapters = 0.0
    elif method == "full":
        weights, grads = params * d, params * d
        optimizer = params * _optimizer_state_bytes(cfg, d, master == "deepspeed")
        adapters = 0.0
    else:
        if method == "qlora" or _truthy(cfg.get("load_in_4bit")):
            # NF4: 4 bits + ~0.03 bytes of (double-quantized) block constants per weight;
            # embeddings and lm_head stay in the compute dtype
            weights = (params - embed) * 0.53 + embed * d
        elif _truthy(cfg.get("load_in_8bit")):
            weights = (params - embed) * 1.0 + embed * d  # LLM.int8 weights
        else:
            weights = params * d
        grads = 0.0
        n_adapter = adapter_params(cfg, arch)
        # PEFT keeps adapter weights in fp32: weight 4 + grad 4 + optimizer states
        adapters = n_adapter * (8 + _optimizer_state_bytes(cfg, 4, False))
        saved = [str(m) for m in cfg.get("lora_modules_to_save") or []]
        copies = sum(vocab * h for m in saved if m in ("embed_tokens", "lm_head"))
        adapters += copies * (2 * d + _optimizer_state_bytes(cfg, d, False))
        optimizer = 0.0
    return weights, grads, optimizer, adapters


def memory_estimate(cfg: dict, meta: dict, root: Path) -> MemoryEstimate | None:
    """Memory per device: training states (weights, grads, optimizer, adapters; divided
    by the shards that hold them), activations kept for backward (batch x sequence x
    layers x hidden, or one layer's worth more with gradient checkpointing), the logits
    and their gradient (batch x sequence x vocabulary), and a fixed overhead. Formula and
    comparison with published figures: docs/gpu.md."""
    arch = model_architecture(cfg, meta, root)
    params = model_params(cfg, meta, root)
    if not params:
        return None
    method = method_of(cfg, meta)
    hw = meta.get("hardware") or {}
    gpu = int(hw.get("gpus") or 0) > 0
    d = _dtype_bytes(cfg)
    shard = sharding(cfg, meta, root)
    notes = [shard.note] if shard.note else []
    parts: dict[str, float] = {}
    if arch is None:  # a parameter count only: the per-parameter rule of thumb
        total = params * BYTES_PER_PARAM.get(method, 16.0) * OVERHEAD
        parts["states+activations (rule of thumb)"] = total / shard.divides("weights")
        notes.append("no architecture known: activations and logits not estimated")
        return MemoryEstimate(parts, "GPU" if gpu else "CPU", notes)

    h, layers = int(arch["hidden_size"]), int(arch["num_hidden_layers"])
    vocab = int(arch["vocab_size"])
    inter = int(arch.get("intermediate_size") or 4 * h)
    heads = int(arch.get("num_attention_heads") or 1)
    head_dim = int(arch.get("head_dim") or h // heads)
    kvd = int(arch.get("num_key_value_heads") or heads) * head_dim
    embed = vocab * h * (1 if arch.get("tie_word_embeddings") else 2)

    # training states
    weights, grads, optimizer, adapters = _training_states(cfg, arch, method, params, d, embed)
    if shard.offload_params:
        weights = 0.0
    if shard.offload_optimizer:
        optimizer = 0.0
    parts["weights"] = weights / shard.divides("weights")
    if grads:
        parts["grads"] = grads / shard.divides("grads")
    if optimizer:
        parts["optimizer"] = optimizer / shard.divides("optimizer")
    if adapters:
        parts["adapters+states"] = adapters

    # activations: b x s tokens per device
    tokens = int(cfg.get("micro_batch_size") or 1) * int(cfg.get("sequence_len") or 2048)
    per_layer = 6 * h + 2 * kvd + 4 * inter  # saved for backward in one decoder block
    if method != "full" and float(cfg.get("lora_dropout") or 0) > 0:
        per_layer += 6 * h + inter  # each LoRA input's dropout copy
    if str(cfg.get("attn_implementation")) == "eager":
        per_layer += heads * int(cfg.get("sequence_len") or 2048)  # attention probabilities
    if checkpointing(cfg):
        acts = tokens * d * (layers * h + per_layer)  # layer inputs + one layer recomputed
        act_name = "activations (checkpointed)"
    else:
        acts = tokens * d * layers * per_layer
        act_name = "activations"
    parts[act_name] = float(acts)

    # logits: the model-dtype logits, fp32 log-probabilities kept for backward, their grad
    if _truthy(cfg.get("liger_fused_linear_cross_entropy")) or _truthy(
        cfg.get("cut_cross_entropy")
    ):
        logits = 0.0
        notes.append("fused linear cross-entropy: the logits are never materialized")
    elif _truthy(cfg.get("chunked_cross_entropy")):
        chunks = int(cfg.get("chunked_cross_entropy_num_chunks") or 8)
        logits = tokens * vocab * (d + 8 / chunks)
    else:
        logits = tokens * vocab * (d + 8)
    parts[f"logits ({tokens} tokens x {vocab} vocab)"] = logits

    subtotal = sum(parts.values())
    parts["overhead"] = 0.1 * subtotal + (GiB if gpu else 0.0)  # fragmentation, CUDA context
    return MemoryEstimate(parts, "GPU" if gpu else "CPU", notes)


def check_hardware(cfg: dict, meta: dict, root: Path = ROOT) -> list[Problem]:
    hw = meta.get("hardware") or {}
    problems = []
    if hw.get("name") == "cpu":
        for key, why in CUDA_ONLY.items():
            value = cfg.get(key)
            if value not in (None, False, "false", 0):
                problems.append(
                    Problem(
                        "cpu-profile",
                        f"`{key}: {value}` on the cpu profile: {why}; set it false or remove it",
                    )
                )
        if str(cfg.get("attn_implementation")) in CUDA_ATTN:
            problems.append(
                Problem(
                    "cpu-profile",
                    f"`attn_implementation: {cfg['attn_implementation']}` on the cpu profile needs "
                    "CUDA kernels; use sdpa or eager",
                )
            )
    problems += check_flash_attention(cfg)
    est = memory_estimate(cfg, meta, root)
    if est is None:
        return problems
    per_device = hw.get("gpu_memory_gb") if hw.get("gpus") else hw.get("memory_gb")
    params = model_params(cfg, meta, root) or 0
    method = method_of(cfg, meta)
    shard = sharding(cfg, meta, root)
    where = (
        f" with {shard.kind} over {shard.shards} GPUs ({shard.source})" if shard.shards > 1 else ""
    )
    notes = "".join(f"; {n}" for n in est.notes)
    if per_device and est.total / GiB > float(per_device):
        problems.append(
            Problem(
                "hardware",
                f"{method} training of a {params / 1e9:.2f}B-parameter model{where} needs about "
                f"{est.total / GiB:.0f} GiB per device ({est.describe()}{notes}); the "
                f"{hw.get('name')} profile has {per_device} GiB (use qlora/lora, a larger profile, "
                "ZeRO-3/FSDP across GPUs, a smaller micro_batch_size or sequence_len, or a fused "
                "cross-entropy for large vocabularies)",
            )
        )
    elif hw.get("gpus"):
        problems.append(
            Problem(
                "memory",
                f"{method}{where}: {est.describe()} of {per_device}{notes}",
                "info",
            )
        )
        problems += check_needless_checkpointing(cfg, meta, root, float(per_device))
    return problems


# gradient checkpointing recomputes the forward pass: about a quarter of a step's time
def check_needless_checkpointing(
    cfg: dict, meta: dict, root: Path, per_device: float
) -> list[Problem]:
    """Gradient checkpointing on where the estimate without it fits with a fifth to spare."""
    if not cfg.get("gradient_checkpointing"):
        return []
    without = memory_estimate({**cfg, "gradient_checkpointing": False}, meta, root)
    if without is None or without.total / GiB > 0.8 * per_device:
        return []
    return [
        Problem(
            "memory",
            f"gradient_checkpointing is on, but without it the estimate is "
            f"{without.total / GiB:.0f} GiB of {per_device:g} per device: it costs about a "
            "quarter of the throughput for memory not needed; set `gradient_checkpointing: false`",
            "warning",
        )
    ]
