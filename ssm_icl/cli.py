"""What the command-line programs share: error lines, flags, start-up.

`python -m ssm_icl.main`, `ssm_icl.eval` and `ssm_icl.reproduce` call
`run(main)` instead of `absl.app.run(main)`, and `start()` first thing in
`main`. A pod's log is a file read after the fact, so:

* a user's mistake prints ONE line, `error: <what was wrong>`, on stderr and
  exits with status `EXIT_USER_ERROR` (2), without a traceback. Mistakes are
  flag errors found by absl (unknown or missing flags, values of the wrong
  type, `--config.*` keys the locked config does not have, a config file
  that rejects its argument) and `ssm_icl.errors.UserError` or
  `absl.app.UsageError` raised by `main` or the library (bad config values,
  a bad workdir, an incompatible checkpoint). A message of several lines
  keeps its continuation lines, indented, so `grep '^error:'` finds one.
* any other exception is a bug in `ssm_icl`: it keeps its traceback and
  status 1.

`--compile_cache` (defined here once for every program) places the
persistent compilation cache; see `ssm_icl.compile_cache`.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, NoReturn

from absl import app
from absl import flags
from absl import logging

from ssm_icl import compile_cache
from ssm_icl import errors
from ssm_icl import host_memory

EXIT_USER_ERROR = 2

COMPILE_CACHE = flags.DEFINE_string(
    "compile_cache", None, "Persistent compilation cache directory (a second "
    "start of the same run then skips compilation). Default: "
    "$JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/ssm_icl/jax "
    "(~/.cache/ssm_icl/jax); 'off' disables it.")


def error_line(message: Any) -> str:
  """"error: <first line>", further lines indented by two spaces."""
  lines = str(message).strip().splitlines() or ["(no message)"]
  return "\n".join([f"error: {lines[0]}"] + [f"  {l}" for l in lines[1:]])


def fail(message: Any) -> NoReturn:
  """Prints `error_line(message)` on stderr and exits with status 2."""
  sys.stdout.flush()
  sys.stderr.write(error_line(message) + "\n")
  sys.stderr.flush()
  sys.exit(EXIT_USER_ERROR)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing; every parsing error becomes one error line.

  A locked config (`config_flags.DEFINE_config_file(lock_config=True)`)
  rejects `--config.model.nope=1` with config_dict's bare
  `AttributeError: 'nope'`; it is reported with the overrides given.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # unknown flag, bad value, missing --workdir
    fail(_flag_error_message(e))
  except OSError as e:  # an override touched a config file that did not load
    fail(f"--config: {_load_failure(e)}")
  except (AttributeError, KeyError) as e:
    key = str(e).strip("\"'")
    overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    fail(f"unknown config key {key!r} in the overrides {overrides}. The "
         "config is locked: every --config.* override must name an existing "
         "key (docs/TRAINING.md lists them).")


def config_value(holder: flags.FlagHolder) -> Any:
  """The value of a `config_flags` flag, checked to have loaded.

  config_flags defers a config file's load error (no such file) until the
  config is first used; this raises it as a `UserError` naming the flag.
  """
  try:
    holder.value.keys()
  except OSError as e:
    raise errors.UserError(f"--{holder.name}: {_load_failure(e)}") from None
  return holder.value


def _load_failure(error: OSError) -> str:
  """The last line of config_flags' load error, e.g. "[Errno 2] No such..."."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  return f"cannot load the config file ({lines[-1] if lines else error})"


def _flag_error_message(error: flags.Error) -> str:
  """absl's message, or the config file's own `UserError` without its trace.

  config_flags re-raises an error of `get_config` with the formatted
  traceback in its message, and absl wraps that in a flag error; a
  `UserError` there is the user's mistake (e.g. `--config=file.py:huge`), so
  only its message is shown.
  """
  cause, innermost = error, None
  while cause is not None:
    if isinstance(cause, errors.UserError):
      innermost = cause
    cause = cause.__cause__ or cause.__context__
  if innermost is None:
    return str(error)
  text = str(error)
  prefix = text.split(": ", 1)[0] if text.startswith("flag --") else "config"
  return f"{prefix}: {innermost}"


def run(main: Callable[[list[str]], Any]) -> None:
  """`absl.app.run(main)` with user mistakes printed as one error line."""

  def guarded(argv):
    try:
      return main(argv)
    except (errors.UserError, app.UsageError) as e:
      fail(e)

  app.run(guarded, flags_parser=parse_flags)


def exit_now(code: int = 0) -> NoReturn:
  """Flushes the output and exits at once, skipping interpreter teardown.

  Only for when every file is already closed: atexit handlers and object
  finalizers do not run.
  """
  sys.stdout.flush()
  sys.stderr.flush()
  logging.flush()
  os._exit(code)  # pylint: disable=protected-access


def start() -> str | None:
  """Start-up shared by every `main`; returns the compile cache directory.

  Hides absl/Orbax INFO logs (dozens of lines per checkpoint) unless
  `--verbosity` is given, keeps XLA:CPU's step buffers in the heap
  (`ssm_icl.host_memory`) and turns on the persistent compilation cache.
  Call before anything is compiled.
  """
  host_memory.configure()
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  return compile_cache.configure(COMPILE_CACHE.value)
