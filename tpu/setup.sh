#!/usr/bin/env bash
# Install one commit of ado_jax (with jax[tpu]) on every worker of the TPU VM.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<'EOF'
Usage: tpu/setup.sh [options]

Installs the same commit of ado_jax on every worker (--worker=all), so all hosts of a pod slice
run identical code. Two methods:
  archive (default)  `git archive <commit>` of the local checkout, copied to every worker with
                     `gcloud compute tpus tpu-vm scp --worker=all`, then `pip install -e .[tpu]`
                     (uncommitted changes are NOT shipped: commit first)
  pip                `pip install "ado-jax[tpu] @ git+$REPO_URL@<commit>"` on every worker (the
                     commit must be pushed to REPO_URL)

Options:
  --commit REF             commit to install (COMMIT; default: HEAD of the local checkout)
  --method archive|pip     install method (INSTALL_METHOD; default archive)
  --repo-url URL           git URL for --method pip (REPO_URL; default: the checkout's origin)
  --repo DIR               local checkout to archive (REPO_DIR; default: this repository)
EOF
  common_usage
}

script_flag() {
  case $1 in
    --commit) need_value "$@"; set_flag COMMIT "$2"; SHIFT_N=2 ;;
    --method) need_value "$@"; set_flag INSTALL_METHOD "$2"; SHIFT_N=2 ;;
    --repo-url) need_value "$@"; set_flag REPO_URL "$2"; SHIFT_N=2 ;;
    --repo) need_value "$@"; set_flag REPO_DIR "$2"; SHIFT_N=2 ;;
    *) return 1 ;;
  esac
}

parse_args "$@"
require PROJECT ZONE TPU_NAME
REPO_DIR=${REPO_DIR:-$(dirname "$TPU_DIR")}
INSTALL_METHOD=${INSTALL_METHOD:-archive}
case $INSTALL_METHOD in archive | pip) ;;
  *) die "invalid install method '$INSTALL_METHOD': expected archive or pip" ;;
esac

# Resolve to a full SHA so every worker (and a later watch.sh recovery) gets the same code.
sha=$(git -C "$REPO_DIR" rev-parse --verify --quiet "${COMMIT:-HEAD}^{commit}") ||
  die "cannot resolve commit '${COMMIT:-HEAD}' in git checkout '$REPO_DIR'"
if [[ -z ${COMMIT:-} && -n $(git -C "$REPO_DIR" status --porcelain --untracked-files=no) ]]; then
  log "warning: uncommitted changes in $REPO_DIR are not installed; installing commit $sha"
fi
short=${sha:0:12}
libtpu_links=https://storage.googleapis.com/jax-releases/libtpu_releases.html
pip_cmd="python3 -m pip install -q -f $libtpu_links"
loc_args

if [[ $INSTALL_METHOD == archive ]]; then
  tarball=${TMPDIR:-/tmp}/ado_jax-$short.tar.gz
  run git -C "$REPO_DIR" archive --format=tar.gz --prefix=ado_jax/ -o "$tarball" "$sha"
  run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:ado_jax-$short.tar.gz" "${LOC[@]}" \
    --worker=all ${SSH_EXTRA[@]+"${SSH_EXTRA[@]}"}
  install="rm -rf ado_jax && mkdir ado_jax && tar -xzf ado_jax-$short.tar.gz -C ado_jax --strip-components=1"
  install+=" && $pip_cmd -e './ado_jax[tpu]'"
else
  REPO_URL=${REPO_URL:-$(git -C "$REPO_DIR" remote get-url origin 2>/dev/null || true)}
  require REPO_URL
  install="$pip_cmd $(shquote "ado-jax[tpu] @ git+$REPO_URL@$sha")"
fi

# pip uninstall first: a new commit keeps the same version number, which pip would skip.
remote all "set -e; python3 -m pip uninstall -q -y ado-jax >/dev/null 2>&1 || true; $install && python3 -c 'import ado_jax' && echo $sha > ado_jax_commit && echo \"\$(hostname): ado_jax $short installed\""
if [[ $DRY_RUN != 1 ]]; then log "installed ado_jax $sha on every worker of $TPU_NAME"; fi
