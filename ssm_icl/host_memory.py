"""Keeps XLA:CPU's per-step buffers in the heap instead of fresh pages.

Every execution of a compiled XLA:CPU program allocates its temporary buffer
(all the step's intermediates: ~90 MB for a mini Mamba step at 128 tokens,
hundreds of MB for the paper configs) with `malloc` and frees it at the end.
glibc serves a request above its mmap threshold (at most 32 MB) with a fresh
`mmap` and returns it with `munmap`, so every step the kernel maps, zeroes
and unmaps the whole buffer again: one page fault per 4 kB. Measured on the
2-core CPU (2026-12-02, `perf`): 36% of a many-outlier Mamba step's time was
in the kernel, in those faults and in `munmap` (step times below).

`configure()` asks glibc (`mallopt`) to
  * never `mmap` an allocation (`M_MMAP_MAX` = 0), serving it from the heap;
  * keep freed memory (`M_TRIM_THRESHOLD` = 2 GiB - 1, `M_TOP_PAD` 64 MiB)
    instead of returning it to the kernel after each step;
  * use one arena (`M_ARENA_MAX` = 1): a thread's own arena is a heap of at
    most 64 MB, which cannot hold the buffer, and XLA allocates it on its
    worker threads, so only the main arena (grown with `brk`) can.

It is opt-in (`SSM_ICL_HOST_MALLOC=1`) because the single arena has a cost:
every thread, the Python one included, now takes the same malloc lock, and
on a short step that costs more than the faults it saves. Measured on the
same CPU and day (the trainer's mean over 20 steps, a few repeats):

  step (mini models, D = 32)                 default     SSM_ICL_HOST_MALLOC=1
  Mamba, many-outlier, batch 32, 128 tokens  145-172 ms  96-100 ms
  Transformer, linear regr., batch 64, 22 t  29-35 ms    45-55 ms

and the paper's Transformer-2 (batch 64, 82 tokens) 468 -> 395 ms, but
PyTorch's `GPT2Model` in the same process gains as much (391 -> 282 ms:
it allocates the same way). So turn it on for long prompts or big batches
on CPU (step buffers well above 32 MB: `compiled.memory_analysis()`), not
for the short linear-regression prompts.

Set it in the environment of a command (`SSM_ICL_HOST_MALLOC=1 python -m
ssm_icl.reproduce ...`; `--workers` children inherit it): `ssm_icl.cli.start`
applies it before XLA starts its thread pools (before the first
computation), which is required, since a thread keeps the arena it started
with. Importing `ssm_icl` changes nothing; a program of your own calls
`ssm_icl.host_memory.configure()` first thing. The same effect is had with
glibc's own variables (`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...
MALLOC_ARENA_MAX=1`). It is applied only on Linux (glibc), when JAX runs on
the CPU (`JAX_PLATFORMS` unset or naming cpu first, and no GPU/TPU plugin
installed).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import sys

from ssm_icl import errors

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
M_ARENA_MAX = -8

SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1),
            (M_TOP_PAD, 64 << 20), (M_ARENA_MAX, 1))
ENV = "SSM_ICL_HOST_MALLOC"
# Installed JAX backends other than the CPU (their import names).
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin",
                       "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")

_configured = False


def wanted(environ=None, find_spec=importlib.util.find_spec,
           platform: str = sys.platform) -> tuple[bool, str]:
  """(whether to configure malloc, why not if not): see the module doc.

  Raises:
    UserError: SSM_ICL_HOST_MALLOC is set to something other than 0 or 1.
  """
  environ = os.environ if environ is None else environ
  value = environ.get(ENV, "0")
  if value not in ("0", "1"):
    raise errors.UserError(f"{ENV}={value!r}: expected 0 (default) or 1.")
  if value != "1":
    return False, f"{ENV} is not 1"
  if not platform.startswith("linux"):
    return False, f"not Linux ({platform})"
  platforms = environ.get("JAX_PLATFORMS", "")
  if platforms:
    if platforms.split(",")[0].strip() != "cpu":
      return False, f"JAX_PLATFORMS={platforms}"
  else:
    for name in ACCELERATOR_PLUGINS:
      try:
        if find_spec(name) is not None:
          return False, f"accelerator plugin {name} installed"
      except (ImportError, ValueError):
        continue
  return True, ""


def configure(environ=None) -> bool:
  """Applies SETTINGS with glibc's `mallopt` if `wanted`; True if applied.

  Idempotent. Call before the first JAX computation (module docstring).
  """
  global _configured
  if _configured:
    return True
  ok, _ = wanted(environ)
  if not ok:
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  # mallopt returns 1 on success; a 0 leaves that parameter as it was.
  _configured = all(mallopt(param, value) == 1 for param, value in SETTINGS)
  return _configured
