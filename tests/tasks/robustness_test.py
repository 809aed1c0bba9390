"""Tests for ssm_icl.tasks.robustness."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from ssm_icl.tasks import robustness


class ScaleMatrixTest(parameterized.TestCase):

  def test_isotropic_is_none(self):
    self.assertIsNone(robustness.scale_matrix(6, "isotropic", 0))

  @parameterized.parameters(
      ("skewed", 1.0 / np.arange(1, 7)),
      ("half_subspace", np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])))
  def test_spectrum_and_trace(self, covariance, eig):
    t = robustness.scale_matrix(6, covariance, 4)
    np.testing.assert_allclose(t, t.T, atol=1e-6)
    # Eigenvalues proportional to `eig`, rescaled so trace(T^T T) = d.
    expected = np.sort(eig * np.sqrt(6 / np.sum(eig**2)))
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(t)), expected,
                               atol=1e-5)
    np.testing.assert_allclose(np.trace(t.T @ t), 6.0, rtol=1e-5)

  def test_seed_fixes_the_rotation(self):
    a = robustness.scale_matrix(5, "skewed", 1)
    np.testing.assert_array_equal(a, robustness.scale_matrix(5, "skewed", 1))
    self.assertFalse(np.allclose(a, robustness.scale_matrix(5, "skewed", 2)))

  def test_unknown_covariance(self):
    with self.assertRaisesRegex(ValueError, "covariance='full' is unknown"):
      robustness.scale_matrix(5, "full", 0)


class QueryTest(absltest.TestCase):

  def test_orthogonal_query_matches_float64_projection(self):
    rng = np.random.default_rng(0)
    context = rng.standard_normal((3, 4, 6)).astype(np.float32)
    query = rng.standard_normal((3, 6)).astype(np.float32)
    got = np.asarray(robustness.orthogonal_query(context, query))
    for c, q, g in zip(context.astype(np.float64), query, got):
      basis, _ = np.linalg.qr(c.T)  # [d, m] orthonormal span of the context
      resid = q - basis @ (basis.T @ q)
      want = resid * np.linalg.norm(q) / np.linalg.norm(resid)
      np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-5)

  def test_orthogonal_query_rank_deficient_context(self):
    # Context inputs live in the first 2 coordinates (truncated dims).
    rng = np.random.default_rng(1)
    context = np.zeros((2, 5, 4), np.float32)
    context[..., :2] = rng.standard_normal((2, 5, 2))
    query = rng.standard_normal((2, 4)).astype(np.float32)
    got = np.asarray(robustness.orthogonal_query(context, query))
    np.testing.assert_allclose(got[:, :2], 0.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1),
                               np.linalg.norm(query, axis=-1), rtol=1e-4)

  def test_overlapping_and_quadrants(self):
    context = jax.random.normal(jax.random.key(0), (16, 3, 4))
    query = np.asarray(robustness.overlapping_query(jax.random.key(1),
                                                    context))
    idx = np.argmin(np.abs(np.asarray(context) - query[:, None]).sum(-1), -1)
    np.testing.assert_array_equal(
        query, np.asarray(context)[np.arange(16), idx])
    self.assertEqual(set(idx), {0, 1, 2})
    moved = np.asarray(robustness.random_quadrants(jax.random.key(2),
                                                   context))
    np.testing.assert_allclose(np.abs(moved), np.abs(context))
    np.testing.assert_array_equal(np.sign(moved),
                                  np.sign(moved[:, :1]).repeat(3, 1))


if __name__ == "__main__":
  absltest.main()
