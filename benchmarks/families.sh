#!/usr/bin/env bash
# Issue 15's cross-family comparison, end to end and resumably: build families 0-2 (each with a medium
# explorer), a bank from each of its two explorers, then every arm of study_familyK (params.yaml) one
# seed at a time over all families (so an interrupted run leaves whole seeds), then the cross-family
# table. A finished family (passk.json) or bank (bank.json) is skipped, as the study runner skips
# finished runs and resumes started ones.
#   bash benchmarks/families.sh                      # everything (a few hours on a 2-core CPU)
#   FAMILIES="0 1" SEEDS="0" bash benchmarks/families.sh
set -euo pipefail
S2LPO=${S2LPO:-s2lpo}
FAMILIES=${FAMILIES:-"0 1 2"}
SEEDS=${SEEDS-"0 1 2"}  # SEEDS="" builds only

build() {  # family K: prepare, then the two banks
  local k=$1 f=data/families/f$1
  if [ ! -f "$f/passk.json" ]; then
    # each family's own pass@k table at n = 64, as the committed docs/families/ figures were measured
    $S2LPO prepare --set out_dir=$f --set seed=$k --set explorer.seed=$((1 + 10 * k)) \
      --set learner.seed=$((2 + 10 * k)) --set eval_samples=64 \
      --set "medium={layers: 2, hidden: 128, sft_steps: 1500, seed: $((3 + 10 * k))}"
  fi
  explore $f explorer bank
  explore $f medium bank-medium
}

explore() {  # family dir, member, bank name
  if [ ! -f "$1/$3/bank.json" ]; then
    $S2LPO explore --set prompts=$1/train.jsonl --set explorer=$1/$2 --set bank=$1/$3
  fi
}

[ "${SKIP_BUILD:-0}" = 1 ] || for k in $FAMILIES; do build "$k"; done
for seed in $SEEDS; do
  for k in $FAMILIES; do $S2LPO study run family$k --set "seeds=[$seed]"; done
done
[ -n "$SEEDS" ] || exit 0
$S2LPO study compare $(for k in $FAMILIES; do printf 'data/study/family%s ' "$k"; done) --out data/study/families
