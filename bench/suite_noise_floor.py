"""How much of a suite's drop is the suite's own fragility: the model's pass rate with its
weights perturbed at random, by as much as training moved them, against the unperturbed
model in the same run.

A suite kept to the prompts the base model passes (samples/eval/general_large.yaml) starts
at 100% by selection, and some of its prompts pass by a small margin; any change to the
weights flips a few of them. This bench puts a number on that floor: each weight tensor
gets Gaussian noise of `level` times its own RMS (several levels and seeds), and the
weights are also rounded to bfloat16; each perturbed model is asked the suite as the
study asks it (greedy). With `--trained`, the relative size of each trained model's
change from the base is printed beside them, so a trained model's drop can be read
against random noise of the same size. Every model's drift from the unperturbed one is
printed too, as the study reports it (tools/eval/drift.py: mean per-token KL over the
unperturbed model's own answers to the suite's general prompts, and the share of those
answers that changed), so a drop can also be read against noise of the same KL.

    python bench/suite_noise_floor.py --model build/models/smollm2-135m-instruct \
        --suite samples/eval/general_large.yaml --levels 0.001,0.004,0.01 --seeds 1,2 \
        --trained runs/study/facts/<id>/facts/model
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path


def perturbed(src: Path, out: Path, level: float, seed: int, bf16: bool = False) -> Path:
    """A copy of the model at `src` with every tensor's weights perturbed: Gaussian noise
    of `level` x the tensor's RMS (seeded), or rounded to bfloat16."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if bf16:
                param.copy_(param.to(torch.bfloat16).to(torch.float32))
            else:
                rms = param.pow(2).mean().sqrt()
                param.add_(torch.randn(param.shape, generator=gen) * rms * level)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    if (src / "generation_config.json").exists():
        shutil.copy(src / "generation_config.json", out)
    return out


def displacement(base: Path, other: Path) -> tuple[float, float]:
    """(global, median per tensor) relative L2 size of `other`'s change from `base`."""
    import torch
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).state_dict()
    b = AutoModelForCausalLM.from_pretrained(other, dtype=torch.float32).state_dict()
    num = den = 0.0
    per = []
    for key, w in a.items():
        if key not in b or not w.is_floating_point():
            continue
        d2, w2 = (b[key] - w).pow(2).sum().item(), w.pow(2).sum().item()
        num, den = num + d2, den + w2
        if w2 > 0:
            per.append((d2 / w2) ** 0.5)
    return (num / den) ** 0.5, statistics.median(per)


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--model", type=Path, required=True, help="the unperturbed (base) model")
    ap.add_argument("--suite", action="append", required=True, help="prompt suite YAML")
    ap.add_argument("--levels", default="0.001,0.004,0.01", help="noise / tensor RMS")
    ap.add_argument("--seeds", default="1,2", help="noise seeds, one model per level and seed")
    ap.add_argument("--trained", action="append", default=[], help="trained models to compare")
    args = ap.parse_args()

    from cosmosage.tools.eval.drift import changed_share, general_items, kl_to_base
    from cosmosage.tools.eval.evaluate import score_models
    from cosmosage.tools.eval.report import interval

    levels = [float(x) for x in args.levels.split(",") if x]
    seeds = [int(x) for x in args.seeds.split(",") if x]
    with tempfile.TemporaryDirectory(prefix="noise-floor-") as tmp:
        models: dict[str, Path] = {"unperturbed": args.model}
        models["bf16 rounding"] = perturbed(args.model, Path(tmp) / "bf16", 0, 0, bf16=True)
        for level in levels:
            for seed in seeds:
                out = Path(tmp) / f"noise-{level}-{seed}"
                models[f"noise {level:g} seed {seed}"] = perturbed(args.model, out, level, seed)
        trained = {f"trained {i + 1}": Path(p) for i, p in enumerate(args.trained)}
        models.update(trained)
        sizes = {label: displacement(args.model, path) for label, path in models.items()}
        result = score_models({k: str(v) for k, v in models.items()}, args.suite)
        items = general_items(result["answers"], "unperturbed")
        drift = {
            label: (kl_to_base(args.model, path, items)["kl"] if items else float("nan"),
                    changed_share(result["answers"], label, "unperturbed"))
            for label, path in models.items()
        }  # fmt: skip
    base_rate = result["scores"]["unperturbed"]["all"]
    print(
        "| model | weight change (global, median tensor) | KL to unperturbed | answers changed "
        "| pass rate [95%] | vs unperturbed |"
    )
    print("|---|---|---|---|---|---|")
    for label in models:
        passed, asked = result["counts"][label]["all"]
        low, high = interval(passed, asked)
        rate = passed / asked
        glob, med = sizes[label]
        kl, changed = drift[label]
        changed_text = "n/a" if changed is None else f"{changed:.0%}"
        print(
            f"| {label} | {glob:.2%}, {med:.2%} | {kl:.4f} | {changed_text} "
            f"| {rate:.0%} [{low:.0%}-{high:.0%}] ({passed}/{asked}) "
            f"| {100 * (rate - base_rate):+.0f} pts |"
        )
    for label, path in trained.items():
        print(f"{label}: {path}")


if __name__ == "__main__":
    main()
