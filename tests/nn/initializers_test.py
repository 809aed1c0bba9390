"""Tests for ssm_icl.nn.initializers."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.nn import initializers as inits

_KEY = jax.random.key(0)


def _softplus(x):
  return np.log1p(np.exp(x))


class UniformFamilyTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("linear", lambda: inits.torch_linear(64), 1 / 8.0),
      ("depthwise_conv", lambda: inits.torch_depthwise_conv(4), 0.5),
      ("out_proj", lambda: inits.mamba_out_proj(64, 4), 1 / 16.0),
      ("dt_proj", lambda: inits.dt_proj_kernel(16), 0.25),
  )
  def test_bound_and_spread(self, make, bound):
    x = np.asarray(make()(_KEY, (200, 100)))
    self.assertLessEqual(np.abs(x).max(), bound)
    # A uniform draw fills its range: the extremes come within 1%.
    self.assertGreater(np.abs(x).max(), 0.99 * bound)
    np.testing.assert_allclose(x.std(), bound / math.sqrt(3), rtol=0.02)

  def test_dtype_is_respected(self):
    x = inits.torch_linear(4)(_KEY, (3, 5), jnp.bfloat16)
    self.assertEqual(x.dtype, jnp.bfloat16)


class NormalTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("gpt2", lambda: inits.normal(inits.GPT2_STD), 0.02),
      ("gpt2_residual", lambda: inits.gpt2_residual(8), 0.02 / 4.0),
      ("unit", lambda: inits.normal(1.0), 1.0),
  )
  def test_std(self, make, std):
    x = np.asarray(make()(_KEY, (300, 200)))
    np.testing.assert_allclose(x.std(), std, rtol=0.02)
    self.assertLess(abs(x.mean()), 0.02 * std)


class MambaInitTest(absltest.TestCase):

  def test_a_log_is_log_one_to_n(self):
    a_log = np.asarray(inits.s4d_real_a_log(_KEY, (3, 5)))
    np.testing.assert_allclose(a_log, np.log(np.tile(np.arange(1, 6), (3, 1))),
                               rtol=1e-6)

  def test_dt_bias_softplus_is_log_uniform_in_range(self):
    bias = np.asarray(inits.dt_bias(1e-3, 0.1, 1e-4)(_KEY, (20000,)),
                      np.float64)
    dt = _softplus(bias)
    self.assertGreaterEqual(dt.min(), 1e-3 * (1 - 1e-4))
    self.assertLessEqual(dt.max(), 0.1 * (1 + 1e-4))
    # log dt is uniform on [log 1e-3, log 0.1]: mean at the midpoint.
    np.testing.assert_allclose(np.log(dt).mean(), math.log(1e-2), atol=0.05)

  def test_dt_bias_floor(self):
    bias = np.asarray(inits.dt_bias(1e-6, 1e-5, 1e-4)(_KEY, (100,)),
                      np.float64)
    np.testing.assert_allclose(_softplus(bias), 1e-4, rtol=1e-3)

  def test_inverse_softplus_is_accurate_for_small_steps(self):
    y = jnp.asarray([1e-4, 1e-3, 0.05, 0.1, 3.0], jnp.float32)
    np.testing.assert_allclose(jax.nn.softplus(inits.inverse_softplus(y)), y,
                               rtol=1e-5)


class S4DInitTest(absltest.TestCase):

  def test_log_dt_range(self):
    log_dt = np.asarray(inits.s4d_log_dt(1e-3, 0.1)(_KEY, (5000,)))
    self.assertGreaterEqual(log_dt.min(), math.log(1e-3) - 1e-6)
    self.assertLessEqual(log_dt.max(), math.log(0.1) + 1e-6)
    np.testing.assert_allclose(log_dt.mean(), math.log(1e-2), atol=0.05)

  def test_s4d_lin_a(self):
    np.testing.assert_allclose(inits.s4d_log_a_real(_KEY, (2, 3)),
                               np.full((2, 3), math.log(0.5)), rtol=1e-6)
    np.testing.assert_allclose(inits.s4d_a_imag(_KEY, (2, 3)),
                               np.tile(np.pi * np.arange(3), (2, 1)),
                               rtol=1e-6)

  def test_complex_normal_has_unit_modulus_variance(self):
    c = np.asarray(inits.complex_normal(_KEY, (400, 100, 2)))
    np.testing.assert_allclose(c[..., 0].var(), 0.5, rtol=0.03)
    np.testing.assert_allclose(c[..., 1].var(), 0.5, rtol=0.03)
    np.testing.assert_allclose((c ** 2).sum(-1).mean(), 1.0, rtol=0.03)

  def test_complex_normal_needs_a_pair_axis(self):
    with self.assertRaisesRegex(ValueError, r"trailing axis of 2.*\(4, 3\)"):
      inits.complex_normal(_KEY, (4, 3))


class StyleTest(absltest.TestCase):

  def test_known_styles(self):
    for style in inits.STYLES:
      self.assertEqual(inits.check_style(style), style)

  def test_unknown_style_is_rejected(self):
    with self.assertRaisesRegex(ValueError, r"'xavier'.*\['gpt2', 'mamba'\]"):
      inits.check_style("xavier")


if __name__ == "__main__":
  absltest.main()
