# shellcheck shell=bash
# Shared helpers of the launch scripts: repository root, logging, dry-run
# printing, and an idempotent virtualenv with ssm_icl installed, for either
# end of the supported JAX range (CI tests both).
# Source it (`source launch/common.sh`); it does nothing by itself.
#
# Environment:
#   SSM_ICL_STACK   oldest (default): Python 3.11 and the oldest supported
#                   JAX stack (jax 0.10.x), the one with the `interop` extra;
#                   newest: Python 3.12 and the newest jax/jaxlib/flax/orbax
#                   on the package index, without `interop` (PyTorch for 3.12
#                   would be a multi-gigabyte CUDA download)
#   SSM_ICL_VENV    virtualenv directory (default: <repo>/.venv for oldest,
#                   <repo>/.venv312 for newest)
#   SSM_ICL_PYTHON  interpreter that creates it (default: python3.11; for
#                   newest: python3.12 on PATH, else pyenv's newest 3.12)
#   DRY_RUN=1       print commands instead of running them (`run`)

SSM_ICL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="${SSM_ICL_STACK:-oldest}"
case "$STACK" in
  oldest)
    PY_VERSION="3.11"
    VENV="${SSM_ICL_VENV:-$SSM_ICL_ROOT/.venv}"
    ;;
  newest)
    PY_VERSION="3.12"
    VENV="${SSM_ICL_VENV:-$SSM_ICL_ROOT/.venv312}"
    ;;
  *)
    printf "error: SSM_ICL_STACK='%s' is not a stack: expected oldest or %s\n" \
      "$STACK" "newest" >&2
    exit 1
    ;;
esac
# Bazel's --python_path and `cd` below need an absolute path.
[[ "$VENV" == /* ]] || VENV="$PWD/$VENV"
PY="$VENV/bin/python"
PYTHON_FOR_VENV="${SSM_ICL_PYTHON:-python$PY_VERSION}"
# The CPU build of torch on our package index; an unpinned torch pulls a
# multi-gigabyte CUDA build.
TORCH_VERSION="2.13.0"
DRY_RUN="${DRY_RUN:-0}"
PRINT_PY_VERSION='import sys; print("%d.%d" % sys.version_info[:2])'

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

# Prints the "3.11"-style version of interpreter $1; nothing if it does not
# run (a pyenv shim of a version that is not selected exits non-zero).
py_version() {
  "$1" -c "$PRINT_PY_VERSION" 2>/dev/null || true
}

# Prints the interpreter that creates the virtualenv: SSM_ICL_PYTHON if set,
# else python$PY_VERSION if it runs, else pyenv's newest $PY_VERSION.x; prints
# nothing if there is none.
find_python() {
  if [[ -n "${SSM_ICL_PYTHON:-}" ||
    -n "$(py_version "$PYTHON_FOR_VENV")" ]]; then
    printf '%s\n' "$PYTHON_FOR_VENV"
    return
  fi
  command -v pyenv >/dev/null 2>&1 || return 0
  local version
  version="$(pyenv versions --bare 2>/dev/null |
    grep -E "^${PY_VERSION/./\\.}\.[0-9]+$" | sort -t. -k3,3n | tail -n 1)"
  [[ -z "$version" ]] ||
    printf '%s\n' "$(pyenv root)/versions/$version/bin/python$PY_VERSION"
}

# Creates the virtualenv with Python $PY_VERSION unless it exists; checks its
# version.
ensure_venv() {
  local have python
  if [[ -x "$PY" ]]; then
    have="$(py_version "$PY")"
    [[ "$have" == "$PY_VERSION" ]] ||
      die "$VENV uses $("$PY" --version 2>&1), but ssm_icl's $STACK stack" \
        "needs Python $PY_VERSION: remove $VENV or point SSM_ICL_VENV" \
        "elsewhere"
    return
  fi
  python="$(find_python)"
  if [[ -z "$python" ]] || ! command -v "$python" >/dev/null 2>&1; then
    die "${python:-$PYTHON_FOR_VENV (on PATH or under pyenv)} not found:" \
      "ssm_icl needs Python $PY_VERSION ($STACK stack). Install it" \
      "(Debian/Ubuntu: apt-get install python$PY_VERSION" \
      "python$PY_VERSION-venv; or pyenv install $PY_VERSION) or set" \
      "SSM_ICL_PYTHON to a Python $PY_VERSION binary."
  fi
  have="$(py_version "$python")"
  [[ "$have" == "$PY_VERSION" ]] ||
    die "$python is $("$python" --version 2>&1), not Python $PY_VERSION:" \
      "set SSM_ICL_PYTHON to a Python $PY_VERSION binary."
  log "Creating virtualenv $VENV ($python)"
  local existed=0
  [[ ! -e "$VENV" ]] || existed=1
  if ! run "$python" -m venv "$VENV"; then
    # A half-made venv (no pip) would pass the check above next time.
    ((existed)) || rm -rf "$VENV"
    die "could not create $VENV" \
      "(Debian/Ubuntu: apt-get install python$PY_VERSION-venv)"
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
  if [[ "$STACK" == newest ]]; then
    # The newest stack means the newest on the index today, not on the day
    # the virtualenv was made: always ask the index (pip keeps what is new).
    log "Installing ssm_icl ($spec, editable) with the newest dependencies"
    (cd "$SSM_ICL_ROOT" &&
      pip_install --upgrade --upgrade-strategy eager -e "$spec")
    return
  fi
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

# Prints the interpreter and JAX stack versions of the virtualenv, one line.
stack_versions() {
  "$PY" - <<'EOF' 2>/dev/null || true
import importlib.metadata
import platform

words = [f"Python {platform.python_version()}"]
for name in ("jax", "jaxlib", "flax", "orbax-checkpoint", "optax", "chex",
             "numpy", "torch"):
  try:
    words.append(f"{name} {importlib.metadata.version(name)}")
  except importlib.metadata.PackageNotFoundError:
    pass
print(", ".join(words))
EOF
}
