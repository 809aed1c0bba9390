"""Tests for ssm_icl.ops.native_scan (the C++ CPU selective scan).

Its values and gradients against the numpy reference and the XLA scan are
tested with every other schedule in selective_scan_test.py ("native" is one
of its schedules); this file tests the build, the fallback, sharding and
batching.
"""

import os
import pathlib
import shutil
from unittest import mock

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.ops import native_scan
from ssm_icl.ops import selective_scan as selective_scan_lib


def _discretised(batch=8, length=13, e=6, n=4, seed=0):
  """(A [n, e], h0 [b, n, e], delta, du [b, l, e], B, C [b, l, n])."""
  rng = np.random.default_rng(seed)
  f32 = lambda *s: rng.normal(size=s).astype(np.float32)
  return (-np.exp(f32(n, e)), f32(batch, n, e),
          np.log1p(np.exp(f32(batch, length, e))), f32(batch, length, e),
          f32(batch, length, n), f32(batch, length, n))


def _loss_and_grads(args, chunk=4):
  def loss(*a):
    y, h = native_scan.selective_scan_native(*a, chunk)
    return jnp.sum(jnp.sin(y)) + jnp.sum(h * h)
  return jax.value_and_grad(loss, argnums=range(6))(*args)


class BuildTest(absltest.TestCase):

  def test_builds_here_and_is_cached(self):
    # CI installs a C++ compiler, so the kernel must build on it.
    self.assertIsNone(native_scan.unavailable_reason())
    self.assertTrue(native_scan.available())
    path = native_scan.library_path()
    self.assertEqual(path.parent, native_scan.cache_dir())
    mtime = path.stat().st_mtime_ns
    self.assertEqual(native_scan.library_path(), path)  # No rebuild.
    self.assertEqual(path.stat().st_mtime_ns, mtime)

  def test_cache_dir_from_environment(self):
    with mock.patch.dict(os.environ, {"SSM_ICL_NATIVE_CACHE": "/x/y"}):
      self.assertEqual(native_scan.cache_dir(), pathlib.Path("/x/y"))
    env = {"SSM_ICL_NATIVE_CACHE": "", "XDG_CACHE_HOME": "/c"}
    with mock.patch.dict(os.environ, env):
      self.assertEqual(native_scan.cache_dir(),
                       pathlib.Path("/c/ssm_icl/native"))

  def test_no_compiler_is_reported(self):
    with mock.patch.object(shutil, "which", return_value=None):
      with self.assertRaisesRegex(native_scan.NativeUnavailable,
                                  "no C.. compiler found"):
        native_scan.library_path()

  def test_failed_compile_is_reported_and_leaves_no_file(self):
    cache = self.create_tempdir().full_path
    env = {"SSM_ICL_NATIVE_CACHE": cache, "CXX": shutil.which("false")}
    with mock.patch.dict(os.environ, env):
      with self.assertRaisesRegex(native_scan.NativeUnavailable,
                                  "compiling selective_scan_cpu.cc with .*"
                                  "false failed: exit status 1"):
        native_scan.library_path()
    self.assertEqual(os.listdir(cache), [])


