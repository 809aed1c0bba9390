#!/usr/bin/env bash
# Runs ssm_icl on a Cloud TPU VM or multi-host pod slice with gcloud.
#
# Usage: bash launch/tpu.sh [--dry-run] COMMAND [options]
#
#   create [--queued] [--spot | --reserved]
#                  create the TPU VM (--queued: as a queued resource; then wait
#                  until `status` says ACTIVE)
#   status [--queued]        describe the TPU VM (or the queued resource)
#   copy                     copy this checkout to every worker ($REPO_DIR)
#   setup                    on every worker: Python 3.11 virtualenv and
#                            `pip install -e .[tpu]` (idempotent)
#   run -- ARGS...           on every worker: kill stale TPU processes, then
#                            start `SSM_ICL_DIST_INIT=1 python -m ssm_icl.main
#                            ARGS` in the background, logging to
#                            ~/ssm_icl-<hostname>.log
#   logs [--all]             follow worker 0's log (--all: tail every worker's)
#   kill [--force]           stop the run on every worker: SIGTERM, so it saves
#                            a checkpoint and exits (--force: kill -9 and free
#                            the TPU devices)
#   delete [--queued]        delete the TPU VM (or the queued resource)
#
# Options: --dry-run prints every command instead of running it; -h, --help.
#
# Configuration comes only from the environment (nothing here names a
# project, bucket or credential):
#   TPU_NAME   (required) name of the TPU VM (the node id of a queued resource)
#   ZONE       (required) zone of the TPU, e.g. us-central2-b
#   PROJECT    GCP project (default: gcloud's configured project)
#   ACCEL      accelerator type (default: v4-32)
#   VERSION    TPU VM runtime version (default: tpu-ubuntu2204-base)
#   QR_ID      queued-resource id (default: $TPU_NAME-qr)
#   REPO_DIR   checkout directory on the workers, under $HOME (default: ssm_icl)
#
# Typical session (the workdir must be shared by all hosts, e.g. a GCS path):
#   export TPU_NAME=my-tpu ZONE=us-central2-b
#   bash launch/tpu.sh create
#   bash launch/tpu.sh copy && bash launch/tpu.sh setup
#   bash launch/tpu.sh run -- --config=configs/linear_regression.py:mamba \
#       --workdir=<shared dir>
#   bash launch/tpu.sh logs; bash launch/tpu.sh kill; bash launch/tpu.sh delete
#
# The worker-side steps are the internal commands setup-worker, run-worker
# and kill-worker, which `setup`, `run` and `kill` start on every worker.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

ACCEL="${ACCEL:-v4-32}"
VERSION="${VERSION:-tpu-ubuntu2204-base}"
REPO_DIR="${REPO_DIR:-ssm_icl}"
# Expanded by the worker's shell, not here.
# shellcheck disable=SC2088
LOG_GLOB='~/ssm_icl-*.log'
[[ "$REPO_DIR" =~ ^[A-Za-z0-9._-]+$ ]] ||
  die "REPO_DIR='$REPO_DIR' must be one directory name" \
    "(under the workers' home directory)"

require_env() {
  local var
  for var in "$@"; do
    [[ -n "${!var:-}" ]] ||
      die "$var is not set: export $var=... (see: bash launch/tpu.sh --help)"
  done
}

# Runs (or prints) `gcloud ARGS`, adding --project when PROJECT is set.
gcloud_cmd() {
  local cmd=(gcloud "$@")
  [[ -z "${PROJECT:-}" ]] || cmd+=("--project=$PROJECT")
  if [[ "$DRY_RUN" != 1 ]] && ! command -v gcloud >/dev/null 2>&1; then
    die "gcloud not found: install the Google Cloud CLI, or use --dry-run"
  fi
  run "${cmd[@]}"
}

# Runs a shell command on the given worker(s) of the TPU VM.
on_workers() {
  local worker="$1" command="$2"
  gcloud_cmd compute tpus tpu-vm ssh "$TPU_NAME" "--zone=$ZONE" \
    "--worker=$worker" "--command=$command"
}

# The command prefix that runs this script's worker-side commands remotely.
remote_script() {
  printf 'cd ~/%s && bash launch/tpu.sh' "$(quote_word "$REPO_DIR")"
}

