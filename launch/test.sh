#!/usr/bin/env bash
# Sets up everything on a fresh machine and runs the test suite.
#
#   bash launch/test.sh [pytest args...]   e.g. bash launch/test.sh tests/ops -x
#
# Creates the Python 3.11 virtualenv .venv if missing, installs the CPU build
# of torch first (an unpinned torch pulls a multi-gigabyte CUDA build), then
# ssm_icl with the `test` and `interop` extras, and runs pytest (pytest.ini
# sets the test paths). Installs are skipped when already done. Exits with
# pytest's status; "no tests collected" counts as a failure.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

start=$SECONDS
ensure_venv
ensure_torch_cpu
ensure_package "test,interop"
log "Setup done in $(elapsed "$start")"

cd "$SSM_ICL_ROOT"
log "Running: python -m pytest $*"
tests_start=$SECONDS
status=0
"$PY" -m pytest "$@" || status=$?
case "$status" in
  0)
    log "Tests passed in $(elapsed "$tests_start")" \
      "(total $(elapsed "$start"))"
    ;;
  5) die "pytest collected no tests (exit status 5); check the arguments: $*" ;;
  *)
    printf 'error: tests failed (pytest exit status %d) after %s\n' \
      "$status" "$(elapsed "$tests_start")" >&2
    exit "$status"
    ;;
esac