class FallbackTest(absltest.TestCase):

  def _scan(self, impl):
    rng = np.random.default_rng(3)
    f32 = lambda *s: rng.normal(size=s).astype(np.float32)
    return selective_scan_lib.selective_scan(
        f32(2, 5, 3), f32(2, 5, 3), f32(3, 2), f32(2, 5, 2), f32(2, 5, 2),
        None, dt_bias=None, impl=impl, chunk_size=2)

  def test_auto_falls_back_and_native_raises_when_unavailable(self):
    with mock.patch.object(native_scan, "_load", return_value="no luck"):
      self.assertEqual(selective_scan_lib._resolve("auto"), "sequential")
      np.testing.assert_allclose(self._scan("auto"), self._scan("sequential"))
      with self.assertRaisesRegex(native_scan.NativeUnavailable,
                                  "impl 'native' is unavailable here: no "
                                  "luck"):
        self._scan("native")

  def test_native_off_cpu_is_refused(self):
    with mock.patch.object(selective_scan_lib.jax, "default_backend",
                           return_value="gpu"):
      with self.assertRaisesRegex(ValueError, "impl 'native' is the CPU "
                                  "kernel; the default backend is 'gpu'"):
        selective_scan_lib._resolve("native")

  def test_disabled_by_environment(self):
    native_scan._load.cache_clear()
    try:
      with mock.patch.dict(os.environ, {"SSM_ICL_NATIVE": "0"}):
        self.assertIn("SSM_ICL_NATIVE=0", native_scan.unavailable_reason())
    finally:
      native_scan._load.cache_clear()
    self.assertTrue(native_scan.available())

  def test_linear_scan_rejects_native(self):
    with self.assertRaisesRegex(ValueError, "'native' is a selective-scan"):
      selective_scan_lib.scan_lib.linear_scan(
          jnp.ones((1, 3, 2)), jnp.ones((1, 3, 2)), impl="native")


class ExecutionTest(absltest.TestCase):

  def test_deterministic(self):
    args = _discretised()
    first = jax.jit(_loss_and_grads)(args)
    chex.assert_trees_all_equal(first, jax.jit(_loss_and_grads)(args))

  def test_batch_sharded_call_is_split_and_matches_one_device(self):
    mesh = jax.make_mesh((8,), ("data",))
    batched = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
        "data"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    args = _discretised(batch=8)
    shardings = (replicated,) + (batched,) * 5
    fn = jax.jit(_loss_and_grads, in_shardings=(shardings,))
    placed = tuple(jax.device_put(x, s) for x, s in zip(args, shardings))
    hlo = fn.lower(placed).compile().as_text()
    # Each device runs both kernels on its own row (the batch is split, not
    # gathered): their first result is [1, l, e], never [8, l, e].
    for kernel in ("fwd", "bwd"):
      self.assertRegex(hlo, r"= \(f32\[1,13,6\][^\n]*custom_call_target="
                       f"\"ssm_icl_selective_scan_{kernel}\"")
    self.assertNotRegex(hlo, r"= \(f32\[8,13,6\][^\n]*custom-call")
    chex.assert_trees_all_close(fn(placed), jax.jit(_loss_and_grads)(args),
                                rtol=1e-5, atol=1e-5)

  def test_vmap_matches_a_loop(self):
    # Shared A (folded into the batch) and one A per entry (mapped).
    args = _discretised(batch=2)
    scan = lambda *a: native_scan.selective_scan_native(*a, 3)
    for a_axis in (None, 0):
      stacked = [np.stack([a, a * 0.5]) for a in args]
      if a_axis is None:
        stacked[0] = args[0]
      axes = (a_axis,) + (0,) * 5
      ys, hs = jax.jit(jax.vmap(scan, in_axes=axes))(*stacked)
      grads = jax.jit(jax.vmap(jax.grad(
          lambda *a: jnp.sum(scan(*a)[0] ** 2), argnums=(0, 2)),
          in_axes=axes))(*stacked)
      for i in range(2):
        one = [s if a_axis is None and j == 0 else s[i]
               for j, s in enumerate(stacked)]
        y, h = scan(*one)
        np.testing.assert_allclose(ys[i], y, rtol=1e-6)
        np.testing.assert_allclose(hs[i], h, rtol=1e-6)
        want = jax.grad(lambda *a: jnp.sum(scan(*a)[0] ** 2),
                        argnums=(0, 2))(*one)
        np.testing.assert_allclose(grads[0][i], want[0], rtol=1e-5)
        np.testing.assert_allclose(grads[1][i], want[1], rtol=1e-5)


if __name__ == "__main__":
  absltest.main()
