#!/usr/bin/env bash
# Runs Bazel tests offline with the project's virtualenv as the interpreter.
#
#   bash launch/bazel_test.sh [targets...]     (default: //:ops_tests)
#   e.g. bash launch/bazel_test.sh //:ops_tests //:nn_tests   or   //:all_tests
#
# Needs Bazel 4.x (Debian/Ubuntu: apt-get install bazel-bootstrap) and the
# virtualenv that launch/test.sh creates. WORKSPACE stubs rules_cc, rules_java
# and the coverage tools, so nothing is downloaded; third-party packages come
# from the virtualenv via --python_path. BUILD must be up to date
# (python tools/update_build.py).
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

command -v bazel >/dev/null 2>&1 ||
  die "bazel not found (Debian/Ubuntu: apt-get install bazel-bootstrap)"
[[ -x "$PY" ]] ||
  die "no virtualenv at $VENV: run 'bash launch/test.sh' first to create it"

cd "$SSM_ICL_ROOT"
log "Checking that BUILD matches the source tree"
"$PY" tools/update_build.py --check

# The interpreter for Bazel: the venv's Python with its site-packages on the
# path but without processing .pth files, so the editable ssm_icl install
# (a .pth import hook pointing at this checkout) cannot supply modules that a
# target forgot to depend on. Subprocesses that tests start use plain $PY.
site_dirs="$("$PY" -c 'import sysconfig
p = sysconfig.get_paths()
print(":".join(dict.fromkeys([p["purelib"], p["platlib"]])))')"
hermetic_python="$VENV/bin/python-bazel"
{
  echo '#!/usr/bin/env bash'
  echo '# Written by launch/bazel_test.sh; see the comment there.'
  # shellcheck disable=SC2016  # $PYTHONPATH and $@ expand in the wrapper
  printf 'PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}"%q exec %q -S "$@"\n' \
    "$site_dirs" "$PY"
} >"$hermetic_python"
chmod +x "$hermetic_python"

targets=("$@")
((${#targets[@]})) || targets=(//:ops_tests)
flags=(--incompatible_use_python_toolchains=false
  "--python_path=$hermetic_python")
# Plain, line-by-line output in CI logs.
[[ "${CI:-}" != true ]] || flags+=(--curses=no --color=no)
start=$SECONDS
log "bazel test ${targets[*]}"
status=0
bazel test "${flags[@]}" "${targets[@]}" || status=$?
if ((status != 0)); then
  printf 'error: bazel test failed (exit status %d) after %s\n' \
    "$status" "$(elapsed "$start")" >&2
  exit "$status"
fi
log "Bazel tests passed in $(elapsed "$start")"
