"""Tests for ssm_icl.nn.layers."""

import math

from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import errors
from ssm_icl.nn import axes
from ssm_icl.nn import initializers as inits
from ssm_icl.nn import layers


def _init(module, x, seed=0):
  variables = module.init(jax.random.key(seed), x)
  return variables, nn.meta.unbox(variables)["params"]


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


class DenseTest(parameterized.TestCase):

  def test_matches_numpy_and_has_logical_axes(self):
    x = jax.random.normal(jax.random.key(1), (2, 3, 8))
    dense = layers.dense(5, (axes.EMBED, axes.MLP), fan_in=8)
    variables, p = _init(dense, x)
    want = np.asarray(x) @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
    np.testing.assert_allclose(dense.apply(variables, x), want, rtol=1e-5,
                               atol=1e-6)
    specs = nn.get_partition_spec(variables)["params"]
    self.assertEqual(tuple(specs["kernel"]), (axes.EMBED, axes.MLP))
    self.assertEqual(tuple(specs["bias"]), (axes.MLP,))

  def test_default_init_is_torch_linear(self):
    x = jnp.zeros((1, 64))
    _, p = _init(layers.dense(400, (None, None), fan_in=64), x)
    for name in ("kernel", "bias"):
      v = np.asarray(p[name])
      self.assertLessEqual(np.abs(v).max(), 1 / 8.0)
      self.assertGreater(np.abs(v).max(), 0.9 / 8.0)

  def test_bfloat16_compute_with_float32_params(self):
    x = jax.random.normal(jax.random.key(1), (2, 8))
    dense = layers.dense(4, (None, None), use_bias=False,
                         dtype=jnp.bfloat16)
    variables, p = _init(dense, x)
    y = dense.apply(variables, x)
    self.assertEqual(p["kernel"].dtype, jnp.float32)
    self.assertEqual(y.dtype, jnp.bfloat16)
    self.assertNotIn("bias", p)
    np.testing.assert_allclose(y.astype(jnp.float32),
                               np.asarray(x) @ np.asarray(p["kernel"]),
                               rtol=3e-2, atol=3e-2)

  def test_default_bias_needs_fan_in(self):
    with self.assertRaisesRegex(ValueError,
                                "'read_in': the default .* needs fan_in"):
      layers.dense(4, (None, None), name="read_in")


class LayerNormTest(parameterized.TestCase):

  def test_matches_numpy(self):
    x = 3.0 + jax.random.normal(jax.random.key(1), (2, 3, 16))
    ln = layers.layer_norm()
    variables = ln.init(jax.random.key(0), x)
    x64 = np.asarray(x, np.float64)
    mean = x64.mean(-1, keepdims=True)
    want = (x64 - mean) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(ln.apply(variables, x), want, rtol=1e-5,
                               atol=1e-5)
    specs = nn.get_partition_spec(variables)["params"]
    self.assertEqual(tuple(specs["scale"]), (axes.EMBED,))

  def test_bfloat16_output_float32_statistics(self):
    # A large offset with a small spread: bfloat16 statistics would round
    # the offset and leave a big error; float32 statistics do not.
    x = 1000.0 + jax.random.normal(jax.random.key(1), (4, 32))
    ln = layers.layer_norm(dtype=jnp.bfloat16)
    variables = ln.init(jax.random.key(0), x)
    y = ln.apply(variables, x)
    self.assertEqual(y.dtype, jnp.bfloat16)
    want = layers.layer_norm().apply(variables, x)
    np.testing.assert_allclose(y.astype(jnp.float32), want, atol=2e-2)


class MLPTest(parameterized.TestCase):

  def test_matches_numpy_gelu_new(self):
    x = jax.random.normal(jax.random.key(1), (2, 3, 8))
    mlp = layers.MLP(d_model=8, config=layers.MlpConfig(mlp_ratio=4),
                     init_style=inits.STYLE_MAMBA)
    variables, p = _init(mlp, x)
    h = np.asarray(x) @ p["c_fc"]["kernel"] + p["c_fc"]["bias"]
    want = _gelu_tanh(h) @ p["c_proj"]["kernel"] + p["c_proj"]["bias"]
    np.testing.assert_allclose(mlp.apply(variables, x), want, rtol=1e-5,
                               atol=1e-5)
    specs = nn.get_partition_spec(variables)["params"]
    self.assertEqual(tuple(specs["c_fc"]["kernel"]), (axes.EMBED, axes.MLP))
    self.assertEqual(tuple(specs["c_proj"]["kernel"]), (axes.MLP, axes.EMBED))

  def test_gpt2_init(self):
    mlp = layers.MLP(d_model=64, n_layer=8, init_style=inits.STYLE_GPT2)
    _, p = _init(mlp, jnp.zeros((1, 1, 64)))
    np.testing.assert_allclose(np.std(p["c_fc"]["kernel"]), 0.02, rtol=0.05)
    np.testing.assert_allclose(np.std(p["c_proj"]["kernel"]), 0.02 / 4.0,
                               rtol=0.05)
    for name in ("c_fc", "c_proj"):
      np.testing.assert_array_equal(p[name]["bias"], 0.0)

  def test_mamba_style_init(self):
    mlp = layers.MLP(d_model=64, n_layer=4, init_style=inits.STYLE_MAMBA)
    _, p = _init(mlp, jnp.zeros((1, 1, 64)))
    fc = np.abs(p["c_fc"]["kernel"]).max()
    self.assertTrue(0.9 / 8.0 < fc <= 1 / 8.0, fc)
    # The residual projection is rescaled like Mamba's out_proj.
    proj = np.abs(p["c_proj"]["kernel"]).max()
    bound = 1 / math.sqrt(256) / 2.0
    self.assertTrue(0.9 * bound < proj <= bound, proj)
    np.testing.assert_array_equal(p["c_fc"]["bias"], 0.0)

  def test_unknown_init_style(self):
    mlp = layers.MLP(d_model=8, init_style="xavier")
    with self.assertRaisesRegex(ValueError, "Unknown init style 'xavier'"):
      mlp.init(jax.random.key(0), jnp.zeros((1, 1, 8)))


