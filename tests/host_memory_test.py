"""Tests for ssm_icl/host_memory.py.

The effect is checked on what XLA:CPU does every step: a worker thread
mallocs the step's temporary buffer, writes it and frees it. In a fresh
process, with glibc's defaults (`0`) and each setting, counting minor page
faults per step (`getrusage`): a 48 MB buffer (about the quickstart step's)
faults in on every step with glibc's defaults and not under `heap`; a
150 MB one still does under `heap` (a thread heap holds 64 MB) and not
under `1`. (The speed-ups themselves are the module docstring's
measurements; a jitted program's own page faults mix in XLA's and YNNPACK's
other allocations, so they make a noisy test.)
"""

import json
import os
import subprocess
import sys

from absl.testing import absltest

from ssm_icl import host_memory

_PROBE = r"""
import ctypes, ctypes.util, json, resource, sys, threading
from ssm_icl import host_memory
applied = host_memory.configure({host_memory.ENV: sys.argv[1]})
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
result = {"applied": applied}


def faults_per_step(name, size):
  # What XLA:CPU does every step on a worker thread: malloc the step's
  # temporary buffer, write all of it, free it.
  def step():
    buf = libc.malloc(size)
    ctypes.memset(buf, 1, size)
    libc.free(buf)
  for _ in range(2):
    step()
  before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
  for _ in range(3):
    step()
  result[name] = (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
                  - before) / 3


# On a thread of its own, as XLA's workers (a thread arena unless `1`):
# 48 MB (above glibc's largest mmap threshold of 32 MB, below a thread
# heap's 64 MB, like the quickstart step's 47 MB) and 150 MB.
for name, size in (("medium", 48 << 20), ("large", 150 << 20)):
  thread = threading.Thread(target=faults_per_step, args=(name, size))
  thread.start()
  thread.join()
print(json.dumps(result))
"""


def _probe(setting: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop(host_memory.ENV, None)
  env.pop("XLA_FLAGS", None)  # one device is enough
  out = subprocess.run([sys.executable, "-c", _PROBE, setting],
                       env=env, capture_output=True, text=True, check=True,
                       timeout=300)
  return json.loads(out.stdout.strip().splitlines()[-1])


class WantedTest(absltest.TestCase):

  def _wanted(self, environ, plugins=(), platform="linux"):
    return host_memory.wanted(
        environ, find_spec=lambda name: object() if name in plugins else None,
        platform=platform)

  def test_cpu_only_linux_gets_heap_by_default_or_the_one_asked_for(self):
    self.assertEqual(self._wanted({}), ("heap", ""))
    self.assertEqual(self._wanted({host_memory.ENV: "heap"}), ("heap", ""))
    on = {host_memory.ENV: "1"}
    self.assertEqual(self._wanted(on), ("1", ""))
    self.assertEqual(self._wanted({**on, "JAX_PLATFORMS": "cpu"},
                                  plugins=("libtpu",)), ("1", ""))
    self.assertEqual(dict(host_memory.SETTINGS["1"])[host_memory.M_ARENA_MAX],
                     1)
    self.assertNotIn(host_memory.M_ARENA_MAX,
                     dict(host_memory.SETTINGS["heap"]))

  def test_off_and_other_platforms_are_left_alone(self):
    self.assertEqual(self._wanted({host_memory.ENV: "0"}),
                     (None, f"{host_memory.ENV}=0"))
    self.assertEqual(self._wanted({}, platform="darwin"),
                     (None, "not Linux (darwin)"))
    self.assertEqual(self._wanted({"JAX_PLATFORMS": "cuda,cpu"}),
                     (None, "JAX_PLATFORMS=cuda,cpu"))
    self.assertEqual(self._wanted({}, plugins=("jax_cuda12_plugin",)),
                     (None, "accelerator plugin jax_cuda12_plugin installed"))

  def test_other_values_are_a_user_error(self):
    with self.assertRaisesWithLiteralMatch(
        ValueError,
        f"{host_memory.ENV}='yes': expected heap (the default), 1 (one "
        "malloc arena, for steps with more than 64 MB of temporaries) or 0 "
        "(glibc's defaults)."):
      self._wanted({host_memory.ENV: "yes"})

  def test_configure_off_does_nothing(self):
    self.assertFalse(host_memory.configure({host_memory.ENV: "0"}))


class EffectTest(absltest.TestCase):

  def test_heap_keeps_medium_buffers_and_one_arena_keeps_large_ones(self):
    glibc, heap, arena = _probe("0"), _probe("heap"), _probe("1")
    self.assertFalse(glibc["applied"])
    self.assertTrue(heap["applied"])
    self.assertTrue(arena["applied"])
    # With glibc's defaults every step maps its buffer afresh: one fault per
    # 4 kB page (fewer with transparent huge pages, but thousands).
    self.assertGreater(glibc["medium"], 3000)
    self.assertGreater(glibc["large"], 5000)
    # heap: the 48 MB buffer stays in the thread's heap; the 150 MB one
    # does not fit a thread heap and is still mapped every step.
    self.assertLess(heap["medium"], glibc["medium"] / 10)
    self.assertGreater(heap["large"], glibc["large"] / 2)
    # 1: one arena grown with brk holds both.
    self.assertLess(arena["medium"], glibc["medium"] / 10)
    self.assertLess(arena["large"], glibc["large"] / 10)


if __name__ == "__main__":
  absltest.main()
