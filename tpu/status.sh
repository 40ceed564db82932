#!/usr/bin/env bash
# Print the TPU (and queued resource) state and whether training runs on each worker.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<'EOF_USAGE'
Usage: tpu/status.sh [options]

Prints the state of the TPU VM (READY, CREATING, PREEMPTED, ..., or MISSING), of its queued
resource when QUEUED=1, and, when READY, for every worker whether the trainer runs, or its exit
code, and the installed ado_jax commit. Exits 1 when the state could not be read.
EOF_USAGE
  common_usage
}

parse_args "$@"
require PROJECT ZONE TPU_NAME
note "dry run: the states below are assumed, not read"
if [[ $QUEUED == 1 ]]; then
  printf 'queued resource %s: %s\n' "$QR_ID" "$(qr_state)"
fi
state=$(tpu_state)
printf 'TPU %s (%s, %s): %s\n' "$TPU_NAME" "${ACCELERATOR_TYPE:-type not set}" "$ZONE" "$state"
if [[ $state == UNKNOWN ]]; then exit 1; fi
if [[ $state == READY ]]; then
  L=$REMOTE_LOG_DIR
  check="if $REMOTE_RUNNING_CHECK; then echo \"\$(hostname): training running (pid \$pid)\""
  check+="; elif [ -f $L/train.stopped ]; then echo \"\$(hostname): training stopped by tpu/stop.sh (exit code \$(cat $L/train.exit 2>/dev/null || echo unknown))\""
  check+="; elif [ -f $L/train.exit ]; then echo \"\$(hostname): training exited with code \$(cat $L/train.exit)\""
  check+="; else echo \"\$(hostname): training not started\"; fi"
  check+="; if [ -f ado_jax_commit ]; then echo \"\$(hostname): ado_jax commit \$(cat ado_jax_commit)\"; fi"
  ssh_cmd all "$check"
  query "${SSH[@]}"
fi
