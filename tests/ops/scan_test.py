"""Tests for ssm_icl.ops.scan: every schedule against a float64 numpy loop."""

import functools
import itertools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.ops import scan

# (impl, inner_impl) pairs; chunk size 6 divides none of the lengths below
# except 1 (a single, padded chunk).
_SCHEDULES = (
    ("sequential", "associative"),
    ("associative", "associative"),
    ("chunked", "associative"),
    ("chunked", "sequential"),
)
_CHUNK = 6


def _inputs(length, batch=2, width=3, seed=0):
  rng = np.random.default_rng(seed)
  a = rng.uniform(0.3, 1.0, (batch, length, width)).astype(np.float32)
  b = rng.normal(size=(batch, length, width)).astype(np.float32)
  h0 = rng.normal(size=(batch, width)).astype(np.float32)
  w = rng.normal(size=(batch, length, width)).astype(np.float32)
  w_last = rng.normal(size=(batch, width)).astype(np.float32)
  return a, b, h0, w, w_last


def _np_scan(a, b, h0, reverse):
  """float64 loop; returns h [b, l, ...] and h_last."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  h = np.zeros_like(b)
  state = np.asarray(h0, np.float64)
  order = range(b.shape[1] - 1, -1, -1) if reverse else range(b.shape[1])
  for t in order:
    state = a[:, t] * state + b[:, t]
    h[:, t] = state
  return h, state


def _np_grads(a, b, h0, w, w_last, reverse):
  """Gradients of sum(w * h) + sum(w_last * h_last) w.r.t. a, b, h0."""
  a = np.asarray(a, np.float64)
  h, _ = _np_scan(a, b, h0, reverse)
  length = a.shape[1]
  order = list(range(length - 1, -1, -1) if reverse else range(length))
  prev = {}  # state before step t
  state = np.asarray(h0, np.float64)
  for t in order:
    prev[t] = state
    state = h[:, t]
  g = np.asarray(w_last, np.float64)  # dL/dh at the last processed step
  da, db = np.zeros_like(a), np.zeros_like(a)
  for t in reversed(order):
    g = g + w[:, t]
    db[:, t] = g
    da[:, t] = g * prev[t]
    g = g * a[:, t]
  return da, db, g


@functools.partial(jax.jit, static_argnames=("impl", "inner", "reverse"))
def _values_and_grads(a, b, h0, w, w_last, impl, inner, reverse):
  """h, h_last and the grads of sum(w h) + sum(w_last h_last) w.r.t. a, b, h0.

  Jitted once per schedule and shape: eager associative scans are slow.
  """
  def loss(a, b, h0):
    h, h_last = scan.linear_scan(a, b, h0=h0, reverse=reverse, impl=impl,
                                 chunk_size=_CHUNK, inner_impl=inner)
    return jnp.sum(w * h) + jnp.sum(w_last * h_last), (h, h_last)

  (_, (h, h_last)), grads = jax.value_and_grad(
      loss, argnums=(0, 1, 2), has_aux=True)(a, b, h0)
  return h, h_last, grads


class ResolveImplTest(parameterized.TestCase):

  @parameterized.parameters(
      ("auto", "cpu", scan.ScanImpl.SEQUENTIAL),
      ("auto", "gpu", scan.ScanImpl.CHUNKED),
      ("auto", "tpu", scan.ScanImpl.CHUNKED),
      (scan.ScanImpl.AUTO, "cpu", scan.ScanImpl.SEQUENTIAL),
      ("Associative", "gpu", scan.ScanImpl.ASSOCIATIVE),
      ("chunked", "cpu", scan.ScanImpl.CHUNKED),
      (scan.ScanImpl.SEQUENTIAL, "tpu", scan.ScanImpl.SEQUENTIAL),
  )
  def test_resolves(self, impl, platform, expected):
    self.assertIs(scan.resolve_impl(impl, platform), expected)

  def test_default_platform_is_the_backend(self):
    expected = scan.resolve_impl("auto", jax.default_backend())
    self.assertIs(scan.resolve_impl("auto"), expected)

  @parameterized.parameters("fast", "", 3, None)
  def test_unknown_impl_raises(self, impl):
    with self.assertRaisesRegex(ValueError,
                                "Unknown impl .*'sequential'.*'chunked'"):
      scan.resolve_impl(impl)


class LinearScanTest(parameterized.TestCase):

  @parameterized.parameters(
      dict(schedule=s, reverse=r, length=n)
      for s, r, n in itertools.product(_SCHEDULES, (False, True),
                                       (1, 7, 64, 100)))
  def test_matches_numpy_values_and_grads(self, schedule, reverse, length):
    impl, inner = schedule
    args = _inputs(length, seed=length)
    h, h_last, grads = _values_and_grads(*args, impl=impl, inner=inner,
                                         reverse=reverse)
    h_ref, last_ref = _np_scan(args[0], args[1], args[2], reverse)
    self.assertEqual(h.dtype, jnp.float32)
    self.assertEqual(h_last.dtype, jnp.float32)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_last, last_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, _np_grads(*args, reverse)):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # And the oracle schedule itself (compiled once per length and direction).
    chex.assert_trees_all_close(
        (h, h_last, grads),
        _values_and_grads(*args, impl="sequential", inner="associative",
                          reverse=reverse), rtol=1e-5, atol=1e-5)

  @parameterized.parameters(*_SCHEDULES)
  def test_no_h0_means_zeros(self, impl, inner):
    a, b, _, _, _ = _inputs(9)
    h, h_last = scan.linear_scan(a, b, impl=impl, chunk_size=4,
                                 inner_impl=inner)
    h_ref, last_ref = _np_scan(a, b, np.zeros((2, 3)), False)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_last, last_ref, rtol=1e-5, atol=1e-5)

  @parameterized.parameters(*_SCHEDULES)
  def test_bf16_inputs_keep_fp32_state(self, impl, inner):
    a, b, h0, _, _ = _inputs(20)
    a16, b16 = jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)
    h, h_last = scan.linear_scan(a16, b16, h0=h0, impl=impl, chunk_size=_CHUNK,
                                 inner_impl=inner)
    self.assertEqual(h.dtype, jnp.bfloat16)
    self.assertEqual(h_last.dtype, jnp.float32)
    h_ref, last_ref = _np_scan(np.asarray(a16, np.float64),
                               np.asarray(b16, np.float64), h0, False)
    np.testing.assert_allclose(np.asarray(h, np.float32), h_ref, rtol=2e-2,
                               atol=2e-2)
    # The state itself is fp32, so h_last is as accurate as the bf16 inputs.
    np.testing.assert_allclose(h_last, last_ref, rtol=1e-5, atol=1e-5)

  @parameterized.parameters(*_SCHEDULES)
  def test_broadcast_decay_and_trailing_axes(self, impl, inner):
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 1.0, (2, 11, 1, 4)).astype(np.float32)
    b = rng.normal(size=(2, 11, 3, 4)).astype(np.float32)
    h, h_last = scan.linear_scan(a, b, impl=impl, chunk_size=4,
                                 inner_impl=inner)
    h_ref, last_ref = _np_scan(np.broadcast_to(a, b.shape), b,
                               np.zeros((2, 3, 4)), False)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_last, last_ref, rtol=1e-5, atol=1e-5)

  def test_jit(self):
    a, b, h0, _, _ = _inputs(10)
    f = jax.jit(lambda a, b, h0: scan.linear_scan(a, b, h0=h0, impl="chunked",
                                                  chunk_size=3))
    h, _ = f(a, b, h0)
    np.testing.assert_allclose(h, _np_scan(a, b, h0, False)[0], rtol=1e-5,
                               atol=1e-5)


class LinearScanErrorsTest(parameterized.TestCase):

  def test_unknown_impl(self):
    a, b, _, _, _ = _inputs(4)
    with self.assertRaisesRegex(ValueError, "Unknown impl 'parallel'"):
      scan.linear_scan(a, b, impl="parallel")

  @parameterized.parameters("chunked", "auto", "nope")
  def test_bad_inner_impl(self, inner):
    a, b, _, _, _ = _inputs(4)
    with self.assertRaisesRegex(ValueError, "inner_impl"):
      scan.linear_scan(a, b, impl="chunked", inner_impl=inner)

  @parameterized.parameters(0, -2, 2.5, True)
  def test_bad_chunk_size(self, chunk):
    a, b, _, _, _ = _inputs(4)
    with self.assertRaisesRegex(ValueError, "chunk_size must be a positive"):
      scan.linear_scan(a, b, impl="chunked", chunk_size=chunk)

  def test_a_not_broadcastable(self):
    _, b, _, _, _ = _inputs(4)
    with self.assertRaisesRegex(ValueError, r"a of shape \(2, 5, 3\) must "
                                r"broadcast to b's shape \(2, 4, 3\)"):
      scan.linear_scan(np.ones((2, 5, 3), np.float32), b)

  def test_a_larger_than_b(self):
    with self.assertRaisesRegex(ValueError, "must broadcast to b's shape"):
      scan.linear_scan(np.ones((2, 4, 3), np.float32),
                       np.ones((2, 4, 1), np.float32))

  def test_bad_h0(self):
    a, b, _, _, _ = _inputs(4)
    with self.assertRaisesRegex(ValueError, r"h0 of shape \(5,\) must "
                                r"broadcast to the state shape \(2, 3\)"):
      scan.linear_scan(a, b, h0=np.zeros((5,), np.float32))

  def test_b_without_length(self):
    with self.assertRaisesRegex(ValueError, r"b must be \[batch, length"):
      scan.linear_scan(np.ones((3,)), np.ones((3,)))


if __name__ == "__main__":
  absltest.main()
