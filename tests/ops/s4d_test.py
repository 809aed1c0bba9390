"""Tests for ssm_icl.ops.s4d: the S4D kernel and the FFT causal convolution."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.ops import s4d


def _params(h=3, n=4, seed=0):
  """S4D-Lin-like parameters (docs/PAPER.md §5.4), randomised a little."""
  rng = np.random.default_rng(seed)
  return dict(
      log_dt=rng.uniform(np.log(1e-3), np.log(1e-1), h).astype(np.float32),
      log_A_real=(np.log(0.5) + 0.3 * rng.normal(size=(h, n))).astype(
          np.float32),
      A_imag=(np.pi * np.arange(n) + 0.1 * rng.normal(size=(h, n))).astype(
          np.float32),
      C=rng.normal(size=(h, n, 2)).astype(np.float32),
  )


def _np_kernel(log_dt, log_A_real, A_imag, C, length):
  """complex128 K_l = 2 Re sum_n C_n (exp(dt A_n) - 1) / A_n exp(dt A_n l)."""
  dt = np.exp(np.float64(log_dt))[:, None]
  A = -np.exp(np.float64(log_A_real)) + 1j * np.float64(A_imag)
  Cc = C[..., 0].astype(np.float64) + 1j * C[..., 1]
  vandermonde = np.exp((dt * A)[..., None] * np.arange(length))
  return 2 * np.einsum("hn,hnl->hl", Cc * (np.exp(dt * A) - 1) / A,
                       vandermonde).real


def _jnp_complex_kernel(log_dt, log_A_real, A_imag, C, length):
  """The S4 repository's formula in complex64 JAX (for gradients)."""
  dt = jnp.exp(log_dt)[:, None]
  A = -jnp.exp(log_A_real) + 1j * A_imag
  Cc = C[..., 0] + 1j * C[..., 1]
  dtA = dt * A
  K = dtA[..., None] * jnp.arange(length)
  return 2 * jnp.einsum("hn,hnl->hl", Cc * (jnp.exp(dtA) - 1.0) / A,
                        jnp.exp(K)).real


def _np_causal_conv(u, K):
  """Direct y_t = sum_{s <= t, s < k} K_s u_{t-s} in float64."""
  u, K = np.float64(u), np.float64(K)
  y = np.zeros_like(u)
  for t in range(u.shape[1]):
    for s in range(min(t + 1, K.shape[1])):
      y[:, t] += K[:, s] * u[:, t - s]
  return y


class S4DKernelTest(parameterized.TestCase):

  @parameterized.parameters((1, 1), (3, 17), (8, 64))
  def test_matches_complex_reference(self, n, length):
    p = _params(n=n, seed=length)
    K = s4d.s4d_kernel(**p, length=length)
    self.assertEqual(K.shape, (3, length))
    self.assertEqual(K.dtype, jnp.float32)
    want = _np_kernel(**p, length=length)
    np.testing.assert_allclose(K, want, rtol=1e-4,
                               atol=1e-5 * np.abs(want).max())

  def test_tiny_dt_keeps_precision(self):
    # exp(dtA) - 1 with dt = 1e-6 cancels catastrophically without expm1.
    p = _params(seed=1)
    p["log_dt"] = np.full(3, np.log(1e-6), np.float32)
    K = s4d.s4d_kernel(**p, length=5)
    np.testing.assert_allclose(K, _np_kernel(**p, length=5), rtol=1e-4)

  def test_grads_match_complex_autodiff(self):
    p = _params(seed=2)
    w = np.random.default_rng(3).normal(size=(3, 12)).astype(np.float32)

    def loss(kernel_fn):
      return lambda p: jnp.sum(w * kernel_fn(**p, length=12))

    got = jax.grad(loss(s4d.s4d_kernel))(p)
    want = jax.grad(loss(_jnp_complex_kernel))(p)
    chex.assert_tree_all_finite(got)
    chex.assert_trees_all_close(got, want, rtol=2e-3, atol=1e-5)

  @parameterized.parameters(
      (dict(length=0), "length must be a positive int"),
      (dict(length=3.0), "length must be a positive int"),
      (dict(log_dt=np.zeros((3, 1), np.float32)), r"log_dt must be \[h\]"),
      (dict(log_A_real=np.zeros((2, 4), np.float32)),
       r"log_A_real must be \[h=3, n\]"),
      (dict(A_imag=np.zeros((3, 5), np.float32)),
       r"A_imag must have shape \(3, 4\)"),
      (dict(C=np.zeros((3, 4), np.float32)),
       r"C must have shape \(3, 4, 2\)"),
  )
  def test_bad_inputs(self, override, message):
    p = dict(_params(), length=6)
    p.update(override)
    with self.assertRaisesRegex(ValueError, message):
      s4d.s4d_kernel(**p)


