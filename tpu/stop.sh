#!/usr/bin/env bash
# Stop training on every worker with SIGTERM (the trainer saves a checkpoint) and wait for it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<'EOF_USAGE'
Usage: tpu/stop.sh [options]

Sends SIGTERM to the trainer on all workers at once; `ado-jax train` then writes a checkpoint
and exits, so a later tpu/launch.sh with the same run dir resumes. Waits on each worker until the
process is gone. The TPU keeps running (and costing): use tpu/teardown.sh to delete it.

Options:
  --timeout SECONDS        how long to wait for the checkpoint and exit (default 600)
  --kill                   send SIGKILL after the timeout (no checkpoint); otherwise fail
EOF_USAGE
  common_usage
}

TIMEOUT=600 KILL=0
script_flag() {
  case $1 in
    --timeout) need_value "$@"; TIMEOUT=$2; SHIFT_N=2 ;;
    --kill) KILL=1 ;;
    *) return 1 ;;
  esac
}

parse_args "$@"
require PROJECT ZONE TPU_NAME
if [[ ! $TIMEOUT =~ ^[0-9]+$ ]]; then die "invalid --timeout '$TIMEOUT': expected whole seconds"; fi
L=$REMOTE_LOG_DIR
if [[ $KILL == 1 ]]; then
  late="kill -KILL \"\$pid\"; echo \"\$(hostname): killed after ${TIMEOUT}s (no checkpoint)\""
else
  late="echo \"\$(hostname): still running after ${TIMEOUT}s\"; exit 1"
fi
cmd="if $REMOTE_RUNNING_CHECK; then touch $L/train.stopped; kill -TERM \"\$pid\"; i=0"
cmd+="; while kill -0 \"\$pid\" 2>/dev/null && [ \$i -lt $((TIMEOUT * 5)) ]; do sleep 0.2; i=\$((i+1)); done"
cmd+="; if kill -0 \"\$pid\" 2>/dev/null; then $late; fi"
cmd+="; i=0; while [ ! -f $L/train.exit ] && [ \$i -lt 10 ]; do sleep 0.2; i=\$((i+1)); done; echo \"\$(hostname): stopped (exit code \$(cat $L/train.exit 2>/dev/null || echo unknown))\""
cmd+="; else echo \"\$(hostname): not running\"; fi"
log "sending SIGTERM to the trainer on all workers of $TPU_NAME"
remote all "$cmd"
