"""Keeps XLA:CPU's per-step buffers in the heap instead of fresh pages.

Every execution of a compiled XLA:CPU program allocates its temporary buffer
(all the step's intermediates in one block: 47 MB for the quickstart's
MambaFormer step, ~90 MB for a mini Mamba step at 128 tokens, hundreds of MB
for the paper configs) with `malloc` and frees it at the end. glibc serves a
request above its mmap threshold (at most 32 MB) with a fresh `mmap` and
returns it with `munmap`, so every step the kernel maps, zeroes and unmaps
the whole buffer again: one page fault per 4 kB. Measured on the 2-core CPU
(`perf`): 36% of a many-outlier Mamba step's time (2026-12-02) and 25% of
the quickstart's (2026-12-03) were in the kernel, in those faults and in
`munmap`.

Three values of `SSM_ICL_HOST_MALLOC` (the first two set `mallopt`):

  * `heap` (the default): never `mmap` an allocation (`M_MMAP_MAX` = 0) and
    keep freed memory instead of returning it to the kernel after each step
    (`M_TRIM_THRESHOLD` = 2 GiB - 1). XLA allocates the buffer on its worker
    threads, each with its own malloc arena, whose heap holds at most 64 MB:
    a buffer below that stays in the worker's heap from step to step; a
    larger one is still mapped afresh (glibc falls back to `mmap` when a
    thread heap cannot hold it), as without the setting.
  * `1` (opt-in, for steps with more than 64 MB of temporaries: long
    prompts, big batches; `compiled.memory_analysis().temp_size_in_bytes`):
    the same plus one arena for every thread (`M_ARENA_MAX` = 1, grown with
    `brk`, `M_TOP_PAD` 64 MiB), which can hold a buffer of any size. Its
    cost: every thread, the Python one included, takes the same malloc lock,
    which on a short step costs more than the faults it saves.
  * `0`: glibc's defaults.

Train step (jitted Adam step with on-device sampling; the buffer from
`memory_analysis`), medians of 20 steps in two rounds per setting, each in
its own process, the 2-core CPU idle, 2026-12-03:

  step (batch, tokens)                      buffer  0 (glibc)  heap   1
  mini Transformer, lin. regr. (64, 22)      24 MB   19 ms     17    24
  mini MambaFormer, lin. regr. (64, 22)      30 MB   16-18     15    27-31
  mini Transformer, MQAR (64, 33)            40 MB   38        24    32-41
  mini Mamba, MQAR (64, 33)                  46 MB   38        23-30 28
  quickstart MambaFormer D=64 (64, 18)       47 MB   37-39     25-32 33-34
  mini Transformer, decision tree (64, 42)   55 MB   58        33-35 43-51
  mini Mamba, sparse parity (64, 48)         66 MB   54-55     52-68 38-43
  mini Mamba, many-outlier (32, 128)         89 MB   66-69     67-70 50-60
  mini Transformer, many-outlier (32, 128)  153 MB   116-128   115   72-89
  paper Transformer-2, lin. regr. (64, 82)  234 MB   242       256   242
  paper Mamba-4, lin. regr. (64, 82)        454 MB   410       356   235

(the paper configs: one round.) So `heap` helps every step whose buffer is
between 32 and 64 MB (1.2-1.7x), leaves the others as they were (within
the noise) and is the default; `1` pays only above 64 MB and costs 1.3-1.8x
on short steps. PyTorch allocates the same way, so the PyTorch peers of
`benchmarks/train_step_bench.py` gain in the same process.

Set it in the environment of a command (`SSM_ICL_HOST_MALLOC=1 python -m
ssm_icl.reproduce ...`; `--workers` children inherit it): `ssm_icl.cli.start`
applies it before XLA starts its thread pools (before the first
computation), which is required, since a thread keeps the arena it started
with. Importing `ssm_icl` changes nothing; a program of your own calls
`ssm_icl.host_memory.configure()` first thing. The same effect is had with
glibc's own variables (`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`, plus
`MALLOC_ARENA_MAX=1` for `1`). It is applied only on Linux (glibc), when JAX
runs on the CPU (`JAX_PLATFORMS` unset or naming cpu first, and no GPU/TPU
plugin installed). The memory a step frees is kept by the process (its
resident size stays at its peak) until it exits.
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

ENV = "SSM_ICL_HOST_MALLOC"
DEFAULT = "heap"
_HEAP = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
# The value of ENV -> the (parameter, value) pairs given to mallopt.
SETTINGS = {
    "heap": _HEAP,
    "1": _HEAP + ((M_TOP_PAD, 64 << 20), (M_ARENA_MAX, 1)),
    "0": (),
}
# Installed JAX backends other than the CPU (their import names).
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin",
                       "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")

_configured = False


def wanted(environ=None, find_spec=importlib.util.find_spec,
           platform: str = sys.platform) -> tuple[str | None, str]:
  """(the SETTINGS key to apply or None, why none if None): module doc.

  Raises:
    UserError: SSM_ICL_HOST_MALLOC is set to something not in SETTINGS.
  """
  environ = os.environ if environ is None else environ
  value = environ.get(ENV, DEFAULT)
  if value not in SETTINGS:
    raise errors.UserError(
        f"{ENV}={value!r}: expected heap (the default), 1 (one malloc arena, "
        "for steps with more than 64 MB of temporaries) or 0 (glibc's "
        "defaults).")
  if not SETTINGS[value]:
    return None, f"{ENV}={value}"
  if not platform.startswith("linux"):
    return None, f"not Linux ({platform})"
  platforms = environ.get("JAX_PLATFORMS", "")
  if platforms:
    if platforms.split(",")[0].strip() != "cpu":
      return None, f"JAX_PLATFORMS={platforms}"
  else:
    for name in ACCELERATOR_PLUGINS:
      try:
        if find_spec(name) is not None:
          return None, f"accelerator plugin {name} installed"
      except (ImportError, ValueError):
        continue
  return value, ""


def configure(environ=None) -> bool:
  """Applies the `wanted` SETTINGS with glibc's `mallopt`; True if applied.

  Idempotent (the first call decides). Call before the first JAX
  computation (module docstring).
  """
  global _configured
  if _configured:
    return True
  mode, _ = wanted(environ)
  if mode is None:
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  # mallopt returns 1 on success; a 0 leaves that parameter as it was.
  _configured = all(mallopt(param, value) == 1
                    for param, value in SETTINGS[mode])
  return _configured
