"""Tests for ssm_icl.nn.s4 (S4D and S4-Mamba mixers)."""

import math

from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import errors
from ssm_icl.nn import axes
from ssm_icl.nn import mamba
from ssm_icl.nn import s4

_D = 16
_erf = np.vectorize(math.erf)


def _silu(x):
  return x / (1 + np.exp(-x))


def _s4d_conv(p, u):
  """S4D kernel in complex float64 and a direct causal convolution + D u."""
  dt = np.exp(p["log_dt"])[:, None]  # [h, 1]
  a = -np.exp(p["log_A_real"]) + 1j * p["A_imag"]  # [h, n]
  c = p["C"][..., 0] + 1j * p["C"][..., 1]
  l = u.shape[1]
  kernel = 2 * np.einsum(
      "hn,hnl->hl", c * (np.exp(dt * a) - 1) / a,
      np.exp(dt[..., None] * a[..., None] * np.arange(l))).real  # [h, l]
  y = np.zeros_like(u)
  for t in range(l):
    for s in range(t + 1):
      y[:, t] += kernel[:, s] * u[:, t - s]
  return y + p["D"] * u


def _as64(p):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), p)


def _init(module, x):
  variables = jax.jit(module.init)(jax.random.key(0), x)
  return variables, nn.meta.unbox(variables)["params"]


def _apply(module, variables, *args, **kwargs):
  return jax.jit(module.apply, static_argnums=(2,),
                 static_argnames=("capture_intermediates", "mutable"))(
                     variables, *args, **kwargs)


