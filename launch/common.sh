# shellcheck shell=bash
# Shared helpers of the launch scripts: repository root, logging, dry-run
# printing, and an idempotent Python 3.11 virtualenv with ssm_icl installed.
# Source it (`source launch/common.sh`); it does nothing by itself.
#
# Environment:
#   SSM_ICL_VENV    virtualenv directory (default: <repo>/.venv)
#   SSM_ICL_PYTHON  interpreter that creates it (default: python3.11)
#   DRY_RUN=1       print commands instead of running them (`run`)

SSM_ICL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SSM_ICL_VENV:-$SSM_ICL_ROOT/.venv}"
# Bazel's --python_path and `cd` below need an absolute path.
[[ "$VENV" == /* ]] || VENV="$PWD/$VENV"
PY="$VENV/bin/python"
PYTHON_FOR_VENV="${SSM_ICL_PYTHON:-python3.11}"
# The CPU build of torch on our package index; an unpinned torch pulls a
# multi-gigabyte CUDA build.
TORCH_VERSION="2.13.0"
DRY_RUN="${DRY_RUN:-0}"
IS_PY311='import sys; sys.exit(sys.version_info[:2] != (3, 11))'

log() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Prints one shell word, quoted only when it needs it (shlex-compatible).
quote_word() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Prints a command line whose words a shell (or shlex.split) reads back as-is.
print_cmd() {
  local words=() word
  for word in "$@"; do
    words+=("$(quote_word "$word")")
  done
  printf '%s\n' "${words[*]}"
}

# Runs a command, or prints it under --dry-run.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    print_cmd "$@"
  else
    "$@"
  fi
}

# Seconds since $1 (a value of $SECONDS), as "12s" or "3m04s".
elapsed() {
  local s=$((SECONDS - $1))
  if ((s < 60)); then
    printf '%ds' "$s"
  else
    printf '%dm%02ds' $((s / 60)) $((s % 60))
  fi
}

# Creates the virtualenv with Python 3.11 unless it exists; checks its version.
ensure_venv() {
  if [[ -x "$PY" ]]; then
    "$PY" -c "$IS_PY311" ||
      die "$VENV uses $("$PY" --version 2>&1), but ssm_icl needs Python" \
        "3.11: remove $VENV or point SSM_ICL_VENV elsewhere"
    return
  fi
  if ! command -v "$PYTHON_FOR_VENV" >/dev/null 2>&1; then
    die "$PYTHON_FOR_VENV not found: ssm_icl needs Python 3.11. Install it" \
      "(Debian/Ubuntu: apt-get install python3.11 python3.11-venv; or" \
      "pyenv install 3.11) or set SSM_ICL_PYTHON to a Python 3.11 binary."
  fi
  "$PYTHON_FOR_VENV" -c "$IS_PY311" ||
    die "$PYTHON_FOR_VENV is $("$PYTHON_FOR_VENV" --version 2>&1), not" \
      "Python 3.11: set SSM_ICL_PYTHON to a Python 3.11 binary."
  log "Creating virtualenv $VENV ($PYTHON_FOR_VENV)"
  local existed=0
  [[ ! -e "$VENV" ]] || existed=1
  if ! run "$PYTHON_FOR_VENV" -m venv "$VENV"; then
    # A half-made venv (no pip) would pass the check above next time.
    ((existed)) || rm -rf "$VENV"
    die "could not create $VENV" \
      "(Debian/Ubuntu: apt-get install python3.11-venv)"
  fi
}

pip_install() {
  run "$PY" -m pip install --quiet --disable-pip-version-check "$@"
}

# Installs torch==$TORCH_VERSION (CPU build) unless that version is present.
ensure_torch_cpu() {
  local have
  have="$("$PY" -c 'import importlib.metadata as m
try:
  print(m.version("torch"))
except m.PackageNotFoundError:
  pass' 2>/dev/null || true)"
  if [[ "${have%%+*}" == "$TORCH_VERSION" ]]; then
    log "torch $have already installed"
    return
  fi
  log "Installing torch==$TORCH_VERSION (CPU build; takes a few minutes)"
  pip_install "torch==$TORCH_VERSION"
}

# Prints a key that changes whenever `pip install -e .[$1]` must be redone:
# another checkout, other extras, a changed setup.py, or a version bump that
# the installed metadata does not match yet. Prints nothing if not installed.
_install_key() {
  "$PY" - "$SSM_ICL_ROOT" "$1" <<'EOF' 2>/dev/null || true
import hashlib
import importlib.metadata
import pathlib
import re
import sys

root, extras = pathlib.Path(sys.argv[1]), sys.argv[2]
init = (root / "ssm_icl" / "__init__.py").read_text()
version = re.search(r'__version__ = "([^"]+)"', init).group(1)
try:
  installed = importlib.metadata.version("ssm_icl")
except importlib.metadata.PackageNotFoundError:
  installed = None
if installed == version:
  digest = hashlib.sha256(f"{root}\n{extras}\n{version}\n".encode())
  digest.update((root / "setup.py").read_bytes())
  print(digest.hexdigest())
EOF
}

# `pip install -e ".[extras]"`, skipped when the same install is recorded.
ensure_package() {
  local extras="$1" spec="." stamp key
  [[ -z "$extras" ]] || spec=".[$extras]"
  stamp="$VENV/.ssm_icl-install-${extras:-base}"
  key="$(_install_key "$extras")"
  if [[ -n "$key" && -f "$stamp" && "$(<"$stamp")" == "$key" ]]; then
    log "ssm_icl$([[ -z "$extras" ]] || echo "[$extras]") already installed"
    return
  fi
  log "Installing ssm_icl ($spec, editable)"
  (cd "$SSM_ICL_ROOT" && pip_install -e "$spec")
  if [[ "$DRY_RUN" != 1 ]]; then
    key="$(_install_key "$extras")"
    [[ -n "$key" ]] || die "pip install -e $spec left no ssm_icl install"
    printf '%s\n' "$key" >"$stamp"
  fi
}
