"""Throughput, model FLOPs utilisation and peak memory of full fine-tune, LoRA and QLoRA
through `axolotl train` on one device, beside `recipe check`'s memory estimate.

    python bench/gpu_check.py                                  # one GPU: 1B preset, bf16, flash attn
    python bench/gpu_check.py --device cpu --preset tiny       # toy size on a CPU (tests)

Nothing is downloaded: the tokenizer is built from samples/ (the tiny model's), the model
is a random `model init` preset, the data is the bundled papers cut into documents that
fill a row exactly, one to a row or --docs-per-row N to a row (as packed corpora are:
flash attention, xformers and Axolotl's `sdpa_varlen` (sdpa on CUDA in bf16, torch >=
2.10) run such a row as N sequences; sdpa otherwise gives it a block-diagonal mask).
Each method runs `axolotl train` for --steps steps (its data preparation
comes before the first step, so it never counts in tokens/s) with sample packing (rows
padded to the sequence length, so every step sees micro_batch x seq_len tokens).
Reported per method:

  tokens/s      median of Axolotl's per-step tokens/train_per_sec_per_gpu after --warmup
                steps (else tokens over train_runtime)
  MFU           model FLOPs per second over the device's peak: per token 6N for full
                fine-tune, 4N for LoRA/QLoRA (frozen weights need no weight gradient),
                N = matmul parameters (LM head included), plus 12 x layers x attention
                width x seq_len for attention (PaLM's count, no causal halving); peak from
                a table of GPUs (bf16 dense), or --peak-tflops, or on a CPU a timed fp32
                matmul (so CPU MFU is relative to what this CPU reaches on a matmul)
  peak memory   CUDA: max of Axolotl's memory/max_allocated; CPU: peak RSS of the process
  estimate      `recipe check`'s memory estimate of the same config on one device

A GPU machine with PyTorch but not the project's packages: the script installs them
from a folder of wheels (--wheels, default wheels/ or shared/wheels) into --work/site
with pip --no-index --no-deps --target and starts again with it on PYTHONPATH;
`python bench/device_bundle.py` fills that folder (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("full", "lora", "qlora")
# dense bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name()
GPU_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "A6000": 155.0,
    "4090": 165.0,
    "3090": 71.0,
    "A10": 125.0,
    "L4": 121.0,
}


# --------------------------------------------------------------------------- install


def have_packages() -> bool:
    try:
        import axolotl  # noqa: F401

        import cosmosage.tools.models.init  # noqa: F401
    except ImportError:
        return False
    return True


def ensure_installed(wheels: Path | None, work: Path) -> None:
    """When Axolotl or cosmosage is missing, install a folder of wheels (bench/
    device_bundle.py makes one) into work/site with pip --no-index --no-deps --target,
    which leaves the machine's own packages alone, and run this script again with that
    folder first on PYTHONPATH. A second run over the same wheels reuses work/site."""
    if have_packages():
        return
    candidates = [wheels] if wheels else [ROOT / "wheels", ROOT / "shared" / "wheels"]
    found = next((c for c in candidates if c and c.is_dir()), None)
    if found is None or os.environ.get("GPU_CHECK_INSTALLED"):
        sys.exit(
            "gpu_check: axolotl or cosmosage is not installed and no wheel folder was found "
            f"(looked in {', '.join(map(str, candidates))}); see bench/README.md"
        )
    bundle = found / "BUNDLE.txt"
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    named = re.search(r"CPython (\d+\.\d+)", bundle.read_text()) if bundle.is_file() else None
    made_for = named.group(1) if named else here
    if made_for != here:
        sys.exit(
            f"gpu_check: the wheels in {found} are for CPython {made_for}, this is {here}: "
            f"make them again with `python bench/device_bundle.py --python-version {here}`"
        )
    site = work.resolve() / "site"
    files = sorted(found.glob("*.whl"))
    stamp = "\n".join(f"{w.name} {w.stat().st_size}" for w in files)
    if not (site / ".wheels").is_file() or (site / ".wheels").read_text() != stamp:
        print(f"installing {len(files)} wheels from {found} into {site} (no index)", flush=True)
        shutil.rmtree(site, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
            + ["--no-compile", "--target", str(site), *map(str, files)],
            check=True,
        )
        (site / ".wheels").write_text(stamp)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "GPU_CHECK_INSTALLED": "1", "PYTHONPATH": path}
    env.setdefault("COSMOSAGE_ROOT", str(ROOT))  # recipes/ and samples/ of this checkout
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


# --------------------------------------------------------------------------- inputs


def tokenizer_dir(work: Path) -> Path:
    """The tiny model's tokenizer (trained on samples/), built here if missing."""
    from cosmosage.tools.models.tiny import build_tiny_model

    built = ROOT / "build" / "models" / "tiny-llama"
    if (built / "tokenizer.json").is_file():
        return built
    out = work / "tiny-llama"
    build_tiny_model([str(ROOT / "samples")], out)
    return out


