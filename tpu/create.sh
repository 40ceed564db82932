#!/usr/bin/env bash
# Create a TPU VM slice (v3/v4), directly or through a queued resource, and wait until READY.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<'EOF'
Usage: tpu/create.sh [options] [-- extra gcloud create flags]

Creates the TPU VM $TPU_NAME with `gcloud compute tpus tpu-vm create`, or with QUEUED=1 a queued
resource $QR_ID (`gcloud compute tpus queued-resources create --node-id=$TPU_NAME`), then waits
until the TPU is READY. Extra gcloud create flags come from CREATE_FLAGS (space-separated; also
used when watch.sh re-creates) and from the words after `--` (e.g. -- --network=my-net).

Options:
  --no-wait                return once the create call returns (queued resources may still be
                           provisioning)
  --interval SECONDS       poll interval while waiting (POLL_INTERVAL, default 60)
  --wait-timeout SECONDS   give up waiting after this long (WAIT_TIMEOUT, default 3600)
EOF
  common_usage
}

WAIT=1
script_flag() {
  case $1 in
    --no-wait) WAIT=0 ;;
    --interval) need_value "$@"; set_flag POLL_INTERVAL "$2"; SHIFT_N=2 ;;
    --wait-timeout) need_value "$@"; set_flag WAIT_TIMEOUT "$2"; SHIFT_N=2 ;;
    *) return 1 ;;
  esac
}

parse_args "$@"
require PROJECT ZONE TPU_NAME
check_accelerator
default_runtime_version
if [[ $SPOT == 1 && $PREEMPTIBLE == 1 ]]; then die "choose one of SPOT=1 and PREEMPTIBLE=1, not both"; fi
if [[ $RESERVED == 1 && ($SPOT == 1 || $PREEMPTIBLE == 1) ]]; then
  die "RESERVED=1 cannot be combined with SPOT=1 or PREEMPTIBLE=1"
fi

loc_args
capacity=()
if [[ $SPOT == 1 ]]; then capacity=(--spot); fi
if [[ $RESERVED == 1 ]]; then capacity=(--reserved); fi

if [[ $QUEUED == 1 ]]; then
  if [[ $PREEMPTIBLE == 1 ]]; then
    die "PREEMPTIBLE=1 is not available for queued resources; use SPOT=1 (or QUEUED=0)"
  fi
  log "queued resource $QR_ID -> $ACCELERATOR_TYPE TPU $TPU_NAME ($NUM_WORKERS workers) in $ZONE"
  run gcloud compute tpus queued-resources create "$QR_ID" "${LOC[@]}" \
    --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
    --runtime-version="$RUNTIME_VERSION" ${capacity[@]+"${capacity[@]}"} \
    ${CREATE_EXTRA[@]+"${CREATE_EXTRA[@]}"} ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}
else
  if [[ $PREEMPTIBLE == 1 ]]; then capacity=(--preemptible); fi
  log "TPU VM $TPU_NAME: $ACCELERATOR_TYPE ($NUM_WORKERS workers) in $ZONE"
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${LOC[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" \
    ${capacity[@]+"${capacity[@]}"} ${CREATE_EXTRA[@]+"${CREATE_EXTRA[@]}"} \
    ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}
fi

if [[ $WAIT == 1 ]]; then
  wait_ready
  if [[ $DRY_RUN != 1 ]]; then log "$TPU_NAME is READY"; fi
fi
