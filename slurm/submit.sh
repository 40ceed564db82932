#!/usr/bin/env bash
# Submit slurm/train.sbatch with the settings of slurm/config.env: sbatch resources, the run dir
# and the `ado-jax train` arguments. Portable to bash >= 3.2.
set -euo pipefail

SLURM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# die, log, shquote, join_quoted, need_value, set_flag: the same helpers as the tpu/ scripts'.
# shellcheck source-path=SCRIPTDIR source=../tpu/_common.sh
. "$SLURM_DIR/../tpu/_common.sh"

# Every setting; precedence: flag > environment > config file > default.
SETTINGS="PARTITION ACCOUNT QOS NODES GPUS_PER_NODE CPUS_PER_TASK TIME_LIMIT JOB_NAME TRAIN_CONFIG
RUNS_DIR RUN_NAME RUN_DIR LOG_DIR WARN_SECONDS MAX_REQUEUES PREEMPT_WAIT JOB_SETUP SBATCH_FLAGS DRY_RUN"
# The settings train.sbatch reads from its environment (the job inherits sbatch's environment).
JOB_ENV="MAX_REQUEUES PREEMPT_WAIT GPUS_PER_NODE JOB_SETUP"

usage() {
  cat <<'EOF'
Usage: slurm/submit.sh [options] [-- extra `ado-jax train` arguments]

Submits slurm/train.sbatch: `srun ado-jax train --config $TRAIN_CONFIG --run-dir $RUN_DIR ...`
on NODES nodes, one task per node using its GPUS_PER_NODE GPUs. Before the time limit the
trainers save a checkpoint and the job requeues itself (at most MAX_REQUEUES times); the
requeued job resumes from the run dir. Submitting again with the same run dir also resumes.

Options (each also settable in slurm/config.env or the environment):
  --env-file FILE          settings file (default: slurm/config.env; env ADO_SLURM_CONFIG)
  --partition P            sbatch --partition (PARTITION)
  --account A              sbatch --account (ACCOUNT)
  --qos Q                  sbatch --qos (QOS)
  --nodes N                nodes, one training process each (NODES, default 1)
  --gpus-per-node G        sbatch --gpus-per-node (GPUS_PER_NODE, default 8; set it empty to
                           request GPUs in SBATCH_FLAGS instead, e.g. --gres=gpu:4)
  --cpus-per-task C        CPU cores per node for the trainer and its data loader (CPUS_PER_TASK)
  --time T                 time limit of each job, e.g. 24:00:00 (TIME_LIMIT; default: the partition's)
  --job-name NAME          (JOB_NAME, default ado-jax)
  --train-config C         preset (tiny, demo, gpt2-124m, 350m, 1b) or JSON file (TRAIN_CONFIG)
  --run-name NAME          run dir becomes $RUNS_DIR/NAME (RUN_NAME, default $JOB_NAME)
  --run-dir DIR            explicit run dir on a shared file system or gs:// (RUN_DIR)
  --steps N                passed as `--steps N`
  --set KEY=VALUE          passed as `--set KEY=VALUE` (repeatable)
  --max-requeues N         requeue at most N times in all (MAX_REQUEUES, default 20)
  --warn-seconds S         warning this long before the time limit (WARN_SECONDS, default 300)
  --dry-run                print the commands (prefixed '+ ') instead of running them
  -h, --help               show this help
More settings: RUNS_DIR (default ./runs), LOG_DIR (default: the run dir, or ./slurm_logs for
gs://), JOB_SETUP (shell code the job runs first), PREEMPT_WAIT, SBATCH_FLAGS (extra sbatch flags).
EOF
}

# run CMD...: run a command that changes something, or only print it under --dry-run (to stdout,
# unlike tpu/_common.sh's run, which prints to fd 3).
run() {
  if [[ $DRY_RUN == 1 ]]; then printf '+ %s\n' "$(join_quoted "$@")"; return 0; fi
  printf '+ %s\n' "$(join_quoted "$@")" >&2
  "$@"
}

whole_number() { if [[ ! $2 =~ ^[0-9]+$ ]]; then die "invalid $1 '$2': expected a whole number"; fi; }

STEPS='' SETS=() EXTRA_ARGS=()
while (($#)); do
  if [[ $1 == --*=* ]]; then
    flag=${1%%=*} value=${1#*=}
    shift
    set -- "$flag" "$value" "$@"
  fi
  n=2
  case $1 in
    -h | --help) usage; exit 0 ;;
    --env-file) need_value "$@"; ADO_SLURM_CONFIG=$2 ;;
    --partition) need_value "$@"; set_flag PARTITION "$2" ;;
    --account) need_value "$@"; set_flag ACCOUNT "$2" ;;
    --qos) need_value "$@"; set_flag QOS "$2" ;;
    --nodes) need_value "$@"; set_flag NODES "$2" ;;
    --gpus-per-node) need_value "$@"; set_flag GPUS_PER_NODE "$2" ;;
    --cpus-per-task) need_value "$@"; set_flag CPUS_PER_TASK "$2" ;;
    --time) need_value "$@"; set_flag TIME_LIMIT "$2" ;;
    --job-name) need_value "$@"; set_flag JOB_NAME "$2" ;;
    --train-config) need_value "$@"; set_flag TRAIN_CONFIG "$2" ;;
    --run-name) need_value "$@"; set_flag RUN_NAME "$2" ;;
    --run-dir) need_value "$@"; set_flag RUN_DIR "$2" ;;
    --steps) need_value "$@"; STEPS=$2 ;;
    --set) need_value "$@"; SETS+=("$2") ;;
    --max-requeues) need_value "$@"; set_flag MAX_REQUEUES "$2" ;;
    --warn-seconds) need_value "$@"; set_flag WARN_SECONDS "$2" ;;
    --dry-run) set_flag DRY_RUN 1; n=1 ;;
    --) shift; EXTRA_ARGS=("$@"); break ;;
    *) die "unknown option '$1' (see $SCRIPT_NAME --help)" ;;
  esac
  shift "$n"
