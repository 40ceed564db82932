#!/usr/bin/env bash
# Keep a training run alive: poll the TPU; after a preemption re-create, set up and relaunch.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<'EOF_USAGE'
Usage: tpu/watch.sh [options] [-- tpu/launch.sh options]

Polls the TPU state every --interval seconds. When the TPU is PREEMPTED, TERMINATED or missing
(or its queued resource FAILED/SUSPENDED) it deletes what is left, then runs tpu/create.sh,
tpu/setup.sh (same commit as when watch started) and tpu/launch.sh with the options after `--`;
training resumes from the latest checkpoint in the run dir. While the TPU is READY it checks
worker 0: a trainer that exited with code 0 or was stopped with tpu/stop.sh ends the watch
(exit 0), a non-zero exit code ends
it with an error (a crash needs a look, not a restart), and a READY TPU with no trainer started
gets a launch (counted as a recovery). Run it in tmux/screen or with nohup.

Options:
  --interval SECONDS       poll interval (POLL_INTERVAL, default 60)
  --max-retries N          give up (exit 1) after N recoveries (default 10)
  --wait-timeout SECONDS   how long create.sh waits for READY (WAIT_TIMEOUT, default 3600)
  --commit REF             commit to reinstall (COMMIT; default: HEAD now)
EOF_USAGE
  common_usage
}

MAX_RETRIES=10
script_flag() {
  case $1 in
    --interval) need_value "$@"; set_flag POLL_INTERVAL "$2"; SHIFT_N=2 ;;
    --max-retries) need_value "$@"; MAX_RETRIES=$2; SHIFT_N=2 ;;
    --wait-timeout) need_value "$@"; set_flag WAIT_TIMEOUT "$2"; SHIFT_N=2 ;;
    --commit) need_value "$@"; set_flag COMMIT "$2"; SHIFT_N=2 ;;
    *) return 1 ;;
  esac
}

parse_args "$@"
require PROJECT ZONE TPU_NAME
check_accelerator
if [[ ! $MAX_RETRIES =~ ^[0-9]+$ ]]; then die "invalid --max-retries '$MAX_RETRIES': expected a whole number"; fi
# Pin the commit now so every recovery installs the code the run started with.
if [[ -z ${COMMIT:-} ]]; then
  COMMIT=$(git -C "${REPO_DIR:-$(dirname "$TPU_DIR")}" rev-parse --verify HEAD) ||
    die "cannot read the commit to install; pass --commit"
fi
export_settings

# state: the TPU VM state; with a queued resource and no VM, QUEUED_<queued resource state>.
state() {
  local s q
  s=$(tpu_state)
  if [[ $QUEUED == 1 && $s == MISSING ]]; then
    q=$(qr_state)
    if [[ $q != MISSING ]]; then s=QUEUED_$q; fi
  fi
  printf '%s\n' "$s"
}

# job: RUNNING, STOPPED (by stop.sh), EXITED <code>, NONE (never started) or UNKNOWN, as seen on worker 0.
job() {
  local L=$REMOTE_LOG_DIR out
  ssh_cmd 0 "if $REMOTE_RUNNING_CHECK; then echo RUNNING; elif [ -f $L/train.stopped ]; then echo STOPPED; elif [ -f $L/train.exit ]; then echo \"EXITED \$(cat $L/train.exit)\"; else echo NONE; fi"
  out=$(query "${SSH[@]}" 2>/dev/null) || true
  out=$(printf '%s\n' "$out" | grep -E '^(RUNNING|STOPPED|EXITED|NONE)' | tail -n 1) || true
  printf '%s\n' "${out:-UNKNOWN}"
}

retries=0
# recover STATE: delete leftovers, re-create, set up and relaunch; false if a step failed.
recover() {
  retries=$((retries + 1))
  if ((retries > MAX_RETRIES)); then die "giving up: $TPU_NAME is $1 and $MAX_RETRIES recoveries are used up"; fi
  log "$(date -u +%FT%TZ) $TPU_NAME is $1: recovery $retries of $MAX_RETRIES"
  if [[ $1 != MISSING ]]; then "$TPU_DIR/teardown.sh" --yes || log "delete failed; trying to create anyway"; fi
  "$TPU_DIR/create.sh" && "$TPU_DIR/setup.sh" && relaunch
}
# A relaunch follows a trainer that is gone (preempted, killed): a gs:// run dir may still hold its
# lock object, so the new trainer takes it over (--break-lock; local run dirs need no such help).
relaunch() {
  local args=(${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})
  local a has_sep=0
  for a in ${args[@]+"${args[@]}"}; do [[ $a == -- ]] && has_sep=1; done
  ((has_sep)) || args+=(--)
  "$TPU_DIR/launch.sh" "${args[@]}" --break-lock
}

if [[ $DRY_RUN == 1 ]]; then
  note "every ${POLL_INTERVAL}s: TPU state, then (when READY) the trainer on worker 0"
  state >/dev/null
  job >/dev/null
  note "on PREEMPTED / TERMINATED / missing (at most $MAX_RETRIES times):"
  recover PREEMPTED
  exit 0
fi

log "watching $TPU_NAME every ${POLL_INTERVAL}s (commit $COMMIT, at most $MAX_RETRIES recoveries)"
while :; do
  s=$(state)
  case $s in
    READY)
      j=$(job)
      case $j in
        RUNNING | UNKNOWN) ;;
        STOPPED) log "training was stopped with tpu/stop.sh; not restarting"; exit 0 ;;
        "EXITED 0") log "training finished on $TPU_NAME"; exit 0 ;;
        EXITED*) die "training exited with code ${j#EXITED } on worker 0; see tpu/logs.sh (not restarting)" ;;
        NONE) log "$TPU_NAME is READY without a trainer"; retries=$((retries + 1))
          if ((retries > MAX_RETRIES)); then die "giving up: $MAX_RETRIES recoveries are used up"; fi
          relaunch || log "launch failed" ;;
      esac ;;
    PREEMPTED | TERMINATED | MISSING | QUEUED_FAILED | QUEUED_SUSPENDED)
      recover "$s" || log "recovery $retries failed; will retry" ;;
    *) log "$(date -u +%FT%TZ) $TPU_NAME is $s; waiting" ;;
  esac
  sleep "$POLL_INTERVAL"
done
