"""Tests for ssm_icl.nn.axes."""

from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn
import jax
import numpy as np

from ssm_icl.nn import axes


class AxesTest(parameterized.TestCase):

  def test_dp_shards_only_the_activation_batch(self):
    rules = dict(axes.get_rules("dp"))
    self.assertEqual(rules[axes.ACT_BATCH], axes.DATA)
    others = {k: v for k, v in rules.items() if k != axes.ACT_BATCH}
    self.assertTrue(others)
    self.assertTrue(all(v is None for v in others.values()))

  def test_dp_tp_adds_channel_parallel_axes(self):
    rules = dict(axes.get_rules("dp_tp"))
    for name in (axes.INNER, axes.ACT_INNER, axes.MLP, axes.HEADS,
                 axes.ACT_HEADS):
      self.assertEqual(rules[name], axes.MODEL, name)
    self.assertEqual(rules[axes.ACT_BATCH], axes.DATA)
    for name in (axes.EMBED, axes.STATE, axes.POS, axes.LAYERS, axes.IO):
      self.assertIsNone(rules[name], name)

  @parameterized.parameters("dp", "dp_tp")
  def test_every_axis_has_a_rule(self, name):
    names = [k for k, _ in axes.get_rules(name)]
    self.assertCountEqual(names, axes.PARAM_AXES + axes.ACTIVATION_AXES)

  def test_unknown_rule_set_is_rejected(self):
    with self.assertRaisesRegex(ValueError, r"'fsdp'.*\['dp', 'dp_tp'\]"):
      axes.get_rules("fsdp")

  def test_dp_tp_rules_resolve_to_mesh_shardings(self):
    mesh = jax.make_mesh((2, 4), (axes.DATA, axes.MODEL),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    init = nn.with_logical_partitioning(nn.initializers.zeros,
                                        (axes.EMBED, axes.INNER))
    boxed = jax.eval_shape(lambda: init(jax.random.key(0), (8, 16)))
    specs = nn.get_partition_spec({"w": boxed})
    shardings = nn.logical_to_mesh_sharding(specs, mesh,
                                            axes.get_rules("dp_tp"))
    self.assertEqual(shardings["w"].spec, jax.sharding.PartitionSpec(
        None, axes.MODEL))
    np.testing.assert_array_equal(
        shardings["w"].shard_shape((8, 16)), (8, 4))


if __name__ == "__main__":
  absltest.main()
