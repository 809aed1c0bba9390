"""Tests for ssm_icl/baselines/gd_network.py."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssm_icl import tasks
from ssm_icl.baselines import gd_network
from ssm_icl.tasks import base

_SMALL = dict(hidden=8, steps=20, learning_rate=0.05)


@functools.cache
def _sampler(task, b, n):
  return jax.jit(functools.partial(task.sample, batch_size=b, n_points=n))


def _prompt(b=2, n=6, d=2, seed=0):
  task = tasks.get_task("linear_regression", n_dims=d)
  return _sampler(task, b, n)(jax.random.key(seed))


class GDTwoLayerNetworkTest(parameterized.TestCase):

  def test_equals_one_network_trained_on_the_prefix_alone(self):
    prompt = _prompt()
    got = np.asarray(gd_network.GDTwoLayerNetwork(seed=3, **_SMALL)(prompt))
    b, j = 1, 4
    # The baseline's key for (prompt b, slot j), then its init / batch split.
    key = jax.random.split(jax.random.key(3), (2, 6))[b, j]
    init_key, _ = jax.random.split(key)
    params = gd_network._init(init_key, 2, _SMALL["hidden"], 1)
    x, y = prompt.xs[b, :j], prompt.ys[b, :j]
    optimizer = optax.adam(_SMALL["learning_rate"])
    state = optimizer.init(params)
    loss = lambda p: jnp.mean(jnp.square(gd_network._apply(p, x) - y))
    for _ in range(_SMALL["steps"]):
      updates, state = optimizer.update(jax.grad(loss)(params), state, params)
      params = optax.apply_updates(params, updates)
    expected = gd_network._apply(params, prompt.xs[b, j])
    np.testing.assert_allclose(got[b, j], expected, rtol=1e-4, atol=1e-5)

  def test_empty_prefix_predicts_zero(self):
    got = gd_network.GDTwoLayerNetwork(**_SMALL)(_prompt())
    np.testing.assert_array_equal(got[:, 0], 0.0)

  def test_learns_from_the_prefix(self):
    prompt = _prompt(b=16, n=16)
    preds = gd_network.GDTwoLayerNetwork(hidden=16, steps=60,
                                         learning_rate=0.05)(prompt)
    err = np.asarray(base.pointwise_metric(preds, prompt))[:, -4:].mean()
    zero = np.asarray(base.pointwise_metric(jnp.zeros_like(preds),
                                            prompt))[:, -4:].mean()
    self.assertLess(err, 0.3 * zero)

  def test_minibatch_is_a_subset_of_the_prefix(self):
    mask = jnp.array([1, 0, 1, 1, 1, 0, 1, 0], jnp.float32)
    for seed in range(5):
      batch = np.asarray(gd_network._minibatch(jax.random.key(seed), mask, 3))
      self.assertEqual(batch.sum(), 3)
      self.assertTrue(np.all(batch <= np.asarray(mask)))
    small = np.asarray(gd_network._minibatch(jax.random.key(0), mask, 6))
    np.testing.assert_array_equal(small, mask)  # Fewer examples than 6.

  @parameterized.parameters(
      (dict(hidden=0), r"hidden must be an int >= 1, got 0"),
      (dict(steps=1.5), r"steps must be an int >= 1, got 1.5"),
      (dict(batch_size=0), r"batch_size must be an int >= 1, got 0"),
      (dict(learning_rate=0.0), r"learning_rate must be > 0, got 0.0"))
  def test_rejects_bad_fields(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      gd_network.GDTwoLayerNetwork(**kwargs)


if __name__ == "__main__":
  absltest.main()
