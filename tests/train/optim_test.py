"""Tests for ssm_icl/train/optim.py."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
from flax import linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ssm_icl.train import optim


def _train_cfg(**overrides):
  cfg = ml_collections.ConfigDict(dict(
      lr=1e-2, lr_schedule="constant", warmup_steps=0, steps=100, b1=0.9,
      b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=10.0))
  cfg.update(overrides)
  return cfg


def _params():
  return {
      "in_proj": {"kernel": jnp.ones((3, 4))},
      "A_log": jnp.ones((4, 2)),
      "D": jnp.ones((4,)),
      "dt_proj": {"kernel": jnp.ones((2, 4)), "bias": jnp.ones((4,))},
      "ln": {"scale": jnp.ones((3, 3)), "bias": jnp.ones((3,))},
      "wpe": jnp.ones((5, 3)),
  }


class ScheduleTest(parameterized.TestCase):

  def test_constant(self):
    s = optim.learning_rate_schedule(_train_cfg())
    np.testing.assert_allclose([s(0), s(50), s(99)], [1e-2] * 3, rtol=1e-6)

  def test_warmup_then_constant(self):
    s = optim.learning_rate_schedule(_train_cfg(warmup_steps=10))
    np.testing.assert_allclose([s(0), s(5), s(10), s(60)],
                               [0.0, 5e-3, 1e-2, 1e-2], rtol=1e-6, atol=1e-9)

  def test_cosine_decays_to_zero(self):
    s = optim.learning_rate_schedule(
        _train_cfg(lr_schedule="cosine", warmup_steps=10))
    np.testing.assert_allclose([s(10), s(100)], [1e-2, 0.0], atol=1e-8)
    self.assertLess(float(s(55)), 1e-2)

  @parameterized.parameters(
      (dict(lr=0.0), r"train.lr=0.0 must be positive"),
      (dict(lr_schedule="linear"), r"train.lr_schedule='linear' is unknown"),
      (dict(warmup_steps=-1), r"train.warmup_steps=-1 must be >= 0"),
  )
  def test_bad_schedule(self, overrides, message):
    with self.assertRaisesRegex(ValueError, message):
      optim.learning_rate_schedule(_train_cfg(**overrides))


class OptimizerTest(parameterized.TestCase):

  def test_decay_mask_by_name(self):
    mask = optim.weight_decay_mask(_params())
    self.assertEqual(mask, {
        "in_proj": {"kernel": True}, "A_log": False, "D": False,
        "dt_proj": {"kernel": True, "bias": False},
        "ln": {"scale": False, "bias": False}, "wpe": True})

  def test_decay_mask_sees_through_boxes(self):
    boxed = {"kernel": nn.LogicallyPartitioned(jnp.ones((2, 2)), ("a", "b")),
             "D": nn.LogicallyPartitioned(jnp.ones((2,)), ("a",))}
    mask = optim.weight_decay_mask(boxed)
    self.assertIsInstance(mask["kernel"], nn.LogicallyPartitioned)
    self.assertEqual(jax.tree.leaves(mask), [False, True])  # D, kernel

  def test_adam_with_clipping_matches_optax(self):
    params = _params()
    grads = jax.tree.map(lambda p: 100.0 * jnp.ones_like(p), params)
    tx = optim.make_optimizer(_train_cfg(grad_clip=1.0))
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    got, _ = tx.update(grads, tx.init(params), params)
    want, _ = ref.update(grads, ref.init(params), params)
    chex.assert_trees_all_close(got, want, rtol=1e-6)

  def test_no_clip_when_disabled(self):
    tx = optim.make_optimizer(_train_cfg(grad_clip=0.0))
    state = tx.init(_params())
    self.assertLen(state, 1)  # adam only

  def test_weight_decay_skips_exempt_params(self):
    params = _params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = optim.make_optimizer(_train_cfg(weight_decay=0.5, grad_clip=0.0))
    updates, _ = tx.update(zeros, tx.init(params), params)
    # With zero gradients the update is -lr * wd * p on decayed params only.
    np.testing.assert_allclose(updates["in_proj"]["kernel"], -5e-3)
    np.testing.assert_allclose(updates["A_log"], 0.0)
    np.testing.assert_allclose(updates["dt_proj"]["bias"], 0.0)
    np.testing.assert_allclose(updates["ln"]["scale"], 0.0)

  @parameterized.parameters(
      (dict(b1=1.0), r"train.b1=1.0 and train.b2=0.999 must both be in"),
      (dict(weight_decay=-1.0), r"train.weight_decay=-1.0 must be >= 0"),
  )
  def test_bad_optimizer(self, overrides, message):
    with self.assertRaisesRegex(ValueError, message):
      optim.make_optimizer(_train_cfg(**overrides))


if __name__ == "__main__":
  absltest.main()
