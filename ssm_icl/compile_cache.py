"""The persistent compilation cache of the command-line programs.

`python -m ssm_icl.main`, `ssm_icl.eval` and `ssm_icl.reproduce` keep every
compiled XLA program on disk, so a second start of the same run (a resume
after preemption, a rerun of a suite) loads its programs instead of
compiling them again. Where (`--compile_cache`, see `ssm_icl.cli`):

* unset: `$JAX_COMPILATION_CACHE_DIR` if set, else
  `$XDG_CACHE_HOME/ssm_icl/jax` (`~/.cache/ssm_icl/jax` without XDG);
* a directory (local or a URL JAX can write, e.g. `gs://bucket/cache`);
* `off` (or an empty value): no persistent cache.

JAX only caches programs that took >= 1 s to compile by default; here every
program is cached (minimum compile time 0, no minimum size), because on a
CPU the train step of a small model compiles in well under a second but a
run compiles dozens of small programs.

`CacheStats` listens to JAX's monitoring events and reports how many
programs were loaded and how much compile time that saved.
"""

from __future__ import annotations

import dataclasses
import os
import threading

import jax
from jax import monitoring

ENV_DIR = "JAX_COMPILATION_CACHE_DIR"
OFF_VALUES = ("", "off", "none", "false", "0")

# JAX's monitoring events (jax._src.compiler / dispatch); stable names.
_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_SAVED_EVENT = "/jax/compilation_cache/compile_time_saved_sec"
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def default_directory() -> str:
  """`$JAX_COMPILATION_CACHE_DIR`, else the user's cache dir + ssm_icl/jax."""
  if os.environ.get(ENV_DIR):
    return os.environ[ENV_DIR]
  base = (os.environ.get("XDG_CACHE_HOME")
          or os.path.join(os.path.expanduser("~"), ".cache"))
  return os.path.join(base, "ssm_icl", "jax")


def resolve_directory(value: str | None) -> str | None:
  """The cache directory for a `--compile_cache` value; None when off.

  Args:
    value: None (use `default_directory()`), one of `OFF_VALUES`
      (case-insensitive), or a directory (`~` is expanded; URLs are kept).
  """
  if value is None:
    return default_directory()
  if value.strip().lower() in OFF_VALUES:
    return None
  return value if "://" in value else os.path.expanduser(value)


@dataclasses.dataclass
class CacheStats:
  """Compilations of this process, from JAX's monitoring events.

  Attributes:
    hits: programs loaded from the persistent cache.
    saved_s: compile seconds those loads saved (as JAX estimates it: the
      stored compile time minus the time to read the entry).
    compiles: backend compilations, including cache loads.
    compile_s: seconds spent in them (loads included).
  """
  hits: int = 0
  saved_s: float = 0.0
  compiles: int = 0
  compile_s: float = 0.0

  def on_event(self, event: str, **kwargs) -> None:
    del kwargs
    if event == _HIT_EVENT:
      with _LOCK:
        self.hits += 1

  def on_duration(self, event: str, duration_secs: float, **kwargs) -> None:
    del kwargs
    with _LOCK:
      if event == _SAVED_EVENT:
        self.saved_s += duration_secs
      elif event == _COMPILE_EVENT:
        self.compiles += 1
        self.compile_s += duration_secs

  @property
  def compiled(self) -> int:
    """Programs compiled (not loaded from the cache)."""
    return max(self.compiles - self.hits, 0)

  def summary(self) -> str:
    """E.g. "3 programs loaded (saved 12.4 s of compilation), 1 compiled"."""
    return (f"{self.hits} programs loaded (saved {self.saved_s:.1f} s of "
            f"compilation), {self.compiled} compiled; {self.compile_s:.1f} s "
            "spent compiling or loading")


_LOCK = threading.Lock()
STATS = CacheStats()
_state = {"listening": False, "directory": None}


def enable(directory: str) -> None:
  """Turns on JAX's persistent cache in `directory`, for every program.

  Call before the first compilation. Also starts `STATS`.
  """
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  # -1: no minimum entry size (and no filesystem-specific override).
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  _state["directory"] = directory
  listen()


def listen() -> None:
  """Registers `STATS` with JAX's monitoring (once per process)."""
  if not _state["listening"]:
    monitoring.register_event_listener(STATS.on_event)
    monitoring.register_event_duration_secs_listener(STATS.on_duration)
    _state["listening"] = True


def active() -> bool:
  """Whether `STATS` is counting (`enable` or `configure` was called)."""
  return _state["listening"]


def directory() -> str | None:
  """The directory passed to `enable`, or None."""
  return _state["directory"]


def configure(value: str | None) -> str | None:
  """`resolve_directory(value)`, enabled if not off; returns the directory."""
  resolved = resolve_directory(value)
  if resolved is not None:
    enable(resolved)
  else:
    listen()  # still report compile times
  return resolved


def report() -> str:
  """One line for the console: where the cache is and what it saved."""
  where = _state["directory"]
  if where is None:
    return (f"Compilation cache off: {STATS.compiled} programs compiled in "
            f"{STATS.compile_s:.1f} s.")
  return f"Compilation cache {where}: {STATS.summary()}."