# Fails unless the arguments are none or exactly the one allowed option.
allow_only() {
  local command="$1" allowed="$2"
  shift 2
  (($# == 0)) || [[ "$*" == "$allowed" ]] ||
    die "$command: unknown option '$1' (expected $allowed)"
}

cmd_create() {
  local queued=0 tier=()
  while (($#)); do
    case "$1" in
      --queued) queued=1 ;;
      --spot | --reserved) tier=("$1") ;;
      *)
        die "create: unknown option '$1'" \
          "(expected --queued, --spot, --reserved)"
        ;;
    esac
    shift
  done
  require_env TPU_NAME ZONE
  if ((queued)); then
    gcloud_cmd compute tpus queued-resources create "${QR_ID:-$TPU_NAME-qr}" \
      "--node-id=$TPU_NAME" "--zone=$ZONE" "--accelerator-type=$ACCEL" \
      "--runtime-version=$VERSION" ${tier[@]+"${tier[@]}"}
  else
    gcloud_cmd compute tpus tpu-vm create "$TPU_NAME" "--zone=$ZONE" \
      "--accelerator-type=$ACCEL" "--version=$VERSION" ${tier[@]+"${tier[@]}"}
  fi
}

cmd_status() {
  allow_only status --queued "$@"
  require_env TPU_NAME ZONE
  if [[ "${1:-}" == --queued ]]; then
    gcloud_cmd compute tpus queued-resources describe "${QR_ID:-$TPU_NAME-qr}" \
      "--zone=$ZONE"
  else
    gcloud_cmd compute tpus tpu-vm describe "$TPU_NAME" "--zone=$ZONE"
  fi
}

cmd_delete() {
  allow_only delete --queued "$@"
  require_env TPU_NAME ZONE
  if [[ "${1:-}" == --queued ]]; then
    gcloud_cmd compute tpus queued-resources delete "${QR_ID:-$TPU_NAME-qr}" \
      "--zone=$ZONE" --force --quiet
  else
    gcloud_cmd compute tpus tpu-vm delete "$TPU_NAME" "--zone=$ZONE" --quiet
  fi
}

# Copies the checkout's tracked and untracked-but-not-ignored files (no .venv,
# workdirs or caches) to ~/$REPO_DIR on every worker.
cmd_copy() {
  require_env TPU_NAME ZONE
  local stage="<staging_dir>"
  if [[ "$DRY_RUN" != 1 ]]; then
    stage="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand $stage now
    trap "rm -rf '$stage'" EXIT
    mkdir -p "$stage/$REPO_DIR"
    log "Staging the checkout in $stage/$REPO_DIR"
    (cd "$SSM_ICL_ROOT" && list_source_files | tar --null -T - -cf -) |
      tar -xf - -C "$stage/$REPO_DIR"
  fi
  gcloud_cmd compute tpus tpu-vm scp --recurse "$stage/$REPO_DIR" \
    "$TPU_NAME:" "--zone=$ZONE" --worker=all
}

# NUL-separated paths of the files to ship: git's tracked and untracked but
# not ignored files that exist, or everything but local state outside git.
list_source_files() {
  local path
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' path; do
        [[ ! -e "$path" ]] || printf '%s\0' "$path"
      done
  else
    find . \( -name .venv -o -name workdirs -o -name .git -o \
      -name __pycache__ \) -prune -o -type f -print0
  fi
}

cmd_setup() {
  require_env TPU_NAME ZONE
  on_workers all "$(remote_script) setup-worker"
}

cmd_run() {
  if [[ "${1:-}" == -- ]]; then shift; fi
  (($#)) || die "run: give the ssm_icl.main flags after --, e.g." \
    "run -- --config=configs/linear_regression.py:mamba --workdir=DIR"
  require_env TPU_NAME ZONE
  on_workers all "$(remote_script) run-worker -- $(print_cmd "$@")"
}

cmd_logs() {
  allow_only logs --all "$@"
  require_env TPU_NAME ZONE
  if [[ "${1:-}" == --all ]]; then
    on_workers all "tail -n 20 $LOG_GLOB"
  else
    on_workers 0 "tail -n 100 -F $LOG_GLOB"
  fi
}

cmd_kill() {
  allow_only kill --force "$@"
  require_env TPU_NAME ZONE
  on_workers all "$(remote_script) kill-worker${1:+ $1}"
}

# --- Worker side: these run on each TPU VM host. -----------------------------

# Kills processes that still hold the TPU (a crashed or killed earlier run)
# and removes libtpu's lock file, so the next run can open the devices.
free_tpu_devices() {
  local pids
  if [[ "$DRY_RUN" == 1 ]]; then
    echo 'sudo lsof -t /dev/accel* /dev/vfio/* |' \
      'sort -u | xargs -r sudo kill -9'
  else
    pids="$(sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u || true)"
    if [[ -n "$pids" ]]; then
      log "Killing processes holding the TPU: $(echo "$pids" | tr '\n' ' ')"
      # shellcheck disable=SC2086  # one argument per pid
      sudo kill -9 $pids
    fi
  fi
  run sudo rm -f "${TMPDIR:-/tmp}/libtpu_lockfile"
}

cmd_setup_worker() {
  if ! command -v "$PYTHON_FOR_VENV" >/dev/null 2>&1 ||
    ! "$PYTHON_FOR_VENV" -m ensurepip --version >/dev/null 2>&1; then
    log "Installing Python 3.11 from apt"
    run sudo apt-get update -qq
    run sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      python3.11 python3.11-venv
  fi
  if [[ "$DRY_RUN" == 1 && ! -x "$PY" ]]; then
    print_cmd "$PYTHON_FOR_VENV" -m venv "$VENV"
  else
    ensure_venv
  fi
  ensure_package tpu
}

cmd_run_worker() {
  if [[ "${1:-}" == -- ]]; then shift; fi
  local home=~ log_file pid_file
  log_file="$home/ssm_icl-$(hostname).log"
  pid_file="$home/ssm_icl.pid"
  free_tpu_devices
  cd "$SSM_ICL_ROOT"
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%s > %s 2>&1 &\n' \
      "$(print_cmd env SSM_ICL_DIST_INIT=1 "$PY" -m ssm_icl.main "$@")" \
      "$(quote_word "$log_file")"
    return
  fi
  [[ -x "$PY" ]] || die "no virtualenv at $VENV: run 'launch/tpu.sh setup'"
  # setsid + nohup: the run outlives the ssh session that started it.
  SSM_ICL_DIST_INIT=1 setsid nohup "$PY" -m ssm_icl.main "$@" \
    >"$log_file" 2>&1 </dev/null &
  echo $! >"$pid_file"
  log "Started ssm_icl.main on $(hostname) (pid $!), log: $log_file"
}

cmd_kill_worker() {
  local home=~ pid_file pid
  pid_file="$home/ssm_icl.pid"
  if [[ -f "$pid_file" ]]; then
    pid="$(<"$pid_file")"
    if [[ "$DRY_RUN" == 1 ]] || kill -0 "$pid" 2>/dev/null; then
      if [[ "${1:-}" == --force ]]; then
        run kill -9 "$pid"
      else
        # SIGTERM: the training loop saves a checkpoint and exits cleanly.
        run kill -TERM "$pid"
      fi
    fi
    run rm -f "$pid_file"
  else
    log "No run recorded on $(hostname)"
  fi
  [[ "${1:-}" != --force ]] || free_tpu_devices
}

main() {
  # --dry-run may come anywhere before a `--` (after which flags belong to
  # ssm_icl.main).
  local args=() arg passthrough=0
  for arg in "$@"; do
    if ((passthrough == 0)) && [[ "$arg" == --dry-run ]]; then
      DRY_RUN=1
      continue
    fi
    [[ "$arg" != -- ]] || passthrough=1
    args+=("$arg")
  done
  # ${a[@]+...}: an empty array is "unbound" for macOS's bash 3.2 under -u.
  set -- ${args[@]+"${args[@]}"}
  while (($#)); do
    case "$1" in
      -h | --help)
        usage
        return 0
        ;;
      -*) die "unknown option '$1' (see: bash launch/tpu.sh --help)" ;;
      *) break ;;
    esac
    shift
  done
  (($#)) || {
    usage >&2
    exit 2
  }
  local command="$1"
  shift
  case "$command" in
    create) cmd_create "$@" ;;
    status) cmd_status "$@" ;;
    copy) cmd_copy "$@" ;;
    setup) cmd_setup "$@" ;;
    run) cmd_run "$@" ;;
    logs) cmd_logs "$@" ;;
    kill) cmd_kill "$@" ;;
    delete) cmd_delete "$@" ;;
    setup-worker) cmd_setup_worker "$@" ;;
    run-worker) cmd_run_worker "$@" ;;
    kill-worker) cmd_kill_worker "$@" ;;
    *) die "unknown command '$command' (see: bash launch/tpu.sh --help)" ;;
  esac
}

main "$@"