def write_rows(tok_path: Path, out: Path, seq_len: int, rows: int, docs_per_row: int = 1) -> Path:
    """Documents cut from the bundled papers and textbook, `docs_per_row` to a packed row
    of seq_len tokens (each seq_len // docs_per_row - 2 tokens, its BOS and EOS making up
    the rest), repeated until they fill `rows` rows."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_path)
    text = "\n\n".join(
        p.read_text(encoding="utf-8")
        for p in sorted((ROOT / "samples").glob("*/*.md"))
        if p.parent.name in ("papers", "textbook")
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    size = seq_len // docs_per_row - 2
    pieces = [ids[i : i + size] for i in range(0, len(ids) - size + 1, size)] or [ids]
    docs = [fit_text(tok, piece, size) for piece in pieces]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for i in range(rows * docs_per_row):
            fh.write(json.dumps({"text": docs[i % len(docs)]}) + "\n")
    return out


def fit_text(tok, piece: list[int], size: int) -> str:
    """The text of `piece`, shortened until it tokenizes again to at most `size` tokens
    (a cut mid-word can come back a token longer, and a row would then hold one document
    fewer)."""
    while True:
        text = tok.decode(piece)
        if len(tok(text, add_special_tokens=False)["input_ids"]) <= size:
            return text
        piece = piece[:-1]


def apply_sets(cfg: dict, sets: list[str]) -> dict:
    """`--set KEY=VALUE` on top of a config: the same parsing as `recipe run --set` (YAML
    scalars, 2e-4 as a number, dotted keys for nested mappings)."""
    from cosmosage.tools.recipe.render import parse_value

    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"gpu_check: --set {item!r}: expected KEY=VALUE")
        *path, last = key.split(".")
        node = cfg
        for part in path:
            node = node.setdefault(part, {})
        node[last] = parse_value(value)
    return cfg


def method_config(method: str, args: argparse.Namespace, model: Path, data: Path, work: Path):
    cuda = args.device == "cuda"
    cfg: dict = {
        "base_model": str(model),
        "special_tokens": {"pad_token": "<pad>"},
        "datasets": [{"path": str(data), "ds_type": "json", "type": "completion"}],
        "dataset_prepared_path": str(work / method / "prepared"),
        "output_dir": str(work / method / "output"),
        "val_set_size": 0,
        "sequence_len": args.seq_len,
        "sample_packing": True,
        "pad_to_sequence_len": True,
        "micro_batch_size": args.micro_batch,
        "gradient_accumulation_steps": 1,
        "max_steps": args.steps,
        "num_epochs": 1000,
        "learning_rate": 1.0e-4,
        "lr_scheduler": "constant",
        "optimizer": "adamw_torch_fused" if cuda else "adamw_torch",
        "logging_steps": 1,
        "save_strategy": "no",
        "bf16": cuda,
        "fp16": False,
        "tf32": cuda,
        "attn_implementation": args.attn,
        "gradient_checkpointing": False,
        "dataloader_num_workers": 0,
    }
    if method in ("lora", "qlora"):
        cfg.update(
            {
                "adapter": method,
                "lora_r": 16,
                "lora_alpha": 32,
                "lora_dropout": 0.0,
                "lora_target_linear": True,
                "learning_rate": 2.0e-4,
            }
        )
    if method == "qlora":
        cfg["load_in_4bit"] = True
    if method == "full":
        # as every full recipe (recipes/_base/methods/full.yaml): fp32 weights, bf16 compute
        from cosmosage.tools.recipe.check import MASTER_WEIGHTS_PLUGIN

        cfg["plugins"] = [MASTER_WEIGHTS_PLUGIN]
    apply_sets(cfg, args.sets)
    if not cuda:
        # the Triton LoRA kernels Axolotl turns on by default assert CUDA
        cfg.update({"lora_mlp_kernel": False, "lora_qkv_kernel": False, "lora_o_kernel": False})
        cfg.setdefault("dataset_num_proc", 1)  # as recipes/_base/hardware/cpu.yaml
    # as `recipe run` gives every stage (tools/run/gc_freeze.py)
    from cosmosage.tools.run.stage import with_stage_plugins

    return with_stage_plugins(cfg)


def pick_attention(device: str, wanted: str) -> str:
    if wanted != "auto":
        return wanted
    if device == "cpu":
        return "sdpa"
    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        if "flash_attention_torch" in ALL_ATTENTION_FUNCTIONS:
            return "flash_attention_torch"
    except ImportError:
        pass
    return "sdpa"  # PyTorch's own flash kernel through SDPA


# --------------------------------------------------------------------------- measuring


def peak_tflops(device: str, given: float | None) -> tuple[float, str]:
    import torch

    if given:
        return given, "given"
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        for key, value in GPU_PEAK_TFLOPS.items():
            if key in name:
                return value, f"{name} (table, bf16 dense)"
        return matmul_tflops("cuda", torch.bfloat16), f"{name} (timed bf16 matmul)"
    return matmul_tflops("cpu", torch.float32), "CPU (timed fp32 matmul)"


def matmul_tflops(device: str, dtype, n: int = 1024, repeat: int = 10) -> float:
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def flops_per_token(method: str, params: int, layers: int, attn_width: int, seq: int) -> float:
    weights = (6 if method == "full" else 4) * params
    return weights + 12 * layers * attn_width * seq


def parse_log(text: str) -> tuple[list[dict], dict]:
    """Axolotl's per-step metric dicts and its final summary, from the train log."""
    import ast

    steps, summary = [], {}
    for line in text.splitlines():
        line = line.strip().split("\r")[-1]
        if not (line.startswith("{'") and line.endswith("}")):
            continue
        try:
            d = ast.literal_eval(line)
        except (ValueError, SyntaxError):
            continue
        if "train_runtime" in d:
            summary = d
        elif "loss" in d:
            steps.append(d)
    return steps, summary


