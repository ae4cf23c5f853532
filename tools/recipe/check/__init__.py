"""`recipe check`: Axolotl's own validation plus what Axolotl cannot know.

Every check returns a list of `Problem`s; nothing here trains or downloads. Checks that
need the tokenizer read it from a local model folder, the Hugging Face cache, or the
copy of the same vocabulary that the model fragment names (`recipe.tokenizer.local_copy`),
and fall back to the fragment's `recipe.tokenizer` block for the special tokens.

Severities: `error` fails the check (and `recipe run`), `warning` is printed, `info` is
an estimate the check prints (disk, memory, restarts). docs/gpu.md explains the memory
and disk formulas.

One module per section: base (`Problem`, the constants), schema, files, template
(tokenizer, chat template, end of turn), untrained (chat tokens an adapter keeps frozen),
checkpoints, memory (size, sharding, memory), disk, distill, relora (restarts, warmup),
select and soup. `check_rendered` runs them all on one stage.
"""

from __future__ import annotations

from pathlib import Path

from cosmosage.dataprep.chat.labels import IGNORE, LABEL_KEYS, TOKENIZER_KEYS
from cosmosage.tools.paths import ROOT
from cosmosage.tools.recipe.check.base import (
    AXOLOTL_SAVE_TOTAL_LIMIT,
    BYTES_PER_PARAM,
    CUDA_ATTN,
    CUDA_ONLY,
    GB,
    OVERHEAD,
    GiB,
    Problem,
)
from cosmosage.tools.recipe.check.checkpoints import check_checkpoints, has_eval
from cosmosage.tools.recipe.check.disk import check_disk, checkpoint_bytes, disk_estimate
from cosmosage.tools.recipe.check.distill import check_distillation
from cosmosage.tools.recipe.check.files import build_outputs, check_files
from cosmosage.tools.recipe.check.memory import (
    MASTER_WEIGHTS_PLUGIN,
    MemoryEstimate,
    Sharding,
    adapter_params,
    check_hardware,
    check_master_weights,
    check_needless_checkpointing,
    checkpointing,
    lora_targets,
    master_copy,
    memory_estimate,
    method_of,
    model_architecture,
    model_params,
    params_from_config,
    sharding,
)
from cosmosage.tools.recipe.check.relora import (
    check_relora,
    check_warmup,
    data_tokens,
    tokens_per_step,
)
from cosmosage.tools.recipe.check.schema import (
    RENAMED,
    check_axolotl_schema,
    check_deprecated,
    dataset_keys,
    deprecated_keys,
    known_keys,
    suggest,
)
from cosmosage.tools.recipe.check.select import RULE_KEYS, check_rule, check_select
from cosmosage.tools.recipe.check.soup import check_soup, soup_block
from cosmosage.tools.recipe.check.template import (
    AXOLOTL_EOT_WINDOW,
    CHAT_SAMPLE,
    TurnEnd,
    analyse_turn_end,
    check_chat_template,
    check_completion_eos,
    check_end_of_turn,
    check_flash_attention,
    check_tokens,
    load_axolotl_tokenizer,
    tokenizer_folder,
    tokenizer_specials,
    unchecked_end_of_turn,
)
from cosmosage.tools.recipe.check.untrained import check_untrained_tokens
from cosmosage.tools.recipe.render import Rendered

__all__ = [
    "AXOLOTL_EOT_WINDOW",
    "AXOLOTL_SAVE_TOTAL_LIMIT",
    "BYTES_PER_PARAM",
    "CHAT_SAMPLE",
    "CUDA_ATTN",
    "CUDA_ONLY",
    "GB",
    "GiB",
    "IGNORE",
    "LABEL_KEYS",
    "MASTER_WEIGHTS_PLUGIN",
    "MemoryEstimate",
    "OVERHEAD",
    "Problem",
    "RENAMED",
    "RULE_KEYS",
    "Sharding",
    "TOKENIZER_KEYS",
    "TurnEnd",
    "adapter_params",
    "analyse_turn_end",
    "build_outputs",
    "check_axolotl_schema",
    "check_chat_template",
    "check_checkpoints",
    "check_completion_eos",
    "check_deprecated",
    "check_disk",
    "check_distillation",
    "check_end_of_turn",
    "check_files",
    "check_flash_attention",
    "check_hardware",
    "check_master_weights",
    "check_needless_checkpointing",
    "check_relora",
    "check_rendered",
    "check_rule",
    "check_select",
    "check_soup",
    "check_stage",
    "check_tokens",
    "check_untrained_tokens",
    "check_warmup",
    "checkpoint_bytes",
    "checkpointing",
    "data_tokens",
    "dataset_keys",
    "deprecated_keys",
    "disk_estimate",
    "has_eval",
    "known_keys",
    "load_axolotl_tokenizer",
    "lora_targets",
    "master_copy",
    "memory_estimate",
    "method_of",
    "model_architecture",
    "model_params",
    "params_from_config",
    "sharding",
    "soup_block",
    "suggest",
    "tokenizer_folder",
    "tokenizer_specials",
    "tokens_per_step",
    "unchecked_end_of_turn",
]


def check_rendered(r: Rendered, root: Path = ROOT, schema: bool = True) -> list[Problem]:
    """Every problem in one stage recipe; pipelines are checked stage by stage by the caller."""
    cfg, meta = r.config, r.meta
    problems: list[Problem] = []
    if not cfg.get("base_model"):
        problems.append(
            Problem("model", "no `base_model` (add a models/ fragment to recipe.extends)")
        )
    if not cfg.get("datasets"):
        problems.append(Problem("data", "no `datasets`"))
    if schema:
        problems += check_axolotl_schema(cfg)
        problems += check_deprecated(cfg)
    # the checks below read values as Axolotl's schema types them; when the schema has
    # refused the config, one that trips over a value of the wrong type (`micro_batch_size:
    # four`) is left out: the schema's error already names that field
    refused = any(p.check == "axolotl" and p.severity == "error" for p in problems)
    for check, args in (
        (check_tokens, (cfg, meta, root)),
        (check_completion_eos, (cfg, meta)),
        (check_chat_template, (cfg, meta, root)),
        (check_end_of_turn, (cfg, meta, root)),
        (check_untrained_tokens, (cfg, meta, root)),
        (check_files, (cfg, meta, root)),
        (check_checkpoints, (cfg,)),
        (check_master_weights, (cfg, meta)),
        (check_relora, (cfg, meta, root)),
        (check_warmup, (cfg, meta, root)),
        (check_hardware, (cfg, meta, root)),
        (check_disk, (cfg, meta, root)),
        (check_distillation, (cfg, meta, root)),
    ):
        try:
            problems += check(*args)
        except (TypeError, ValueError, AttributeError, KeyError):
            if not refused:
                raise
    return problems


def check_stage(r: Rendered, root: Path = ROOT) -> list[Problem]:
    """Every problem of one stage as `recipe check` reports it: a soup stage's block
    (mergekit makes its model), else the Axolotl config and its `recipe.select` rule."""
    if r.meta.get("soup") is not None:
        return check_soup(r, root)
    return check_rendered(r, root) + check_select(r)
