"""Parameter counts equal the reference code's (docs/PAPER.md §6).

Only shapes are needed, so every model is built with `jax.eval_shape` and
nothing is initialised for real.
"""

from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn
import jax
import jax.numpy as jnp

from ssm_icl import models


def _abstract_params(**kwargs):
  cfg = models.ModelConfig(**kwargs)
  tokens = jax.ShapeDtypeStruct((1, 2, cfg.d_in), jnp.float32)
  variables = jax.eval_shape(models.ICLModel(cfg).init, jax.random.key(0),
                             tokens)
  return nn.meta.unbox(variables)["params"]


class ParamCountTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # Transformer D=128, L=2 (101 points -> 202 wpe rows); wte excluded.
      ("transformer", dict(family="transformer", n_layer=2,
                           n_positions=202), 425_473),
      ("transformer_l4", dict(family="transformer", n_layer=4,
                              n_positions=202), 822_017),
      ("mamba", dict(family="mamba", n_layer=4), 470_017),
      ("mambaformer", dict(family="mambaformer", n_layer=4), 485_889),
      ("hybrid", dict(family="hybrid", n_layer=4, n_positions=101), 382_081),
      ("s4", dict(family="s4", n_layer=4), 153_601),
      ("s4_mamba", dict(family="s4_mamba", n_layer=4), 437_249),
      ("transformer_standard", dict(family="transformer", n_layer=12,
                                    d_model=256, n_positions=202), 9_534_977),
      ("mamba_24", dict(family="mamba", n_layer=24, d_model=256), 10_524_673),
      ("mambaformer_24", dict(family="mambaformer", n_layer=24, d_model=256),
       8_867_841),
      ("transformer_parity", dict(family="transformer", n_layer=12,
                                  d_model=256, n_positions=600, d_in=10),
       9_634_305),
      ("transformer_mqar", dict(family="transformer", n_layer=2,
                                n_positions=260, d_out=20), 435_348),
  )
  def test_model_counts(self, kwargs, expected):
    self.assertEqual(models.count_params(_abstract_params(**kwargs)),
                     expected)

  @parameterized.named_parameters(
      ("mamba", "mamba", 0, 116_736),
      ("attention", "hybrid", 0, 66_304),
      ("s4d", "s4", 0, 37_632),
      ("s4_mamba", "s4_mamba", 0, 108_544),
  )
  def test_block_counts(self, family, index, expected):
    params = _abstract_params(family=family, n_layer=2)
    self.assertEqual(models.count_params(params[f"blocks_{index}"]), expected)

  def test_gpt2_layer_is_an_attention_and_an_mlp_block(self):
    params = _abstract_params(family="transformer", n_layer=1)
    self.assertEqual(
        models.count_params(params["blocks_0"])
        + models.count_params(params["blocks_1"]), 198_272)

  @parameterized.parameters("transformer", "mambaformer")
  def test_scan_layers_keeps_the_count(self, family):
    plain = _abstract_params(family=family, n_layer=4)
    scanned = _abstract_params(family=family, n_layer=4, scan_layers=True)
    self.assertIn("scanned_blocks", scanned)
    self.assertEqual(models.count_params(scanned), models.count_params(plain))


if __name__ == "__main__":
  absltest.main()