def run_measured(argv: list[str], log: Path, env: dict) -> tuple[int, float, int]:
    """Run argv with its output in `log`; (exit code, seconds, peak RSS bytes of its
    process tree), the RSS read in a wrapper process so each run is measured alone."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "rc = subprocess.call(sys.argv[1:])\n"
        # on a line of its own: the child's last output may not end one
        "print('\\nPEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(rc)\n"
    )
    t0 = time.time()
    with open(log, "w", encoding="utf-8") as fh:
        rc = subprocess.call(
            [sys.executable, "-c", wrapper, *argv],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    seconds = time.time() - t0
    rss = 0
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("PEAK_RSS_KB"):
            rss = int(line.split()[1]) * 1024
    return rc, seconds, rss


class MethodFailed(RuntimeError):
    """One method's training failed; the others still run and the table says which."""


def check_estimate(cfg: dict, method: str, info: dict, device: str) -> float:
    """`recipe check`'s memory estimate in bytes for this config on one device: its
    architecture-based estimate where check.py has one, else bytes per parameter x 1.2."""
    from cosmosage.tools.recipe import check

    meta = {
        "method": method,
        "params": info["params"],
        "hardware": {"name": f"gpu_check-{device}", "gpus": 1 if device == "cuda" else 0},
    }
    estimate_fn = getattr(check, "memory_estimate", None)
    if estimate_fn is not None:
        est = estimate_fn(cfg, meta, ROOT)
        if est is not None:
            return float(est.total)
    per_param = check.BYTES_PER_PARAM.get(method, check.BYTES_PER_PARAM["full"])
    return info["params"] * per_param * check.OVERHEAD


def axolotl_argv() -> list[str]:
    """Axolotl's console script beside this interpreter, else its CLI module (a package
    unpacked onto PYTHONPATH has no console script)."""
    exe = Path(sys.executable).parent / "axolotl"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "axolotl.cli.main"]


