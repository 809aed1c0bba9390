"""Tests for ssm_icl/baselines/neighbors.py."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import tasks
from ssm_icl.baselines import neighbors


def _prompt(b=2, n=7, d=3, seed=0):
  prompt = tasks.get_task("linear_regression", n_dims=d).sample(
      jax.random.key(seed), b, n)
  mask = np.ones((b, n), np.float32)
  mask[0, 2] = 0.0  # Not a genuine example: never a neighbour.
  return prompt.replace(example_mask=jnp.asarray(mask))


def _numpy_knn(prompt, k, weights):
  """Brute-force float64 k-NN of every slot."""
  xs = np.asarray(prompt.xs, np.float64)
  ys = np.asarray(prompt.ys, np.float64)[..., 0]
  mask = np.asarray(prompt.example_mask)
  b, n, _ = xs.shape
  out = np.zeros((b, n))
  for i in range(b):
    for j in range(n):
      keep = np.flatnonzero(mask[i, :j] > 0)
      if not keep.size:
        continue
      dist = np.linalg.norm(xs[i, keep] - xs[i, j], axis=-1)
      near = np.argsort(dist, kind="stable")[:k]
      if weights == "uniform":
        w = np.ones(len(near))
      elif np.any(dist[near] == 0):
        w = (dist[near] == 0).astype(float)
      else:
        w = 1.0 / dist[near]
      out[i, j] = (w * ys[i, keep][near]).sum() / w.sum()
  return out


class KNearestNeighborsTest(parameterized.TestCase):

  @parameterized.product(k=[1, 3], weights=["uniform", "distance"])
  def test_matches_brute_force(self, k, weights):
    prompt = _prompt()
    got = neighbors.KNearestNeighbors(n_neighbors=k, weights=weights)(prompt)
    np.testing.assert_allclose(got[..., 0], _numpy_knn(prompt, k, weights),
                               rtol=1e-5, atol=1e-6)

  def test_exact_match_takes_all_the_weight(self):
    prompt = _prompt(b=1, n=4)
    xs = np.asarray(prompt.xs).copy()
    xs[0, 3] = xs[0, 1]  # The query of slot 3 repeats example 1.
    prompt = prompt.replace(xs=jnp.asarray(xs))
    got = neighbors.KNearestNeighbors(3, weights="distance")(prompt)
    np.testing.assert_allclose(got[0, 3, 0], prompt.ys[0, 1, 0], rtol=1e-6)

  def test_empty_prefix_predicts_zero(self):
    got = neighbors.KNearestNeighbors()(_prompt())
    np.testing.assert_array_equal(got[:, 0], 0.0)

  @parameterized.parameters(
      (dict(n_neighbors=0), r"n_neighbors must be an int >= 1, got 0"),
      (dict(weights="cosine"), r"weights='cosine' is unknown"))
  def test_rejects_bad_fields(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      neighbors.KNearestNeighbors(**kwargs)


if __name__ == "__main__":
  absltest.main()
