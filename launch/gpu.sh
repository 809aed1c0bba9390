#!/usr/bin/env bash
# Runs ssm_icl on one machine with one or more NVIDIA GPUs.
#
# Usage: bash launch/gpu.sh [--dry-run] COMMAND [options]
#
#   setup                    Python 3.11 virtualenv .venv and
#                            `pip install -e .[gpu]` (CUDA 12 JAX; idempotent)
#   run [--processes N] [--port PORT] -- ARGS...
#                            train with `python -m ssm_icl.main ARGS`:
#                            by default one process that drives every local
#                            GPU; with --processes N, N local processes joined
#                            by jax.distributed on 127.0.0.1:PORT, each owning
#                            NUM_GPUS/N GPUs (CUDA_VISIBLE_DEVICES), logging
#                            to $LOG_DIR/process-<i>.log
#
# Options: --dry-run prints every command instead of running it; -h, --help.
#
# Environment:
#   NUM_GPUS   GPUs to use (default: all that `nvidia-smi -L` lists)
#   LOG_DIR    per-process logs of --processes runs (default: workdirs/gpu_logs)
#
# Example:
#   bash launch/gpu.sh setup
#   bash launch/gpu.sh run -- --config=configs/linear_regression.py:mamba \
#       --workdir=workdirs/lr_mamba
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

LOG_DIR="${LOG_DIR:-$SSM_ICL_ROOT/workdirs/gpu_logs}"

# Number of GPUs to use: $NUM_GPUS, else what nvidia-smi lists.
gpu_count() {
  local n="${NUM_GPUS:-}"
  if [[ -z "$n" ]]; then
    command -v nvidia-smi >/dev/null 2>&1 ||
      die "nvidia-smi not found: install the NVIDIA driver, or set NUM_GPUS"
    n="$(nvidia-smi -L | grep -c '^GPU ' || true)"
  fi
  [[ "$n" =~ ^[0-9]+$ ]] || die "NUM_GPUS='$n' must be a whole number"
  ((n > 0)) || die "no GPUs found (nvidia-smi -L lists none); set NUM_GPUS"
  echo "$n"
}

free_port() {
  "$PY" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

cmd_setup() {
  if [[ "$DRY_RUN" == 1 && ! -x "$PY" ]]; then
    print_cmd "$PYTHON_FOR_VENV" -m venv "$VENV"
  else
    ensure_venv
  fi
  ensure_package gpu
}

cmd_run() {
  local processes=0 port=""
  while (($#)); do
    case "$1" in
      --processes)
        processes="${2:-}"
        shift
        ;;
      --processes=*) processes="${1#*=}" ;;
      --port)
        port="${2:-}"
        shift
        ;;
      --port=*) port="${1#*=}" ;;
      --)
        shift
        break
        ;;
      *)
        die "run: unknown option '$1'" \
          "(expected --processes N, --port PORT, --)"
        ;;
    esac
    shift
  done
  (($#)) || die "run: give the ssm_icl.main flags after --, e.g." \
    "run -- --config=configs/linear_regression.py:mamba --workdir=DIR"
  [[ "$DRY_RUN" == 1 || -x "$PY" ]] ||
    die "no virtualenv at $VENV: run 'bash launch/gpu.sh setup' first"
  cd "$SSM_ICL_ROOT"
  if [[ "$processes" == 0 ]]; then
    run "$PY" -m ssm_icl.main "$@"
    return
  fi
  [[ "$processes" =~ ^[1-9][0-9]*$ ]] ||
    die "--processes='$processes' must be a positive whole number"
  local n_gpus
  n_gpus="$(gpu_count)"
  ((n_gpus % processes == 0)) ||
    die "--processes=$processes does not divide the $n_gpus GPUs" \
      "(NUM_GPUS); choose a divisor of $n_gpus"
  [[ -n "$port" ]] || port="$(free_port)"
  [[ "$port" =~ ^[0-9]+$ ]] || die "--port='$port' must be a port number"
  run_processes "$processes" "$((n_gpus / processes))" "$port" "$@"
}

# Starts N processes of ssm_icl.main, process i on GPUs [i*per, (i+1)*per),
# waits for all of them, and fails if any fails. Ctrl-C stops all of them
# with SIGTERM, which makes the training loop save a checkpoint.
run_processes() {
  local n="$1" per="$2" port="$3" i g
  shift 3
  local pids=() devices log_file status=0
  [[ "$DRY_RUN" == 1 ]] || mkdir -p "$LOG_DIR"
  for ((i = 0; i < n; i++)); do
    devices=""
    for ((g = i * per; g < (i + 1) * per; g++)); do
      devices+="${devices:+,}$g"
    done
    log_file="$LOG_DIR/process-$i.log"
    local cmd=(env "CUDA_VISIBLE_DEVICES=$devices" "$PY" -m ssm_icl.main "$@"
      "--coordinator_address=127.0.0.1:$port" "--num_processes=$n"
      "--process_id=$i")
    if [[ "$DRY_RUN" == 1 ]]; then
      printf '%s > %s 2>&1 &\n' "$(print_cmd "${cmd[@]}")" \
        "$(quote_word "$log_file")"
      continue
    fi
    "${cmd[@]}" >"$log_file" 2>&1 </dev/null &
    pids+=("$!")
    log "process $i (GPUs $devices): pid $!, log $log_file"
  done
  [[ "$DRY_RUN" != 1 ]] || return 0
  # shellcheck disable=SC2064  # expand the pids now
  trap "kill -TERM ${pids[*]} 2>/dev/null || true" INT TERM
  log "Following process 0's log (Ctrl-C stops all processes)"
  tail -n +1 -F "$LOG_DIR/process-0.log" &
  local tail_pid=$!
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || {
      status=$?
      warn "process $i exited with status $status" \
        "(log: $LOG_DIR/process-$i.log)"
    }
  done
  kill "$tail_pid" 2>/dev/null || true
  ((status == 0)) || die "a process failed; see the logs in $LOG_DIR"
  log "All $n processes finished"
}

main() {
  local args=() arg passthrough=0
  for arg in "$@"; do  # --dry-run may come anywhere before `--`
    if ((passthrough == 0)) && [[ "$arg" == --dry-run ]]; then
      DRY_RUN=1
      continue
    fi
    [[ "$arg" != -- ]] || passthrough=1
    args+=("$arg")
  done
  # ${a[@]+...}: an empty array is "unbound" for macOS's bash 3.2 under -u.
  set -- ${args[@]+"${args[@]}"}
  case "${1:-}" in
    -h | --help) usage ;;
    setup) cmd_setup "${@:2}" ;;
    run) cmd_run "${@:2}" ;;
    "")
      usage >&2
      exit 2
      ;;
    *) die "unknown command '$1' (see: bash launch/gpu.sh --help)" ;;
  esac
}

main "$@"
