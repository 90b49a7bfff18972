#!/usr/bin/env bash
# Issue 15's cross-family comparison, end to end and resumably: build families 0-2 (each with a medium
# explorer), a bank from each explorer, then `s2lpo study run familyK` (params.yaml) and the cross-family
# table. A finished family (passk.json) or bank (bank.json) is skipped; the study runner skips finished runs.
#   bash benchmarks/families.sh            # everything (about 2 h on a 2-core CPU)
#   FAMILIES="0" bash benchmarks/families.sh
set -euo pipefail
S2LPO=${S2LPO:-s2lpo}
FAMILIES=${FAMILIES:-"0 1 2"}

build() {  # family K: prepare, then the two banks
  local k=$1 f=data/families/f$1
  if [ ! -f "$f/passk.json" ]; then
    $S2LPO prepare --set out_dir=$f --set seed=$k --set explorer.seed=$((1 + 10 * k)) \
      --set learner.seed=$((2 + 10 * k)) --set "medium={layers: 2, hidden: 128, sft_steps: 1500, seed: $((3 + 10 * k))}"
  fi
  for m in explorer medium; do
    local bank=$f/bank; [ $m = medium ] && bank=$f/bank-medium
    if [ ! -f "$bank/bank.json" ]; then
      $S2LPO explore --set prompts=$f/train.jsonl --set explorer=$f/$m --set bank=$bank
    fi
  done
}

for k in $FAMILIES; do build "$k"; done
for k in $FAMILIES; do $S2LPO study run family$k; done
$S2LPO study compare $(for k in $FAMILIES; do printf 'data/study/family%s ' "$k"; done) --out data/study/families
