#!/usr/bin/env bash
# Would `make run`'s six study runs finish sooner side by side? Two short S2L-PO runs (12 steps, no
# held-out evaluation, no checkpoints) one after the other on every core, then the same two side by
# side on one thread each; prints both wall times and their ratio. Needs the default family and
# bank (after `make run`, or `dvc repro explore`). Run it on an otherwise idle machine:
#   bash benchmarks/train_concurrency.sh
set -euo pipefail
S2LPO=${S2LPO:-s2lpo}
out=$(mktemp -d)
run() {  # seed, name, threads
  $S2LPO train --no-progress --set steps=12 --set anneal.t_mix=6 --set eval.every=-1 --set checkpoint_every=0 \
    --set seed=$1 --set out_dir=$out/$2 --set threads=$3 > $out/$2.log 2>&1
}
now() { date +%s.%N; }
t=$(now); run 0 seq0 null; run 1 seq1 null; sequential=$(echo "$(now) - $t" | bc)
t=$(now); run 0 par0 1 & run 1 par1 1 & wait; side_by_side=$(echo "$(now) - $t" | bc)
printf 'one after the other, all cores: %.1f s\nside by side, one thread each: %.1f s\nratio: %.2f\n' \
  "$sequential" "$side_by_side" "$(echo "$sequential / $side_by_side" | bc -l)"
rm -rf "$out"
