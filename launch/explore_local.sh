#!/usr/bin/env bash
# Stage 1 on one machine: one `s2lpo explore` worker per GPU, all filling one bank.
#
#   launch/explore_local.sh [--dry-run] [s2lpo explore options ...]
#   launch/explore_local.sh --params recipes/qwen3-8b.yaml --set bank=/shared/bank-qwen3-1.7b
#
# Worker i of N sees only GPU i (CUDA_VISIBLE_DEVICES=i) and explores the prompts whose
# stable hash falls to it; it writes its own manifest and shards into the shared bank and,
# run again, generates only what is missing. N = $GPUS, default: the GPUs nvidia-smi lists.
# Logs go to $LOG_DIR/explore-worker-i.log (default logs/). --dry-run prints the workers'
# command lines and starts nothing. $S2LPO replaces the `s2lpo` command (e.g. "python -m pipeline.cli").
set -euo pipefail

source "$(dirname "$0")/common.sh"
require_gpus GPUS "to run N workers"
read -r -a s2lpo <<< "${S2LPO:-s2lpo}"
log_dir="${LOG_DIR:-logs}"
(( dry_run )) || mkdir -p "$log_dir"

pids=()
for ((i = 0; i < gpus; i++)); do
  cmd=("${s2lpo[@]}" explore --num-workers "$gpus" --worker-index "$i" "$@")
  if (( dry_run )); then
    echo "CUDA_VISIBLE_DEVICES=$i ${cmd[*]}"
    continue
  fi
  CUDA_VISIBLE_DEVICES="$i" "${cmd[@]}" > "$log_dir/explore-worker-$i.log" 2>&1 &
  pids+=("$!")
done

status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "error: explore worker $i failed; see $log_dir/explore-worker-$i.log (rerun to resume)" >&2
    status=1
  fi
done
exit "$status"
