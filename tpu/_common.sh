# shellcheck shell=bash disable=SC2034  # its variables are read by the scripts that source it
# Shared helpers for the tpu/*.sh scripts: settings, flag parsing, the dry-run `run` wrapper and
# TPU state queries. Sourced, never executed. Portable to bash >= 3.2 (macOS): no associative
# arrays, no mapfile, no ${var@Q}.

TPU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT_NAME=$(basename "$0")

# Every setting; precedence: flag > environment > config file > default.
SETTINGS="PROJECT ZONE TPU_NAME ACCELERATOR_TYPE RUNTIME_VERSION BUCKET SPOT PREEMPTIBLE RESERVED
QUEUED QR_ID CREATE_FLAGS INSTALL_METHOD REPO_URL REPO_DIR COMMIT TRAIN_CONFIG RUN_NAME RUN_DIR SSH_FLAGS
POLL_INTERVAL WAIT_TIMEOUT DRY_RUN"

# On each worker (paths relative to the ssh user's home): logs, pid and exit code of the trainer.
REMOTE_LOG_DIR=ado_jax_logs
# Shell test, true while the launched trainer runs; leaves its pid in $pid.
REMOTE_RUNNING_CHECK="pid=\$(cat $REMOTE_LOG_DIR/train.pid 2>/dev/null || true); [ -n \"\$pid\" ] && kill -0 \"\$pid\" 2>/dev/null"

# Dry-run lines go to fd 3 (the script's stdout) so they also show from inside $(...).
exec 3>&1

die() { printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }
log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }

# shquote WORD: WORD quoted for a POSIX shell; plain words stay bare so output stays readable.
shquote() {
  local q="'\\''" # each ' becomes '\'' (close quote, escaped quote, reopen)
  case $1 in
    '') printf "''" ;;
    *[!A-Za-z0-9_./=:,@%+-]*) printf "'%s'" "${1//\'/$q}" ;;
    *) printf '%s' "$1" ;;
  esac
}

# join_quoted ARGS...: the args as one shell-quoted command line.
join_quoted() {
  local out='' a
  for a in "$@"; do out+="${out:+ }$(shquote "$a")"; done
  printf '%s' "$out"
}

# run CMD...: run a command that changes something, or only print it under --dry-run.
run() {
  if [[ ${DRY_RUN:-0} == 1 ]]; then
    printf '+ %s\n' "$(join_quoted "$@")" >&3
    return 0
  fi
  printf '+ %s\n' "$(join_quoted "$@")" >&2
  "$@"
}

# note TEXT: a comment line in dry-run output (what would be repeated, skipped, ...).
note() { if [[ ${DRY_RUN:-0} == 1 ]]; then printf '# %s\n' "$*" >&3; fi; }

common_usage() {
  cat <<'EOF'
Common options (each also settable in tpu/config.env or the environment):
  --env-file FILE          settings file (default: tpu/config.env; env TPU_CONFIG)
  --project ID             Google Cloud project (PROJECT)
  --zone ZONE              e.g. us-central2-b for v4, europe-west4-a for v3 (ZONE)
  --name NAME              TPU VM name (TPU_NAME)
  --type TYPE              accelerator type: v3-8 ... v3-2048, v4-8 ... v4-4096 (ACCELERATOR_TYPE)
  --runtime-version V      TPU software version (RUNTIME_VERSION; default tpu-ubuntu2204-base)
  --bucket gs://B          bucket for run directories and checkpoints (BUCKET)
  --spot | --preemptible   spot / legacy preemptible capacity (SPOT=1 / PREEMPTIBLE=1)
  --reserved               use reserved capacity (RESERVED=1)
  --queued                 use a queued resource instead of a plain TPU VM create (QUEUED=1)
  --dry-run                print every command (one per line, prefixed '+ ') instead of running it
  -h, --help               show this help
EOF
}

# set_flag VAR VALUE: remember a flag's value; applied after the config file is loaded.
set_flag() { printf -v "FLAG_$1" '%s' "$2"; FLAGS_SEEN="${FLAGS_SEEN:-} $1"; }

