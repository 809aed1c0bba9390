"""Tests for ssm_icl/train/state.py: sharded init, shardings, keys."""

from absl.testing import absltest
import chex
from flax import linen as nn
import jax
from jax.sharding import PartitionSpec as P
import numpy as np

from configs import linear_regression
from ssm_icl import models
from ssm_icl.parallel import mesh as mesh_lib
from ssm_icl.train import loop
from ssm_icl.train import optim
from ssm_icl.train import state as state_lib


def _sharded(family, mesh, rules_name):
  config = linear_regression.get_config(f"{family},tiny")
  task, _, model_cfg, _ = loop.build(config)
  rules = mesh_lib.axis_rules(rules_name, mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    return state_lib.abstract_state(
        models.build_model(model_cfg), optim.make_optimizer(config.train),
        (1, 12, task.d_in), 0, mesh, rules)


class StateTest(absltest.TestCase):

  def test_dp_tp_shardings_follow_the_rules(self):
    mesh = mesh_lib.make_mesh((2, 4))
    sharded = _sharded("mambaformer", mesh, "dp_tp")
    params = sharded.shardings.params
    mixer = params["blocks_0"]["mixer"]
    self.assertEqual(mixer["in_proj"]["kernel"].spec, P(None, "model"))
    self.assertEqual(mixer["out_proj"]["kernel"].spec, P("model", None))
    self.assertEqual(mixer["A_log"].spec, P("model", None))
    self.assertEqual(params["read_in"]["kernel"].spec, P(None, None))
    self.assertEqual(sharded.shardings.step.spec, P())
    # Adam's moments carry the parameters' shardings.
    mu = sharded.shardings.opt_state[1][0].mu
    self.assertEqual(mu["blocks_0"]["mixer"]["in_proj"]["kernel"].spec,
                     P(None, "model"))
    axes = state_lib.param_axes(sharded.boxed.params)
    self.assertEqual(axes["blocks_0"]["mixer"]["in_proj"]["kernel"],
                     ("embed", "inner"))
    target = sharded.target.params["blocks_0"]["mixer"]["in_proj"]["kernel"]
    self.assertEqual(target.sharding.spec, P(None, "model"))

  def test_dp_replicates_every_parameter(self):
    sharded = _sharded("transformer", mesh_lib.make_mesh((-1, 1)), "dp")
    for sharding in jax.tree.leaves(sharded.shardings.params):
      self.assertTrue(sharding.is_fully_replicated)

  def test_sharded_init_equals_single_device_init(self):
    big = mesh_lib.make_mesh((2, 4))
    one = mesh_lib.make_mesh((1, 1), devices=jax.devices()[:1])
    states = []
    for mesh in (big, one):
      sharded = _sharded("mamba", mesh, "dp_tp")
      rules = mesh_lib.axis_rules("dp_tp", mesh)
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state = state_lib.init_state(sharded)
      states.append(state)
    kernel = states[0].params["blocks_0"]["mixer"]["in_proj"]["kernel"]
    self.assertEqual(kernel.sharding.spec, P(None, "model"))
    self.assertEqual(kernel.addressable_shards[0].data.shape, (16, 16))
    chex.assert_trees_all_equal(jax.device_get(states[0].params),
                                jax.device_get(states[1].params))
    self.assertEqual(int(states[0].step), 0)
    # Strong int32 like a restored step, so fresh and resumed runs lower the
    # same train step (and share the persistent compilation cache).
    self.assertEqual(states[0].step.dtype, np.int32)
    self.assertFalse(states[0].step.weak_type)
    self.assertFalse(sharded.boxed.step.weak_type)

  def test_keys_are_distinct_streams(self):
    keys = [state_lib.init_key(0), state_lib.train_key(0, 0),
            state_lib.train_key(0, 1), state_lib.eval_key(0, 0),
            state_lib.train_key(1, 0)]
    data = {tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in keys}
    self.assertLen(data, len(keys))


if __name__ == "__main__":
  absltest.main()
