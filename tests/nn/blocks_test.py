"""Tests for ssm_icl.nn.blocks."""

from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.nn import axes
from ssm_icl.nn import blocks
from ssm_icl.nn import layers

_D = 16
_SETTINGS = blocks.BlockSettings(
    d_model=_D, mixers=blocks.MixerConfigs().replace_flat(
        dict(n_head=2, d_state=4, s4_mamba_dropout=0.0)))


class RegistryTest(absltest.TestCase):

  def test_registry_names(self):
    self.assertCountEqual(blocks.BLOCKS,
                          ["mamba", "attn", "mlp", "s4d", "s4_mamba"])

  def test_unknown_block_lists_valid_names(self):
    with self.assertRaisesRegex(
        ValueError, r"'lstm'.*\['mamba', 'attn', 'mlp', 's4d', 's4_mamba'\]"):
      blocks.get_block("lstm")


class BlockTest(parameterized.TestCase):

  @parameterized.parameters("mamba", "attn", "mlp", "s4d", "s4_mamba")
  def test_is_pre_norm_residual(self, kind):
    x = jax.random.normal(jax.random.key(1), (2, 5, _D))
    block = blocks.Block(kind, _SETTINGS)
    variables = jax.jit(block.init)(jax.random.key(0), x)
    p = nn.meta.unbox(variables)["params"]
    self.assertCountEqual(p, ["norm", "mixer"])

    # The mixer alone, applied to LayerNorm(x) with the block's params.
    class _Mixer(nn.Module):

      @nn.compact
      def __call__(self, h):
        return blocks.get_block(kind)(_SETTINGS, "mixer")(h)

    h = layers.layer_norm().apply({"params": p["norm"]}, x)
    mixed = jax.jit(_Mixer().apply)({"params": {"mixer": p["mixer"]}}, h)
    np.testing.assert_allclose(jax.jit(block.apply)(variables, x), x + mixed,
                               rtol=1e-5, atol=1e-5)

  def test_residual_dropout_only_in_training(self):
    settings = blocks.BlockSettings(d_model=_D, dropout=0.5)
    block = blocks.Block("mlp", settings)
    x = jax.random.normal(jax.random.key(1), (2, 5, _D))
    variables = block.init(jax.random.key(0), x)
    rngs = {"dropout": jax.random.key(3)}
    y_eval = block.apply(variables, x, True, rngs=rngs)
    y_train = block.apply(variables, x, False, rngs=rngs)
    self.assertGreater(np.abs(y_eval - y_train).max(), 1e-4)
    no_dropout = blocks.Block("mlp", blocks.BlockSettings(d_model=_D))
    np.testing.assert_allclose(y_eval, no_dropout.apply(variables, x),
                               rtol=1e-6)

  def test_residual_stream_stays_float32_in_bfloat16(self):
    settings = blocks.BlockSettings(d_model=_D, dtype=jnp.bfloat16)
    block = blocks.Block("mlp", settings)
    x = jax.random.normal(jax.random.key(1), (2, 3, _D))
    variables = block.init(jax.random.key(0), x)
    self.assertEqual(block.apply(variables, x).dtype, jnp.float32)

  def test_residual_constraint_with_mesh(self):
    mesh = jax.make_mesh((8, 1), (axes.DATA, axes.MODEL),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    block = blocks.Block("mlp", blocks.BlockSettings(d_model=_D))
    x = jnp.zeros((8, 3, _D))
    variables = block.init(jax.random.key(0), x)
    with jax.set_mesh(mesh), nn.logical_axis_rules(axes.get_rules("dp")):
      text = jax.jit(block.apply).lower(variables, x).as_text()
    self.assertIn("sharding_constraint", text)
    self.assertIn('"data"', text)


if __name__ == "__main__":
  absltest.main()
