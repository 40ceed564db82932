#!/usr/bin/env bash
# Start `ado-jax train` on every worker of the TPU VM, detached, logging to a file per worker.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<'EOF'
Usage: tpu/launch.sh [options] [-- extra `ado-jax train` arguments]

Runs `ado-jax train --config $TRAIN_CONFIG --run-dir $RUN_DIR ...` on all workers at once
(`gcloud compute tpus tpu-vm ssh --worker=all`), detached with setsid/nohup so it survives the
ssh session. Each worker logs to ~/ado_jax_logs/train.log (earlier logs are renamed with a
timestamp), records the pid in train.pid and, when training ends, its exit code in train.exit.
Re-launching with the same run dir resumes from the latest complete checkpoint. Refuses to
start while a training process is still running on a worker.

Options:
  --train-config C         preset name (tiny, demo, gpt2-124m, 350m, 1b) or JSON file for
                           `ado-jax train --config` (TRAIN_CONFIG); a local .json file is first
                           copied to every worker as ~/ado_jax_train_config.json
  --run-name NAME          run dir becomes $BUCKET/runs/NAME (RUN_NAME; default $TPU_NAME)
  --run-dir DIR            explicit run dir, normally gs://... (RUN_DIR; overrides --run-name)
  --steps N                passed as `--steps N`
  --set KEY=VALUE          passed as `--set KEY=VALUE` (repeatable)
EOF
  common_usage
}

STEPS=''
SETS=()
script_flag() {
  case $1 in
    --train-config) need_value "$@"; set_flag TRAIN_CONFIG "$2"; SHIFT_N=2 ;;
    --run-name) need_value "$@"; set_flag RUN_NAME "$2"; SHIFT_N=2 ;;
    --run-dir) need_value "$@"; set_flag RUN_DIR "$2"; SHIFT_N=2 ;;
    --steps) need_value "$@"; STEPS=$2; SHIFT_N=2 ;;
    --set) need_value "$@"; SETS+=("$2"); SHIFT_N=2 ;;
    *) return 1 ;;
  esac
}

parse_args "$@"
require PROJECT ZONE TPU_NAME TRAIN_CONFIG
if [[ -z ${RUN_DIR:-} ]]; then
  require BUCKET
  RUN_DIR=$BUCKET/runs/${RUN_NAME:-$TPU_NAME}
fi
if [[ $RUN_DIR != gs://* ]]; then
  log "warning: run dir '$RUN_DIR' is not on a bucket: each worker writes its own copy and a re-created TPU starts from scratch"
fi
if [[ -n $STEPS && ! $STEPS =~ ^[0-9]+$ ]]; then die "invalid --steps '$STEPS': expected a whole number"; fi

config=$TRAIN_CONFIG
if [[ $config == *.json && -f $config ]]; then
  # A local JSON config is copied to every worker (same file everywhere, also after a re-create).
  config=ado_jax_train_config.json
  loc_args
  run gcloud compute tpus tpu-vm scp "$TRAIN_CONFIG" "$TPU_NAME:$config" "${LOC[@]}" --worker=all \
    ${SSH_EXTRA[@]+"${SSH_EXTRA[@]}"}
fi
train_args "$config" "$RUN_DIR"
train=(ado-jax train "${TRAIN_ARGS[@]}")

L=$REMOTE_LOG_DIR
# The wrapper records the trainer's pid (stop.sh signals exactly that process) and exit code.
inner="$(join_quoted "${train[@]}") & pid=\$!; echo \$pid > $L/train.pid; wait \$pid; echo \$? > $L/train.exit"
cmd="export PATH=\"\$HOME/.local/bin:\$PATH\"; mkdir -p $L"
cmd+="; command -v ado-jax >/dev/null || { echo \"\$(hostname): ado-jax not installed (run tpu/setup.sh)\"; exit 1; }"
cmd+="; $REMOTE_RUNNING_CHECK && { echo \"\$(hostname): already running (pid \$pid)\"; exit 1; }"
cmd+="; if [ -f $L/train.log ]; then mv $L/train.log $L/train.\$(date +%Y%m%d-%H%M%S).log; fi"
cmd+="; rm -f $L/train.exit $L/train.stopped; setsid nohup bash -c $(shquote "$inner") > $L/train.log 2>&1 < /dev/null &"
cmd+=" echo \"\$(hostname): started, log ~/$L/train.log\""
log "launching on all workers of $TPU_NAME, run dir $RUN_DIR"
remote all "$cmd"
