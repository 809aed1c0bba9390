"""Tests for ssm_icl/host_memory.py.

The effect is checked where it matters: a jitted program with ~130 MB of
temporaries, run in a fresh process, page-faults its buffer in on every
call by default and not once it has been configured (minor page faults
from `getrusage`).
"""

import json
import os
import subprocess
import sys

from absl.testing import absltest

from ssm_icl import host_memory

_PROBE = r"""
import json, resource, sys
from ssm_icl import host_memory
applied = (host_memory.configure({host_memory.ENV: "1"})
           if sys.argv[1] == "1" else False)
import jax, jax.numpy as jnp
# Two [4096, 4096] float32 temporaries (64 MB each): above glibc's largest
# mmap threshold (32 MB) and a thread arena's heap (64 MB).
f = jax.jit(lambda x: jnp.sum(jnp.tanh(x @ x.T) @ x))
x = jnp.ones((4096, 64), jnp.float32) / 64
for _ in range(2):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
  f(x).block_until_ready()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults_per_call": faults / 3}))
"""


def _probe(configure: bool) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop(host_memory.ENV, None)
  env.pop("XLA_FLAGS", None)  # one device is enough
  out = subprocess.run([sys.executable, "-c", _PROBE, "1" if configure else "0"],
                       env=env, capture_output=True, text=True, check=True,
                       timeout=300)
  return json.loads(out.stdout.strip().splitlines()[-1])


class WantedTest(absltest.TestCase):

  def _wanted(self, environ, plugins=(), platform="linux"):
    return host_memory.wanted(
        environ, find_spec=lambda name: object() if name in plugins else None,
        platform=platform)

  def test_opted_in_cpu_only_linux_is_configured(self):
    on = {host_memory.ENV: "1"}
    self.assertEqual(self._wanted(on), (True, ""))
    self.assertEqual(self._wanted({**on, "JAX_PLATFORMS": "cpu"},
                                  plugins=("libtpu",)), (True, ""))

  def test_default_and_other_platforms_are_left_alone(self):
    off = (False, f"{host_memory.ENV} is not 1")
    self.assertEqual(self._wanted({}), off)
    self.assertEqual(self._wanted({host_memory.ENV: "0"}), off)
    on = {host_memory.ENV: "1"}
    self.assertEqual(self._wanted(on, platform="darwin"),
                     (False, "not Linux (darwin)"))
    self.assertEqual(self._wanted({**on, "JAX_PLATFORMS": "cuda,cpu"}),
                     (False, "JAX_PLATFORMS=cuda,cpu"))
    self.assertEqual(self._wanted(on, plugins=("jax_cuda12_plugin",)),
                     (False, "accelerator plugin jax_cuda12_plugin installed"))

  def test_other_values_are_a_user_error(self):
    with self.assertRaisesWithLiteralMatch(
        ValueError, f"{host_memory.ENV}='yes': expected 0 (default) or 1."):
      self._wanted({host_memory.ENV: "yes"})

  def test_configure_without_opt_in_does_nothing(self):
    self.assertFalse(host_memory.configure({}))


class EffectTest(absltest.TestCase):

  def test_step_buffers_stop_faulting_in_once_configured(self):
    default = _probe(configure=False)
    configured = _probe(configure=True)
    self.assertTrue(configured["applied"])
    # By default every call maps its 128 MB afresh: ~32k faults of 4 kB
    # (fewer with transparent huge pages, but thousands).
    self.assertGreater(default["faults_per_call"], 5000)
    self.assertLess(configured["faults_per_call"],
                    default["faults_per_call"] / 10)


if __name__ == "__main__":
  absltest.main()
