#!/usr/bin/env bash
# Show the end of the training log of one worker (or all), optionally following it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<'EOF_USAGE'
Usage: tpu/logs.sh [options]

Prints the last lines of ~/ado_jax_logs/train.log on a worker. Worker 0 runs JAX process 0,
the only one that writes progress logs and metrics; other workers show errors and warnings.

Options:
  --worker W               worker index, or `all` (default 0)
  -n, --lines N            number of lines (default 100)
  -f, --follow             keep following the log (Ctrl-C to stop; training keeps running)
EOF_USAGE
  common_usage
}

WORKER=0 LINES=100 FOLLOW=0
script_flag() {
  case $1 in
    --worker) need_value "$@"; WORKER=$2; SHIFT_N=2 ;;
    -n | --lines) need_value "$@"; LINES=$2; SHIFT_N=2 ;;
    -f | --follow) FOLLOW=1 ;;
    *) return 1 ;;
  esac
}

parse_args "$@"
require PROJECT ZONE TPU_NAME
if [[ ! $WORKER =~ ^([0-9]+|all)$ ]]; then die "invalid --worker '$WORKER': expected a worker index or all"; fi
if [[ ! $LINES =~ ^[0-9]+$ ]]; then die "invalid --lines '$LINES': expected a whole number"; fi
tail_flags="-n $LINES"
if [[ $FOLLOW == 1 ]]; then tail_flags+=" -F"; fi
remote "$WORKER" "tail $tail_flags $REMOTE_LOG_DIR/train.log"
