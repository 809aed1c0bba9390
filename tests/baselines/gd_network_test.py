"""Tests for ssm_icl/baselines/gd_network.py."""

import functools
from unittest import mock

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
    # The init of (prompt b, slot j), as the module docstring derives it.
    init_key, _ = jax.random.split(jax.random.key(3))
    params = gd_network._init(jax.random.fold_in(init_key, j), (2,), 2,
                              _SMALL["hidden"], 1)
    params = jax.tree.map(lambda a: a[b], params)
    x, y = prompt.xs[b, :j], prompt.ys[b, :j]
    optimizer = optax.adam(_SMALL["learning_rate"])
    state = optimizer.init(params)
    loss = lambda p: jnp.mean(jnp.square(gd_network._apply(p, x) - y))

    @jax.jit
    def step(params, state):
      updates, state = optimizer.update(jax.grad(loss)(params), state, params)
      return optax.apply_updates(params, updates), state

    for _ in range(_SMALL["steps"]):
      params, state = step(params, state)
    expected = gd_network._apply(params, prompt.xs[b, j:j + 1])[0]
    np.testing.assert_allclose(got[b, j], expected, rtol=1e-4, atol=1e-5)

  def test_slot_chunking_does_not_change_results(self):
    prompt = _prompt()
    model = gd_network.GDTwoLayerNetwork(batch_size=3, **_SMALL)
    whole = model(prompt)
    # 4 slots per chunk (2 * 6 * 8 = 96 hidden activations per slot), so the
    # 6 slots make two chunks, the second one padded.
    self.enter_context(mock.patch.object(
        gd_network, "_CHUNK_ELEMENTS", 96 * 4))
    gd_network._gd_network.clear_cache()
    np.testing.assert_allclose(model(prompt), whole, rtol=1e-5, atol=1e-6)

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
    mask = jnp.array([[1, 0, 1, 1, 1, 0, 1, 0]] * 5, jnp.float32)
    batch = np.asarray(gd_network._minibatch(jax.random.key(0), mask, 3))
    np.testing.assert_array_equal(batch.sum(-1), 3)
    self.assertTrue(np.all(batch <= np.asarray(mask)))
    self.assertGreater(len({tuple(r) for r in batch}), 1)  # Random subsets.
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