done

# Settings: config file under environment under flags.
saved='' file=${ADO_SLURM_CONFIG:-$SLURM_DIR/config.env}
for v in $SETTINGS; do
  if [[ -n ${!v+x} ]]; then printf -v "ENV_$v" '%s' "${!v}"; saved+=" $v"; fi
done
if [[ -f $file ]]; then
  # shellcheck source=/dev/null
  source "$file"
elif [[ -n ${ADO_SLURM_CONFIG:-} ]]; then
  die "settings file '$file' not found"
fi
for v in $saved; do e="ENV_$v"; printf -v "$v" '%s' "${!e}"; done
for v in ${FLAGS_SEEN:-}; do f="FLAG_$v"; printf -v "$v" '%s' "${!f}"; done
NODES=${NODES:-1} GPUS_PER_NODE=${GPUS_PER_NODE-8} JOB_NAME=${JOB_NAME:-ado-jax}
WARN_SECONDS=${WARN_SECONDS:-300} RUNS_DIR=${RUNS_DIR:-runs} DRY_RUN=${DRY_RUN:-0}

if [[ -z ${TRAIN_CONFIG:-} ]]; then
  die "missing setting TRAIN_CONFIG: set it in slurm/config.env (copy slurm/config.env.example), export TRAIN_CONFIG=..., or pass --train-config"
fi
whole_number NODES "$NODES"
if ((NODES < 1)); then die "invalid NODES '$NODES': expected at least 1"; fi
if [[ -n $GPUS_PER_NODE ]]; then whole_number GPUS_PER_NODE "$GPUS_PER_NODE"; fi
if [[ -n ${CPUS_PER_TASK:-} ]]; then whole_number CPUS_PER_TASK "$CPUS_PER_TASK"; fi
whole_number WARN_SECONDS "$WARN_SECONDS"
if [[ -n ${MAX_REQUEUES:-} ]]; then whole_number MAX_REQUEUES "$MAX_REQUEUES"; fi
if [[ -n ${PREEMPT_WAIT:-} ]]; then whole_number PREEMPT_WAIT "$PREEMPT_WAIT"; fi
if [[ -n $STEPS ]]; then whole_number --steps "$STEPS"; fi

# Paths become absolute: the job may start (and restart) on a node whose cwd differs.
absolute() { case $1 in /* | *://*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "${1#./}" ;; esac; }
if [[ -z ${RUN_DIR:-} ]]; then RUN_DIR=$RUNS_DIR/${RUN_NAME:-$JOB_NAME}; fi
RUN_DIR=$(absolute "$RUN_DIR")
if [[ -z ${LOG_DIR:-} ]]; then
  case $RUN_DIR in *://*) LOG_DIR=slurm_logs ;; *) LOG_DIR=$RUN_DIR ;; esac
fi
LOG_DIR=$(absolute "$LOG_DIR")
config=$TRAIN_CONFIG
if [[ $config == *.json ]]; then
  if [[ ! -f $config ]]; then die "config file '$config' not found"; fi
  config=$(absolute "$config")
fi

train_args "$config" "$RUN_DIR"
train=("${TRAIN_ARGS[@]}")

sbatch=(sbatch --job-name="$JOB_NAME" --nodes="$NODES" --ntasks-per-node=1)
if [[ -n $GPUS_PER_NODE && $GPUS_PER_NODE != 0 ]]; then sbatch+=(--gpus-per-node="$GPUS_PER_NODE"); fi
if [[ -n ${CPUS_PER_TASK:-} ]]; then sbatch+=(--cpus-per-task="$CPUS_PER_TASK"); fi
if [[ -n ${TIME_LIMIT:-} ]]; then sbatch+=(--time="$TIME_LIMIT"); fi
if [[ -n ${PARTITION:-} ]]; then sbatch+=(--partition="$PARTITION"); fi
if [[ -n ${ACCOUNT:-} ]]; then sbatch+=(--account="$ACCOUNT"); fi
if [[ -n ${QOS:-} ]]; then sbatch+=(--qos="$QOS"); fi
sbatch+=(--requeue --signal=B:USR1@"$WARN_SECONDS" --open-mode=append --output="$LOG_DIR/%x-%j.out" --export=ALL)
read -r -a extra_sbatch <<<"${SBATCH_FLAGS:-}"
sbatch+=(${extra_sbatch[@]+"${extra_sbatch[@]}"} "$SLURM_DIR/train.sbatch" "${train[@]}")
# train.sbatch reads these from its environment (sbatch --export=ALL hands them over).
job_env=()
for v in $JOB_ENV; do
  if [[ -n ${!v:-} ]]; then job_env+=("$v=${!v}"); fi
done

if [[ $RUN_DIR != *://* ]]; then
  log "run dir $RUN_DIR: it must be on a file system that every node sees"
fi
if [[ -z ${JOB_SETUP:-} ]] && ! command -v ado-jax >/dev/null; then
  log "warning: ado-jax is not on PATH here; the job inherits this environment: activate it first or set JOB_SETUP"
fi
run mkdir -p "$LOG_DIR"
run env ${job_env[@]+"${job_env[@]}"} "${sbatch[@]}"
if [[ $DRY_RUN != 1 ]]; then log "log: $LOG_DIR/$JOB_NAME-<job id>.out (squeue --me shows the job)"; fi
