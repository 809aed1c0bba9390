#!/usr/bin/env bash
# Sets up everything on a fresh machine and runs the test suite.
#
#   bash launch/test.sh [pytest args...]   e.g. bash launch/test.sh tests/ops -x
#   SSM_ICL_STACK=newest bash launch/test.sh [pytest args...]
#
# Oldest stack (default): creates the Python 3.11 virtualenv .venv if missing,
# installs the CPU build of torch first (an unpinned torch pulls a
# multi-gigabyte CUDA build), then ssm_icl with the `test` and `interop`
# extras. Newest stack: the Python 3.12 virtualenv .venv312 with the newest
# JAX stack on the index and the `test` extra only; the interop tests are
# deselected (`-m "not interop"`, counted in pytest's summary). See
# launch/common.sh for the variables. Installs are skipped when already done
# (the newest stack always asks the index for upgrades). Prints the stack's
# versions, runs pytest (pytest.ini sets the test paths) on every core and
# exits with its status; "no tests collected" counts as a failure.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

start=$SECONDS
ensure_venv
# pytest-xdist (the `test` extra) runs one worker per core and hands each
# worker whole files, in collection order, which tests/conftest.py starts with
# the files that hold `slow` tests. Later arguments win: `-n 0` runs the
# tests in this process.
pytest_args=(-n auto --dist loadfile --no-loadscope-reorder "$@")
if [[ "$STACK" == newest ]]; then
  ensure_package "test"
  pytest_args=(-m "not interop" "${pytest_args[@]}")
else
  ensure_torch_cpu
  ensure_package "test,interop"
fi
log "Setup done in $(elapsed "$start")"
log "Stack $STACK: $(stack_versions)"

cd "$SSM_ICL_ROOT"
log "Running: python -m pytest $(print_cmd "${pytest_args[@]}")"
tests_start=$SECONDS
status=0
"$PY" -m pytest "${pytest_args[@]}" || status=$?
case "$status" in
  0)
    log "Tests passed in $(elapsed "$tests_start")" \
      "(total $(elapsed "$start"))"
    ;;
  5)
    die "pytest collected no tests (exit status 5); check the arguments:" \
      "${pytest_args[*]}"
    ;;
  *)
    printf 'error: tests failed (pytest exit status %d) after %s\n' \
      "$status" "$(elapsed "$tests_start")" >&2
    exit "$status"
    ;;
esac