# parse_args ARGS...: common flags here, script flags via the script's `script_flag` function
# (which sets SHIFT_N to the number of words it used, or returns 1). Words after `--` go to
# EXTRA_ARGS. Then loads settings.
parse_args() {
  EXTRA_ARGS=()
  while (($#)); do
    if [[ $1 == --*=* ]]; then
      local flag=${1%%=*} value=${1#*=}
      shift
      set -- "$flag" "$value" "$@"
    fi
    SHIFT_N=1
    case $1 in
      -h | --help) usage; exit 0 ;;
      --env-file) need_value "$@"; TPU_CONFIG=$2; SHIFT_N=2 ;;
      --project) need_value "$@"; set_flag PROJECT "$2"; SHIFT_N=2 ;;
      --zone) need_value "$@"; set_flag ZONE "$2"; SHIFT_N=2 ;;
      --name) need_value "$@"; set_flag TPU_NAME "$2"; SHIFT_N=2 ;;
      --type | --accelerator-type) need_value "$@"; set_flag ACCELERATOR_TYPE "$2"; SHIFT_N=2 ;;
      --runtime-version | --version) need_value "$@"; set_flag RUNTIME_VERSION "$2"; SHIFT_N=2 ;;
      --bucket) need_value "$@"; set_flag BUCKET "$2"; SHIFT_N=2 ;;
      --spot) set_flag SPOT 1 ;;
      --preemptible) set_flag PREEMPTIBLE 1 ;;
      --reserved) set_flag RESERVED 1 ;;
      --queued) set_flag QUEUED 1 ;;
      --dry-run) set_flag DRY_RUN 1 ;;
      --) shift; EXTRA_ARGS=("$@"); break ;;
      *) if ! script_flag "$@"; then die "unknown option '$1' (see $SCRIPT_NAME --help)"; fi ;;
    esac
    shift "$SHIFT_N"
  done
  load_settings
}

# train_args CONFIG RUN_DIR: TRAIN_ARGS=(--config CONFIG --run-dir RUN_DIR [--steps $STEPS]
# [--set KEY=VALUE for each of $SETS] $EXTRA_ARGS...), the `ado-jax train` arguments of a launch.
train_args() {
  TRAIN_ARGS=(--config "$1" --run-dir "$2")
  if [[ -n ${STEPS:-} ]]; then TRAIN_ARGS+=(--steps "$STEPS"); fi
  local kv
  for kv in ${SETS[@]+"${SETS[@]}"}; do
    if [[ $kv != *=* ]]; then die "invalid --set '$kv': expected KEY=VALUE"; fi
    TRAIN_ARGS+=(--set "$kv")
  done
  TRAIN_ARGS+=(${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})
}