class MlpConfigTest(absltest.TestCase):

  def test_ratio_must_be_a_positive_int(self):
    self.assertEqual(layers.MlpConfig(mlp_ratio=2).mlp_ratio, 2)
    with self.assertRaisesRegex(errors.UserError,
                                "mlp_ratio must be positive, got 0"):
      layers.MlpConfig(mlp_ratio=0)


class CausalDepthwiseConv1dTest(parameterized.TestCase):

  def test_matches_torch_style_convolution(self):
    x = jax.random.normal(jax.random.key(1), (2, 7, 5))
    conv = layers.CausalDepthwiseConv1d(width=4)
    variables, p = _init(conv, x)
    w = np.asarray(p["kernel"])  # [k, c] = torch weight[c, 0, k].T
    xp = np.pad(np.asarray(x), ((0, 0), (3, 3), (0, 0)))
    # PyTorch Conv1d(padding=k-1) is a cross-correlation; keep the first l.
    full = np.stack([(xp[:, t:t + 4, :] * w).sum(1)
                     for t in range(xp.shape[1] - 3)], axis=1)
    want = full[:, :7] + np.asarray(p["bias"])
    np.testing.assert_allclose(conv.apply(variables, x), want, rtol=1e-5,
                               atol=1e-6)
    specs = nn.get_partition_spec(variables)["params"]
    self.assertEqual(tuple(specs["kernel"]), (axes.CONV, axes.INNER))
    self.assertEqual(tuple(specs["bias"]), (axes.INNER,))
    for name in ("kernel", "bias"):
      self.assertLessEqual(np.abs(p[name]).max(), 0.5)

  def test_is_causal(self):
    x = jax.random.normal(jax.random.key(1), (1, 9, 3))
    conv = layers.CausalDepthwiseConv1d(width=3, use_bias=False)
    variables = conv.init(jax.random.key(0), x)
    y = conv.apply(variables, x)
    y2 = conv.apply(variables, x.at[:, 5].add(10.0))
    np.testing.assert_array_equal(y[:, :5], y2[:, :5])
    self.assertGreater(np.abs(y[:, 5] - y2[:, 5]).max(), 0.0)


  @parameterized.parameters(1, 3, 4)
  def test_state_continues_the_sequence(self, width):
    x = jax.random.normal(jax.random.key(2), (2, 7, 5))
    conv = layers.CausalDepthwiseConv1d(width=width)
    variables = conv.init(jax.random.key(0), x)
    want = conv.apply(variables, x)
    state = jnp.zeros((2, width - 1, 5))
    parts = []
    for lo, hi in ((0, 3), (3, 4), (4, 7)):  # a prefill, a step, the rest
      y, state = conv.apply(variables, x[:, lo:hi], state)
      parts.append(y)
    np.testing.assert_allclose(jnp.concatenate(parts, 1), want, rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_array_equal(state, x[:, 7 - (width - 1):])
    with self.assertRaisesRegex(ValueError, "conv state must have shape"):
      conv.apply(variables, x, jnp.zeros((2, width, 5)))


class NormTest(parameterized.TestCase):

  def test_rms_norm_matches_formula_and_has_scale_only(self):
    x = 3.0 + jax.random.normal(jax.random.key(3), (2, 4, 8))
    norm = layers.norm("rms", name="norm")
    variables, p = _init(norm, x)
    self.assertEqual(list(p), ["scale"])
    scale = 1.0 + jnp.arange(8.0) / 8
    y = norm.apply({"params": {"scale": scale}}, x)
    xn = np.asarray(x, np.float64)
    want = xn / np.sqrt((xn ** 2).mean(-1, keepdims=True) + 1e-5) * scale
    np.testing.assert_allclose(y, want, rtol=1e-5)
    specs = nn.get_partition_spec(variables)["params"]
    self.assertEqual(tuple(specs["scale"]), (axes.EMBED,))

  def test_layer_norm_kind_and_bad_kind(self):
    self.assertIsInstance(layers.norm(layers.NormKind.LAYER), nn.LayerNorm)
    with self.assertRaisesRegex(ValueError, r"Unknown norm 'batch'.*'rms'"):
      layers.norm("batch")


if __name__ == "__main__":
  absltest.main()