class CausalConvFFTTest(parameterized.TestCase):

  @parameterized.parameters((1, 1), (9, 9), (16, 5))
  def test_matches_direct_convolution(self, length, k):
    rng = np.random.default_rng(length)
    u = rng.normal(size=(2, length, 3)).astype(np.float32)
    K = rng.normal(size=(3, k)).astype(np.float32)
    y = s4d.causal_conv_fft(u, K)
    self.assertEqual(y.shape, u.shape)
    np.testing.assert_allclose(y, _np_causal_conv(u, K), rtol=1e-5,
                               atol=1e-5)

  def test_causal(self):
    rng = np.random.default_rng(4)
    u = rng.normal(size=(1, 12, 2)).astype(np.float32)
    K = rng.normal(size=(2, 12)).astype(np.float32)
    t = 7
    v = u.copy()
    v[:, t] += 10.0
    y_u, y_v = s4d.causal_conv_fft(u, K), s4d.causal_conv_fft(v, K)
    np.testing.assert_allclose(y_u[:, :t], y_v[:, :t], atol=1e-5)
    self.assertGreater(float(jnp.abs(y_u[:, t] - y_v[:, t]).max()), 1e-2)

  def test_bf16_in_bf16_out(self):
    rng = np.random.default_rng(5)
    u = jnp.asarray(rng.normal(size=(2, 10, 3)), jnp.bfloat16)
    K = rng.normal(size=(3, 10)).astype(np.float32)
    y = s4d.causal_conv_fft(u, K)
    self.assertEqual(y.dtype, jnp.bfloat16)
    np.testing.assert_allclose(np.float32(y),
                               _np_causal_conv(np.float32(u), K), rtol=2e-2,
                               atol=5e-2)

  def test_with_s4d_kernel_matches_reference(self):
    p = _params(seed=6)
    u = np.random.default_rng(7).normal(size=(2, 20, 3)).astype(np.float32)
    y = s4d.causal_conv_fft(u, s4d.s4d_kernel(**p, length=20))
    np.testing.assert_allclose(y, _np_causal_conv(u, _np_kernel(**p,
                                                               length=20)),
                               rtol=1e-4, atol=1e-5)

  @parameterized.parameters(
      ((2, 5), (3, 5), r"u must be \[batch, length, channels\]"),
      ((2, 5, 3), (4, 5), r"K must be \[channels=3, kernel_length\]"),
      ((2, 5, 3), (3,), r"K must be \[channels=3, kernel_length\]"),
  )
  def test_bad_inputs(self, u_shape, k_shape, message):
    with self.assertRaisesRegex(ValueError, message):
      s4d.causal_conv_fft(np.zeros(u_shape, np.float32),
                          np.zeros(k_shape, np.float32))


class S4DRecurrenceTest(absltest.TestCase):

  def test_chunks_and_steps_equal_the_convolution(self):
    p = _params()
    u = np.random.default_rng(3).normal(size=(2, 9, 3)).astype(np.float32)
    want = _np_causal_conv(u, _np_kernel(**p, length=9))
    state = jnp.zeros((2, 3, 4, 2))
    parts = []
    for lo, hi in ((0, 4), (4, 5), (5, 6), (6, 9)):  # prefill, steps, chunk
      y, state = s4d.s4d_recurrence(jnp.asarray(u[:, lo:hi]), state, **p)
      parts.append(y)
    got = np.concatenate(parts, 1)
    np.testing.assert_allclose(got, want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())

  def test_bad_state_shape(self):
    with self.assertRaisesRegex(ValueError, r"state must have shape"):
      s4d.s4d_recurrence(jnp.zeros((2, 5, 3)), jnp.zeros((2, 3, 4)),
                         **_params())


if __name__ == "__main__":
  absltest.main()