need_value() { if (($# < 2)); then die "option $1 needs a value"; fi; }

# Scripts without their own flags keep this default.
script_flag() { return 1; }

# load_settings: config file under environment under flags; then defaults and checks.
load_settings() {
  local v saved='' file=${TPU_CONFIG:-$TPU_DIR/config.env}
  for v in $SETTINGS; do
    if [[ -n ${!v+x} ]]; then printf -v "ENV_$v" '%s' "${!v}"; saved+=" $v"; fi
  done
  if [[ -f $file ]]; then
    # shellcheck source=/dev/null
    source "$file"
  elif [[ -n ${TPU_CONFIG:-} ]]; then
    die "settings file '$file' not found"
  fi
  for v in $saved; do local e="ENV_$v"; printf -v "$v" '%s' "${!e}"; done
  for v in ${FLAGS_SEEN:-}; do local f="FLAG_$v"; printf -v "$v" '%s' "${!f}"; done
  SPOT=${SPOT:-0} PREEMPTIBLE=${PREEMPTIBLE:-0} RESERVED=${RESERVED:-0} QUEUED=${QUEUED:-0}
  DRY_RUN=${DRY_RUN:-0} POLL_INTERVAL=${POLL_INTERVAL:-60} WAIT_TIMEOUT=${WAIT_TIMEOUT:-3600}
  QR_ID=${QR_ID:-${TPU_NAME:+$TPU_NAME-qr}}
  BUCKET=${BUCKET:-}
  BUCKET=${BUCKET%/}
  if [[ -n $BUCKET && $BUCKET != gs://* ]]; then BUCKET=gs://$BUCKET; fi
  read -r -a SSH_EXTRA <<<"${SSH_FLAGS:-}"
  read -r -a CREATE_EXTRA <<<"${CREATE_FLAGS:-}"
}

# export_settings: hand the resolved settings to child scripts (environment beats config file).
export_settings() {
  local v
  for v in $SETTINGS; do if [[ -n ${!v+x} ]]; then export "${v?}"; fi; done
  if [[ -n ${TPU_CONFIG:-} ]]; then export TPU_CONFIG; fi
}

# require VAR...: die with a clear message for each missing setting.
require() {
  local v
  for v in "$@"; do
    if [[ -z ${!v:-} ]]; then
      die "missing setting $v: set it in tpu/config.env (copy tpu/config.env.example), export $v=..., or pass the matching flag"
    fi
  done
}

# check_accelerator: ACCELERATOR_TYPE must be a v3 or v4 slice; sets GENERATION and NUM_WORKERS.
check_accelerator() {
  require ACCELERATOR_TYPE
  local t=$ACCELERATOR_TYPE cores
  if [[ ! $t =~ ^v([34])-([0-9]+)$ ]]; then
    die "invalid accelerator type '$t': expected v3-N or v4-N (e.g. v3-8, v3-32, v4-8, v4-32)"
  fi
  GENERATION=v${BASH_REMATCH[1]}
  cores=${BASH_REMATCH[2]}
  if [[ $GENERATION == v3 ]]; then
    case $cores in 8 | 32 | 64 | 128 | 256 | 512 | 1024 | 2048) ;;
      *) die "invalid accelerator type '$t': v3 slices are v3-8, -32, -64, -128, -256, -512, -1024 or -2048" ;;
    esac
  elif ((cores < 8 || cores > 4096 || cores % 8 != 0)); then
    die "invalid accelerator type '$t': v4 slices are v4-N with N a multiple of 8 from 8 to 4096"
  fi
  NUM_WORKERS=$((cores / 8)) # 4 chips (v4) or 8 cores (v3) per host
}

default_runtime_version() {
  # tpu-ubuntu2204-base serves both v3 and v4; older images use tpu-vm-base.
  RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
}

# Argument prefixes shared by every gcloud call.
loc_args() { LOC=(--project="$PROJECT" --zone="$ZONE"); }

# ssh_cmd WORKER COMMAND: sets SSH to the gcloud call running COMMAND on one worker or all.
ssh_cmd() {
  loc_args
  SSH=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${LOC[@]}" --worker="$1"
    ${SSH_EXTRA[@]+"${SSH_EXTRA[@]}"} --command="$2")
}

# remote WORKER COMMAND: run a shell command on one worker (0..N-1) or on all of them.
remote() { ssh_cmd "$1" "$2"; run "${SSH[@]}"; }

# query CMD...: a read-only call; printed under --dry-run (and not run), run quietly otherwise.
query() {
  if [[ $DRY_RUN == 1 ]]; then printf '+ %s\n' "$(join_quoted "$@")" >&3; return 0; fi
  "$@"
}

# describe_state KIND NAME FORMAT: prints the state, MISSING when not found, UNKNOWN on other
# errors (auth, network) so pollers can retry instead of re-creating a healthy TPU.
describe_state() {
  loc_args
  local out err rc=0 errfile
  errfile=$(mktemp "${TMPDIR:-/tmp}/ado_jax_tpu.XXXXXX")
  # stderr apart: gcloud prints notices there that must not be mistaken for the state.
  out=$(query gcloud compute tpus "$1" describe "$2" "${LOC[@]}" --format="value($3)" 2>"$errfile") || rc=$?
  err=$(cat "$errfile")
  rm -f "$errfile"
  if [[ $DRY_RUN == 1 ]]; then printf 'READY\n'; return 0; fi
  out=${out##*$'\n'}
  if ((rc == 0)); then printf '%s\n' "${out:-UNKNOWN}"; return 0; fi
  case $err in
    *NOT_FOUND* | *"not found"*) printf 'MISSING\n' ;;
    *) log "describe $2 failed: $err"; printf 'UNKNOWN\n' ;;
  esac
}

tpu_state() { describe_state tpu-vm "$TPU_NAME" state; }
qr_state() { describe_state queued-resources "$QR_ID" state.state; }

# wait_ready: poll until the TPU VM is READY; dies on a failed queued resource or timeout.
wait_ready() {
  local start=$SECONDS state qstate
  note "repeat every ${POLL_INTERVAL}s (at most ${WAIT_TIMEOUT}s) until the TPU is READY"
  while :; do
    state=$(tpu_state)
    if [[ $state == READY ]]; then return 0; fi
    if [[ $QUEUED == 1 && $state == MISSING ]]; then
      qstate=$(qr_state)
      case $qstate in FAILED | SUSPENDED | MISSING) die "queued resource $QR_ID is $qstate" ;; esac
      state="queued resource $qstate"
    fi
    if ((SECONDS - start >= WAIT_TIMEOUT)); then die "TPU $TPU_NAME not READY after ${WAIT_TIMEOUT}s (last: $state)"; fi
    log "waiting for $TPU_NAME: $state"
    sleep "$POLL_INTERVAL"
  done
}
