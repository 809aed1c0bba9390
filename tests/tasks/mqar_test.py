"""Tests for ssm_icl.tasks.mqar."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import tasks
from ssm_icl.tasks import base
from tests.tasks import prompt_checks

_B, _N, _D = 64, 4, 6


def _sample(task, trunc=None, seed=0):
  return jax.device_get(task.sample(jax.random.key(seed), _B, _N, trunc))


def _split(p):
  keys, values = p.tokens[:, 0:2 * _N:2], p.tokens[:, 1:2 * _N:2]
  return keys, values, p.tokens[:, -1]


class VectorMQARTest(absltest.TestCase):

  def test_sharding_invariance(self):
    prompt_checks.assert_sharding_invariant(self, tasks.VectorMQAR(n_dims=_D))

  def test_query_copies_a_key_and_target_is_its_value(self):
    p = _sample(tasks.VectorMQAR(n_dims=_D))
    keys, values, query = _split(p)
    np.testing.assert_allclose(np.linalg.norm(p.tokens, axis=-1), np.sqrt(_D),
                               rtol=1e-5)
    dist = np.abs(keys - query[:, None]).sum(-1)  # [b, n]
    np.testing.assert_array_equal(dist.min(-1), 0.0)
    match = dist.argmin(-1)
    self.assertEqual(set(match), set(range(_N)))  # every key gets queried
    np.testing.assert_array_equal(p.targets[:, 0],
                                  values[np.arange(_B), match])
    np.testing.assert_array_equal(p.predict_positions, [2 * _N])
    np.testing.assert_array_equal(p.example_index, [_N])
    # Baselines see the pairs, then the query with its target (masked).
    np.testing.assert_array_equal(p.xs, np.concatenate(
        [keys, query[:, None]], 1))
    np.testing.assert_array_equal(p.ys[:, -1], p.targets[:, 0])
    np.testing.assert_array_equal(p.example_mask[:, :_N], 1.0)
    np.testing.assert_array_equal(p.example_mask[:, _N], 0.0)

  def test_zero_predictor_scores_one(self):
    p = tasks.VectorMQAR(n_dims=_D).sample(jax.random.key(1), _B, _N)
    zero = base.pointwise_metric(jnp.zeros_like(p.targets), p)
    np.testing.assert_allclose(zero, 1.0, rtol=1e-5)
    self.assertEqual(p.loss, base.LOSS_MSE)
    np.testing.assert_allclose(base.masked_loss(jnp.zeros_like(p.targets), p),
                               1.0, rtol=1e-5)

  def test_reference_self_query(self):
    p = _sample(tasks.VectorMQAR(n_dims=_D, reference_self_query=True))
    keys, values, query = _split(p)
    dist = np.abs(keys - query[:, None]).sum(-1)
    is_copy = dist.min(-1) == 0.0
    # With probability 1 / (n + 1) = 0.2 the query is a fresh vector.
    self.assertBetween(1.0 - is_copy.mean(), 0.05, 0.4)
    # Its target is the value of the key with the largest inner product.
    nearest = np.einsum("bd,bnd->bn", query, keys).argmax(-1)
    np.testing.assert_array_equal(p.targets[:, 0],
                                  values[np.arange(_B), nearest])

  def test_query_position_and_noise(self):
    p = _sample(tasks.VectorMQAR(n_dims=_D, query_position=2))
    keys, values, query = _split(p)
    np.testing.assert_array_equal(query, keys[:, 2])
    np.testing.assert_array_equal(p.targets[:, 0], values[:, 2])
    with self.assertRaisesRegex(ValueError, "query_position=4 must be < "
                                "n_points=4"):
      tasks.VectorMQAR(query_position=4).sample(jax.random.key(0), 2, _N)

    noisy = _sample(tasks.VectorMQAR(n_dims=_D, query_noise=0.1))
    keys, values, query = _split(noisy)
    np.testing.assert_allclose(np.linalg.norm(query, axis=-1), np.sqrt(_D),
                               rtol=1e-5)
    self.assertGreater(np.abs(keys - query[:, None]).sum(-1).min(), 0.0)
    nearest = np.einsum("bd,bnd->bn", query, keys).argmax(-1)
    np.testing.assert_array_equal(noisy.targets[:, 0],
                                  values[np.arange(_B), nearest])

  def test_truncation_zeroes_every_vector(self):
    p = _sample(tasks.VectorMQAR(n_dims=_D), trunc=4)
    np.testing.assert_array_equal(p.tokens[..., 4:], 0.0)
    np.testing.assert_array_equal(p.targets[..., 4:], 0.0)
    self.assertTrue(np.all(p.tokens[..., :4] != 0.0))


if __name__ == "__main__":
  absltest.main()
