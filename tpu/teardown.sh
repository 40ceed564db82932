#!/usr/bin/env bash
# Delete the TPU VM (or its queued resource). Checkpoints on the bucket are kept.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<'EOF_USAGE'
Usage: tpu/teardown.sh [options]

Deletes the TPU VM $TPU_NAME, or with QUEUED=1 the queued resource $QR_ID together with its TPU
(`--force`). Asks for confirmation on a terminal; without a terminal it refuses unless --yes.
The bucket (run dirs, checkpoints) is not touched. Stop training first (tpu/stop.sh) to save a
final checkpoint.

Options:
  -y, --yes                delete without asking
EOF_USAGE
  common_usage
}

YES=0
script_flag() {
  case $1 in
    -y | --yes) YES=1 ;;
    *) return 1 ;;
  esac
}

parse_args "$@"
require PROJECT ZONE TPU_NAME
if [[ $QUEUED == 1 ]]; then what="queued resource $QR_ID and TPU $TPU_NAME"; else what="TPU $TPU_NAME"; fi
if [[ $YES != 1 && $DRY_RUN != 1 ]]; then
  if [[ ! -t 0 ]]; then die "refusing to delete $what without --yes (stdin is not a terminal)"; fi
  read -r -p "Delete $what in $ZONE (project $PROJECT)? [y/N] " answer
  case $answer in y | Y | yes | YES) ;; *) die "not deleted" ;; esac
fi
loc_args
if [[ $QUEUED == 1 ]]; then
  run gcloud compute tpus queued-resources delete "$QR_ID" "${LOC[@]}" --force --quiet
else
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${LOC[@]}" --quiet
fi
