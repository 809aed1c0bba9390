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
from ssm_icl.nn import s4

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


class MixerConfigsTest(absltest.TestCase):

  def test_flat_keys_route_to_every_owner(self):
    m = blocks.MixerConfigs().replace_flat({"d_state": 6, "n_head": 2})
    self.assertEqual((m.mamba.d_state, m.s4.d_state, m.attention.n_head),
                     (6, 6, 2))
    self.assertEqual(m.flat_value("d_state"), 6)
    self.assertIn("mlp_ratio", blocks.MixerConfigs.flat_keys())

  def test_unknown_and_ambiguous_keys(self):
    with self.assertRaisesRegex(ValueError,
                                r"Unknown block hyperparameters \['heads'\]"):
      blocks.MixerConfigs().replace_flat({"heads": 2})
    with self.assertRaises(AttributeError):
      blocks.MixerConfigs().flat_value("heads")
    apart = blocks.MixerConfigs(s4={"d_state": 4})
    self.assertEqual(apart.s4, s4.S4Config(d_state=4))
    with self.assertRaisesRegex(ValueError, "d_state differs"):
      apart.flat_value("d_state")

  def test_sub_config_type_is_checked(self):
    with self.assertRaisesRegex(TypeError, "mixers.mlp must be a MlpConfig"):
      blocks.MixerConfigs(mlp=4)

  def test_block_kind_parsing(self):
    self.assertIs(blocks.parse_kind("s4d"), blocks.BlockKind.S4D)
    self.assertIs(blocks.get_block("attn"), blocks.get_block(
        blocks.BlockKind.ATTN))


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
