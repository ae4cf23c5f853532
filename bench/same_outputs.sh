#!/usr/bin/env bash
# Do the data commands write the same bytes at two revisions? For a change meant to
# leave behaviour alone (a refactor): every offline data command runs on the bundled
# samples, once with the code of BASE and once with the working tree, in the same
# scratch folder with the same relative paths, and every output file is compared.
#
#   bash bench/same_outputs.sh BASE_REV [KEEP_DIR]
#
# Both runs use this checkout's .venv (the code of each revision is put first on
# PYTHONPATH) and this checkout's samples, so only the code differs. Not covered here:
# the commands that need a model server (synth, grade, questions, entigraph; their tests
# run a real one), arxiv (network) and `convert --shard`, whose output names changed on
# purpose (OUT.shard-I-of-N like corpus). The repository root written in a manifest
# is read as <root> on both sides.
set -euo pipefail
BASE=${1:?usage: bench/same_outputs.sh BASE_REV [KEEP_DIR]}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=$HERE/.venv/bin/python
TMP=${2:-$(mktemp -d)}
mkdir -p "$TMP"
git -C "$HERE" worktree add --detach -f "$TMP/base-tree" "$BASE" >/dev/null
trap 'git -C "$HERE" worktree remove --force "$TMP/base-tree" >/dev/null 2>&1 || true' EXIT

shim() { # $1: tree -> a folder whose cosmosage/ is that tree's code
  local d=$TMP/shim-$2
  mkdir -p "$d/cosmosage"
  ln -sfn "$1/dataprep" "$d/cosmosage/dataprep"
  ln -sfn "$1/tools" "$d/cosmosage/tools"
  echo "$d"
}

run_all() { # $1: label, $2: shim folder; writes $TMP/out-$1
  local W=$TMP/work
  rm -rf "$W" && mkdir -p "$W/build/models"
  ln -s "$HERE/samples" "$W/samples"
  cp -r "$TMP/tiny" "$W/build/models/tiny-llama"
  cd "$W"
  export PYTHONPATH=$2
  cs() { "$PY" -m cosmosage.tools.cli.main "$@"; }
  "$PY" -c 'import cosmosage.dataprep as d, sys; print("code:", d.__path__[0])'
  local P=samples/study_papers T=build/models/tiny-llama
  cs data corpus samples/papers samples/textbook --tokenizer $T --sequence-len 128 \
    --out out/corpus.jsonl --val-out out/corpus.val.jsonl --val-fraction 0.25
  for i in 0 1; do
    cs data corpus samples/papers samples/textbook --tokenizer $T --sequence-len 128 \
      --out out/sharded.jsonl --shard $i/2
  done
  cs data merge-shards --out out/sharded.jsonl
  cs data convert samples/qa/cosmology_qa.jsonl samples/general/chat.jsonl --tokenizer $T \
    --sequence-len 512 --out out/qa.jsonl
  cs data facts samples/facts/cosmology_facts.yaml --limit 8 --out-dir build/data/quickstart/facts
  cs data structured samples/structured/canto_refs.jsonl \
    --schema samples/structured/canto_refs.schema.yaml \
    --instruction "List every canto and line reference in the text as JSON." \
    --out build/data/quickstart/refs.jsonl
  cs data mix samples/mix/quickstart-tiny.yaml
  cs data cloze $P/*.md --out out/cloze.jsonl --hold-out 0.2 --suite-out out/cloze.suite.yaml
  cs data augment $P --out out/augment.jsonl --copies 2
  cs data closed-book $P/facts.yaml --papers $P --against out/cloze.jsonl --out-dir out/closed-book
  cs data metaqa samples/papers --out out/metaqa.jsonl
  cs data inspect out/qa.jsonl --model $T --limit 20 --show 1 --no-color >out/inspect.txt
  cs data replay --model $T --prompts samples/replay/prompts.yaml --max-new-tokens 12 \
    --batch-size 32 --out out/replay.jsonl
  cd "$HERE"
  rm -rf "$TMP/out-$1" && mkdir -p "$TMP/out-$1"
  mv "$W/out" "$W/build/data" "$TMP/out-$1/"
}

[ -d "$TMP/tiny" ] || "$PY" -m cosmosage.tools.cli.main model tiny samples --out "$TMP/tiny"
run_all base "$(shim "$TMP/base-tree" base)" >"$TMP/base.log" 2>&1 || { tail -20 "$TMP/base.log"; exit 1; }
run_all head "$(shim "$HERE" head)" >"$TMP/head.log" 2>&1 || { tail -20 "$TMP/head.log"; exit 1; }

cd "$TMP"
same=0
differ=0
while IFS= read -r f; do
  # each revision names its own root in the paths of bundled files (prompts/, samples/eval)
  if [ -f "out-base/$f" ] && [ -f "out-head/$f" ] && cmp -s <(sed "s|$TMP/base-tree|<root>|g" "out-base/$f" 2>/dev/null) \
    <(sed "s|$HERE|<root>|g" "out-head/$f" 2>/dev/null); then
    same=$((same + 1))
    echo "same     $f ($(wc -c <"out-base/$f") bytes)"
  else
    differ=$((differ + 1))
    echo "DIFFERS  $f"
  fi
done < <( (cd out-base && find . -type f; cd ../out-head && find . -type f) | sort -u | sed 's|^\./||')
echo "$same file(s) identical, $differ differ ($BASE vs the working tree; outputs in $TMP)"
[ "$differ" -eq 0 ]
