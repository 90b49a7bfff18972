#!/usr/bin/env bash
#SBATCH --job-name=s2lpo-explore
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=logs/explore-%A-%a.log
#
# Stage 1 across machines: SLURM array task k is `s2lpo explore` worker k of the array's N,
# one GPU each, all filling one bank on a filesystem every node sees (or s3://, gs://).
#
#   sbatch --array=0-31 launch/explore_slurm.sh --params recipes/qwen3-8b.yaml --set bank=/shared/bank-qwen3-1.7b
#
# A failed or preempted task is resubmitted with the same --array index (sbatch --array=5 ...):
# it generates only what its shards lack. DRY_RUN=1 prints the command and starts nothing;
# $S2LPO replaces the `s2lpo` command.
set -euo pipefail

: "${SLURM_ARRAY_TASK_ID:?submit with sbatch --array=0-(N-1)}"
count="${SLURM_ARRAY_TASK_COUNT:?submit with sbatch --array=0-(N-1)}"
index=$(( SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0} ))
read -r -a s2lpo <<< "${S2LPO:-s2lpo}"
cmd=("${s2lpo[@]}" explore --num-workers "$count" --worker-index "$index" "$@")
if [[ -n "${DRY_RUN:-}" ]]; then
  echo "${cmd[*]}"
  exit 0
fi
exec "${cmd[@]}"
