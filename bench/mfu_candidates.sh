#!/usr/bin/env bash
# The 1B preset's full fine-tune, tried with each throughput candidate in one sitting on
# a GPU machine (about 1 minute per line on an H200; each line is one `axolotl train` of 12
# steps): the baseline, then one change at a time, so the ratio to the baseline printed
# by each line says what that change buys. The baseline keeps fp32 master weights, as
# every full recipe does (recipes/_base/methods/full.yaml); `pure-bf16` is without.
# Every candidate packs DOCS documents into each 2048-token row (default 4), as packed
# corpora do. With sdpa on CUDA in bf16 and torch >= 2.10, Axolotl 0.19 runs such rows
# through PyTorch's variable-length flash kernel (`sdpa_varlen`, on by default for
# sdpa + packing); `sdpa-dense-mask` turns that off, so the rows carry the dense
# block-diagonal mask instead. `full-rows` is the baseline with one document a row, the
# rows of the 33.8% measurement. `xformers` runs packed rows as variable-length sequences
# through xformers (a 3 MiB wheel; without flash-attn it calls PyTorch's flash kernel),
# `flex-attention` through PyTorch's FlexAttention with a block mask; `flash-attn` needs
# the flash-attn package, which PyPI has only as source (the docker image builds it), so
# it is skipped where that is missing. Writes build/mfu/<name>.json per candidate
# (MFU_DIR=... elsewhere).
#   bash bench/mfu_candidates.sh [--wheels WHEEL_DIR]        # DOCS=8 bash ... for 8
#   ONLY="baseline-sdpa xformers" bash bench/mfu_candidates.sh     # some candidates only
# On a machine without Axolotl: `python bench/device_bundle.py` here fills wheels/ (39 MiB),
# which gpu_check.py installs once, on the first line (carry wheels with the working tree).
# PYTHON picks the interpreter (default: python3, where a bare GPU image has PyTorch).
# Where one command may run at most 10 minutes, run the ten candidates in two calls, in
# the order below (most telling first; the table at the end reads every build/mfu/*.json
# there, the first call's too on the same machine):
#   ONLY="baseline-sdpa sdpa-dense-mask xformers flex-attention micro-batch-8 liger"
#   ONLY="torch-compile full-rows pure-bf16 flash-attn"
# Where OUT names a folder (for a remote machine whose results come back from one folder
# with a limit on files), the table and one JSON file holding every candidate's
# (build/mfu.json, or MFU_DIR.json) are copied there: two files, however many candidates.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${MFU_DIR:-build/mfu}   # where each candidate's JSON goes
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
known="baseline-sdpa sdpa-dense-mask xformers flex-attention micro-batch-8 liger torch-compile full-rows pure-bf16 flash-attn"
for name in ${ONLY:-}; do
  [[ " $known " == *" $name "* ]] || { echo "ONLY: unknown candidate $name (known: $known)" >&2; exit 2; }
done
"$py" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')" || true
run() {
  local name=$1; shift
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  echo "== $name ($(date +%T))"
  "$py" bench/gpu_check.py --methods full --preset 1b --json "$out/$name.json" \
    --docs-per-row "${DOCS:-4}" "$@" || echo "$name failed"
}
run baseline-sdpa --attn sdpa "$@"
run sdpa-dense-mask --attn sdpa --set sdpa_varlen=false "$@"
run xformers --attn xformers "$@"
run flex-attention --attn flex_attention "$@"
run micro-batch-8 --attn sdpa --micro-batch 8 "$@"
run liger --attn sdpa \
  --set 'plugins=[cosmosage.tools.run.master_weights.FP32MasterWeights, axolotl.integrations.liger.LigerPlugin]' \
  --set liger_fused_linear_cross_entropy=true --set liger_rms_norm=true --set liger_glu_activation=true "$@"
run torch-compile --attn sdpa --set torch_compile=true "$@"
run full-rows --attn sdpa --docs-per-row 1 "$@"
# the weights of the 33.8% measurement: bf16, no fp32 master copy
run pure-bf16 --attn sdpa --set 'plugins=[]' "$@"
if "$py" -c "import flash_attn" 2>/dev/null; then
  run flash-attn --attn flash_attention_2 "$@"
elif [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" flash-attn "* ]]; then
  echo "== flash-attn skipped: the flash-attn package is not installed (PyPI has it only as source)"
fi
"$py" - "$out" <<'PY' | tee "$out/table.txt"
import json, pathlib, sys
rows = {p.stem: json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("*.json"))}
pathlib.Path(sys.argv[1] + ".json").write_text(json.dumps(rows, indent=1))
base = rows.get("baseline-sdpa", {}).get("results", [{}])[0].get("tokens_per_s")
for name, r in rows.items():
    res = r["results"][0]
    if "error" in res:
        print(f"{name:16} failed: {res['error']}")
        continue
    ratio = f"x{res['tokens_per_s'] / base:.2f}" if base else "-"
    print(f"{name:16} {r.get('docs_per_row', 1)} a row {res['tokens_per_s']:>10,.0f} tokens/s  MFU {res['mfu'] * 100:5.1f}%  {ratio} of baseline  peak {res['peak_memory_gib']:.1f} GiB")
PY
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then cp "$out.json" "$out/table.txt" "$OUT"/; fi
