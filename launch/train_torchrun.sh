#!/usr/bin/env bash
# Stage 2 on every GPU of one machine (or of NNODES machines): `s2lpo train` under torchrun,
# one rank per GPU (stage2_train/distributed.py: DDP or FSDP2, vLLM colocated per rank).
#
#   launch/train_torchrun.sh [--dry-run] [s2lpo train options ...]
#   launch/train_torchrun.sh --params recipes/qwen3-8b.yaml --set distributed.strategy=fsdp
#
# NPROC_PER_NODE (default: the GPUs nvidia-smi lists) ranks per machine. With NNODES > 1, run
# it on every machine with the same MASTER_ADDR (and MASTER_PORT, default 29500) and that
# machine's NODE_RANK. --dry-run prints the torchrun command and starts nothing.
set -euo pipefail

source "$(dirname "$0")/common.sh"
require_gpus NPROC_PER_NODE "(N CPU ranks on gloo)"
nnodes="${NNODES:-1}"
if (( nnodes == 1 )); then
  where=(--standalone)
else
  : "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}" "${NODE_RANK:?set NODE_RANK (0..NNODES-1)}"
  where=(--nnodes "$nnodes" --node-rank "$NODE_RANK" --rdzv-backend c10d
         --rdzv-endpoint "$MASTER_ADDR:${MASTER_PORT:-29500}")
fi
cmd=(torchrun "${where[@]}" --nproc-per-node "$gpus" -m pipeline.cli train "$@")
if (( dry_run )); then
  echo "${cmd[*]}"
  exit 0
fi
exec "${cmd[@]}"