def measure(method: str, cfg: dict, info: dict, args: argparse.Namespace, work: Path) -> dict:
    import yaml

    folder = work / method
    folder.mkdir(parents=True, exist_ok=True)
    cfg_path = folder / "axolotl.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "DO_NOT_TRACK": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    rc, wall, rss = run_measured(
        [*axolotl_argv(), "train", str(cfg_path), "--launcher", "python"], folder / "train.log", env
    )
    if rc != 0:
        tail = (folder / "train.log").read_text(encoding="utf-8", errors="replace")[-3000:]
        raise MethodFailed(
            f"{method}: axolotl train failed (exit {rc}); see {folder / 'train.log'}:\n{tail}"
        )
    steps, summary = parse_log((folder / "train.log").read_text(encoding="utf-8", errors="replace"))
    tokens_per_step = args.micro_batch * args.seq_len
    rates = [
        float(s["tokens/train_per_sec_per_gpu"])
        for s in steps[args.warmup :]
        if "tokens/train_per_sec_per_gpu" in s
    ]
    if rates:
        tps = statistics.median(rates)
    else:
        runtime = float(summary.get("train_runtime") or wall)
        tps = len(steps) * tokens_per_step / runtime
    if args.device == "cuda":
        peak = max(float(s.get("memory/max_allocated (GiB)", 0) or 0) for s in steps) * 2**30
    else:
        peak = rss
    flops = flops_per_token(
        method, info["params"], info["layers"], info["attn_width"], args.seq_len
    )
    estimate = check_estimate(cfg, method, info, args.device)
    return {
        "method": method,
        "steps": len(steps),
        "tokens_per_s": round(tps, 1),
        "mfu": round(tps * flops / (info["peak_tflops"] * 1e12), 4),
        "peak_memory_gib": round(peak / 2**30, 6),
        "check_estimate_gib": round(estimate / 2**30, 6),
        "final_loss": float(steps[-1]["loss"]) if steps else None,
        "wall_s": round(wall, 1),
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--preset", default="1b", help="`model init` preset (1b, 410m, 150m, tiny)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3, help="steps left out of tokens/s")
    p.add_argument("--seq-len", type=int, default=None, help="default 2048 (cuda), 128 (cpu)")
    p.add_argument("--micro-batch", type=int, default=None, help="default 4 (cuda), 2 (cpu)")
    p.add_argument(
        "--docs-per-row",
        type=int,
        default=1,
        help="documents packed into each row (default 1: one document fills a row); real "
        "corpora pack several (variable-length attention runs them as separate "
        "sequences; a dense mask covers the whole row)",
    )
    p.add_argument("--attn", default="auto", help="attn_implementation (auto: flash if any)")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--work", type=Path, default=ROOT / "build" / "gpu_check")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--wheels", type=Path, default=None, help="wheel folder for a bare machine")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an Axolotl key for every method's config (repeatable; dotted keys for nested "
        "ones, YAML values), e.g. --set torch_compile=true --set micro_batch_size=8",
    )
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    args.seq_len = args.seq_len or (2048 if cuda else 128)
    args.micro_batch = args.micro_batch or (4 if cuda else 2)
    if args.docs_per_row < 1 or args.seq_len // args.docs_per_row - 2 < 8:
        p.error(
            f"--docs-per-row {args.docs_per_row}: documents under 8 tokens in rows of {args.seq_len}"
        )
    bad = [m for m in args.methods.split(",") if m not in METHODS]
    if bad:
        p.error(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    ensure_installed(args.wheels, args.work)
    import torch

    from cosmosage.tools.models.init import get_preset, init_model

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device; run with --device cpu --preset tiny for a toy check")
    args.attn = pick_attention(args.device, args.attn)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    tok = tokenizer_dir(work)
    preset = get_preset(args.preset)
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    t0 = time.time()
    model_dir = work / f"model-{args.preset}"
    model = init_model(args.preset, str(tok), model_dir, dtype=dtype)
    rows = (args.steps + 2) * args.micro_batch * 2
    name = f"data-{args.seq_len}-{args.docs_per_row}.jsonl"
    data = write_rows(tok, work / name, args.seq_len, rows, args.docs_per_row)
    peak, peak_src = peak_tflops(args.device, args.peak_tflops)
    info = {
        "params": model["params"],
        "layers": preset.num_hidden_layers,
        "attn_width": preset.num_attention_heads * preset.head_dim,
        "peak_tflops": peak,
    }
    print(
        f"gpu_check: {args.device}, preset {args.preset} ({model['params']:,} parameters, "
        f"{dtype}), seq {args.seq_len} x micro-batch {args.micro_batch}, {args.steps} steps, "
        f"packing on, {args.docs_per_row} document(s) a row, attention {args.attn}; peak {peak:.2f} TFLOP/s from {peak_src}; "
        f"set-up {time.time() - t0:.0f} s",
        flush=True,
    )
    results = []
    for method in args.methods.split(","):
        cfg = method_config(method, args, model_dir, data, work)
        try:
            res = measure(method, cfg, info, args, work)
        except MethodFailed as exc:
            print(exc, flush=True)
            results.append({"method": method, "error": str(exc).splitlines()[0]})
            continue
        results.append(res)
        print(
            f"{method:6} {res['tokens_per_s']:>10,.1f} tokens/s  MFU {res['mfu'] * 100:6.2f}%  "
            f"peak {res['peak_memory_gib']:8.3f} GiB  (recipe check estimate "
            f"{res['check_estimate_gib']:.4f} GiB)  loss {res['final_loss']}  {res['wall_s']} s",
            flush=True,
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": args.device,
                    "preset": args.preset,
                    "attn": args.attn,
                    "docs_per_row": args.docs_per_row,
                    "peak_tflops": peak,
                    "peak_source": peak_src,
                    "results": results,
                },
                indent=2,
            )
        )
    failed = [r["method"] for r in results if "error" in r]
    if failed:
        raise SystemExit(f"gpu_check: {', '.join(failed)} failed (logs above)")
    return results


if __name__ == "__main__":
    main()