class S4DMixerTest(parameterized.TestCase):

  def test_matches_numpy(self):
    x = jax.random.normal(jax.random.key(1), (2, 7, _D))
    mixer = s4.S4DMixer(d_model=_D, config=s4.S4Config(d_state=4))
    _, p = _init(mixer, x)
    p64, x64 = _as64(p), np.asarray(x, np.float64)
    y = _s4d_conv(p64, x64)
    y = 0.5 * y * (1 + _erf(y / math.sqrt(2)))  # exact GELU
    y = y @ p64["output_linear"]["kernel"] + p64["output_linear"]["bias"]
    want = y[..., :_D] / (1 + np.exp(-y[..., _D:]))
    np.testing.assert_allclose(_apply(mixer, {"params": p}, x), want,
                               rtol=1e-4, atol=1e-5)

  def test_params_init_and_axes(self):
    mixer = s4.S4DMixer(d_model=_D, config=s4.S4Config(d_state=16))
    variables, p = _init(mixer, jnp.zeros((1, 4, _D)))
    shapes = jax.tree.map(lambda a: a.shape, p)
    self.assertEqual(shapes, {
        "log_dt": (_D,), "log_A_real": (_D, 8), "A_imag": (_D, 8),
        "C": (_D, 8, 2), "D": (_D,),
        "output_linear": {"kernel": (_D, 2 * _D), "bias": (2 * _D,)},
    })
    np.testing.assert_allclose(p["log_A_real"], math.log(0.5), rtol=1e-6)
    np.testing.assert_allclose(p["A_imag"][0], np.pi * np.arange(8),
                               rtol=1e-6)
    self.assertTrue(np.all(p["log_dt"] >= math.log(1e-3) - 1e-6))
    self.assertTrue(np.all(p["log_dt"] <= math.log(0.1) + 1e-6))
    # Conv1d(H, 2H, 1) default: weight and bias U(+-1/sqrt(H)), bias kept.
    bias = np.abs(p["output_linear"]["bias"])
    self.assertLessEqual(bias.max(), 0.25)
    self.assertGreater(bias.max(), 0.0)
    specs = nn.get_partition_spec(variables)["params"]
    self.assertEqual(tuple(specs["C"]), (axes.EMBED, axes.STATE, None))
    self.assertEqual(tuple(specs["log_dt"]), (axes.EMBED,))
    boxes = jax.tree.leaves(
        variables, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    self.assertLen(boxes, 7)
    for box in boxes:
      self.assertIsInstance(box, nn.LogicallyPartitioned)
      self.assertLen(box.names, box.value.ndim)

  def test_is_causal(self):
    x = jax.random.normal(jax.random.key(1), (1, 8, _D))
    mixer = s4.S4DMixer(d_model=_D, config=s4.S4Config(d_state=4))
    variables, _ = _init(mixer, x)
    y = _apply(mixer, variables, x)
    y2 = _apply(mixer, variables, x.at[:, 5].set(4.0))
    np.testing.assert_allclose(y[:, :5], y2[:, :5], atol=1e-5)
    self.assertGreater(np.abs(y[:, 5:] - y2[:, 5:]).max(), 1e-3)


class S4MambaMixerTest(parameterized.TestCase):

  def test_matches_numpy_in_eval_mode(self):
    x = jax.random.normal(jax.random.key(1), (2, 7, _D))
    mixer = s4.S4MambaMixer(d_model=_D, config=s4.S4Config(d_state=4),
                            n_layer=2)
    _, p = _init(mixer, x)
    p64, x64 = _as64(p), np.asarray(x, np.float64)
    xz = x64 @ p64["in_proj"]["kernel"]
    e = 2 * _D
    xi, z = xz[..., :e], xz[..., e:]
    w = p64["conv1d"]["kernel"]
    xp = np.pad(xi, ((0, 0), (3, 0), (0, 0)))
    u = sum(xp[:, k:k + 7] * w[k] for k in range(4)) + p64["conv1d"]["bias"]
    y = _s4d_conv(p64, _silu(u)) * z  # linear gate: no silu on z
    want = y @ p64["out_proj"]["kernel"]
    np.testing.assert_allclose(_apply(mixer, {"params": p}, x), want,
                               rtol=1e-4, atol=1e-5)
    self.assertNotIn("x_proj", p)
    self.assertEqual(p["log_dt"].shape, (e,))
    bound = 1 / math.sqrt(e) / math.sqrt(2)
    self.assertLessEqual(np.abs(p["out_proj"]["kernel"]).max(), bound)

  def test_dropout_only_in_training_and_tied_over_time(self):
    x = jax.random.normal(jax.random.key(1), (2, 6, _D))
    mixer = s4.S4MambaMixer(
        d_model=_D, config=s4.S4Config(d_state=4, s4_mamba_dropout=0.5))
    variables, _ = _init(mixer, x)

    def run(deterministic, seed=0):
      return _apply(mixer, variables, x, deterministic,
                    rngs={"dropout": jax.random.key(seed)},
                    capture_intermediates=True, mutable=("intermediates",))

    y_eval, inter_eval = run(True)
    y_eval2, _ = run(True, seed=1)
    np.testing.assert_array_equal(y_eval, y_eval2)
    y_train, inter_train = run(False)
    y_train2, _ = run(False, seed=1)
    self.assertGreater(np.abs(y_train - y_eval).max(), 1e-4)
    self.assertGreater(np.abs(y_train - y_train2).max(), 1e-4)
    # The dropout mask: kept entries are scaled by 1 / (1 - p) = 2.
    kept = inter_train["intermediates"]["Dropout_0"]["__call__"][0]
    base = inter_eval["intermediates"]["Dropout_0"]["__call__"][0]
    ratio = np.asarray(kept / base)
    mask = np.isclose(ratio, 2.0, rtol=1e-4)
    self.assertTrue(np.all(mask | np.isclose(ratio, 0.0)))
    self.assertTrue(0 < mask.mean() < 1)
    # One mask per (prompt, channel), shared by every time step.
    np.testing.assert_array_equal(mask, np.broadcast_to(mask[:, :1],
                                                        mask.shape))

  def test_is_causal(self):
    x = jax.random.normal(jax.random.key(1), (1, 8, _D))
    mixer = s4.S4MambaMixer(d_model=_D, config=s4.S4Config(d_state=4))
    variables, _ = _init(mixer, x)
    y = _apply(mixer, variables, x)
    y2 = _apply(mixer, variables, x.at[:, 5].set(4.0))
    np.testing.assert_allclose(y[:, :5], y2[:, :5], atol=1e-5)
    self.assertGreater(np.abs(y[:, 5:] - y2[:, 5:]).max(), 1e-3)


class S4ConfigTest(absltest.TestCase):

  def test_shares_the_ssm_fields(self):
    c = s4.S4Config(d_state=6, dt_max=0.2)
    self.assertIsInstance(c, mamba.SSMConfig)
    self.assertEqual((c.n_modes, c.d_inner(8), c.s4_mamba_dropout),
                     (3, 16, 0.1))

  def test_bad_values_name_the_field(self):
    with self.assertRaisesRegex(errors.UserError,
                                r"s4_mamba_dropout must be a number in"):
      s4.S4Config(s4_mamba_dropout=1.0)
    with self.assertRaisesRegex(errors.UserError, "d_conv must be positive"):
      s4.S4Config(d_conv=0)


if __name__ == "__main__":
  absltest.main()
