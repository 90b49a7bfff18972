# Sourced by the launchers (not run): the --dry-run flag and the GPU count.
#
#   source "$(dirname "$0")/common.sh"   # sets dry_run, drops a leading --dry-run from "$@"
#   require_gpus VAR "hint"                # sets gpus from $VAR, else nvidia-smi; none: one error line, exit 2

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi

require_gpus() {
  gpus="${!1:-$( (nvidia-smi --list-gpus 2>/dev/null || true) | wc -l)}"
  if (( gpus < 1 )); then
    echo "error: no GPU found by nvidia-smi; set $1=N $2" >&2
    exit 2
  fi
}
