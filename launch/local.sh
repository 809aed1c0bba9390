#!/usr/bin/env bash
# Sets up everything on a fresh machine and runs the quickstart: trains a
# small model on in-context linear regression, then evaluates it against the
# least-squares and other baselines.
#
#   bash launch/local.sh [extra ssm_icl.main flags...]
#       e.g. bash launch/local.sh --config.train.steps=200
#   WORKDIR=DIR bash launch/local.sh        (default: workdirs/quickstart)
#
# Creates the Python 3.11 virtualenv .venv if missing and installs ssm_icl
# into it (skipped when already installed at this version). Results, metrics
# and checkpoints go to the workdir; the evaluation writes <workdir>/eval/.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 0
fi

start=$SECONDS
# A relative WORKDIR is relative to where the script was started from.
workdir="${WORKDIR:-$SSM_ICL_ROOT/workdirs/quickstart}"
[[ "$workdir" == /* ]] || workdir="$PWD/$workdir"

ensure_venv
ensure_package ""
log "Setup done in $(elapsed "$start")"

cd "$SSM_ICL_ROOT"
log "Training the quickstart into $workdir"
"$PY" -m ssm_icl.main --config=configs/quickstart.py --workdir="$workdir" "$@"
log "Evaluating $workdir"
"$PY" -m ssm_icl.eval --workdir="$workdir"
log "Done in $(elapsed "$start"); evaluation results are in $workdir/eval/"
