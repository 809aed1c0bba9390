"""Tests for ssm_icl.tasks.regression (LR, sparse LR, 2NN, robustness)."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import tasks
from ssm_icl.tasks import base
from ssm_icl.tasks import robustness
from tests.tasks import prompt_checks


def _sample(task, b, n, trunc=None, seed=0):
  # Eager: the variants share primitive compilations, which is much cheaper
  # than one jit compile per task variant (registry_test covers jit).
  return jax.device_get(task.sample(jax.random.key(seed), b, n, trunc))


# One shape for (almost) every test, so eager primitive compilations are
# shared: 64 prompts x 16 points x 5 dims.
_B, _N, _D = 64, 16, 5


def _lstsq(xs, ys):
  """Per-prompt least squares weights [b, d] and residuals [b, n]."""
  w = np.stack([np.linalg.lstsq(x, y, rcond=None)[0][:, 0]
                for x, y in zip(xs, ys)])
  return w, ys[..., 0] - np.einsum("bnd,bd->bn", xs, w)


class LinearRegressionTest(parameterized.TestCase):

  @parameterized.parameters(
      (tasks.LinearRegression(n_dims=6),),
      (tasks.SparseLinearRegression(n_dims=6),),
      (tasks.Relu2nnRegression(n_dims=6, hidden=8),))
  def test_sharding_invariance(self, task):
    p = prompt_checks.assert_sharding_invariant(self, task,
                                                n_dims_truncated=4)
    np.testing.assert_array_equal(p.xs[..., 4:], 0.0)

  def test_layout_truncation_and_linearity(self):
    task = tasks.LinearRegression(n_dims=_D)
    p = _sample(task, _B, _N, trunc=4)
    # Interleaved: token 2i = x_i, token 2i + 1 = [y_i, 0, ..., 0].
    np.testing.assert_array_equal(p.tokens[:, 0::2], p.xs)
    np.testing.assert_array_equal(p.tokens[:, 1::2, 0], p.ys[..., 0])
    np.testing.assert_array_equal(p.tokens[:, 1::2, 1:], 0.0)
    np.testing.assert_array_equal(p.predict_positions, 2 * np.arange(_N))
    np.testing.assert_array_equal(p.example_index, np.arange(_N))
    np.testing.assert_array_equal(p.targets, p.ys)
    # Coordinates >= 4 are zeroed, the others are not.
    np.testing.assert_array_equal(p.xs[..., 4:], 0.0)
    self.assertTrue(np.all(p.xs[..., :4] != 0.0))
    # Noiseless: labels are exactly linear in the visible coordinates.
    _, resid = _lstsq(p.xs[..., :4], p.ys)
    np.testing.assert_allclose(resid, 0.0, atol=1e-4)
    np.testing.assert_array_equal(p.loss_mask, 1.0)
    np.testing.assert_array_equal(p.metric_mask, 1.0)
    self.assertEqual((p.loss, p.metric), (base.LOSS_MSE,
                                          base.METRIC_SQUARED_ERROR))

  def test_input_and_label_statistics(self):
    # 5120 inputs: standard errors of about 0.014 (mean) and 0.02 (var).
    p = _sample(tasks.LinearRegression(n_dims=_D), _B, _N, seed=1)
    np.testing.assert_allclose(p.xs.mean(), 0.0, atol=0.06)
    np.testing.assert_allclose(p.xs.var(), 1.0, atol=0.08)
    np.testing.assert_allclose(p.xs.reshape(-1, _D).mean(0), 0.0, atol=0.06)
    # E[y^2] = E|x|^2 = d, so the zero predictor's normalised error is ~1
    # (standard error about 0.1 from the 64 weight vectors).
    zero = base.pointwise_metric(jnp.zeros_like(p.targets), p)
    np.testing.assert_allclose(zero.mean(), 1.0, atol=0.3)

  def test_traced_truncation_does_not_recompile(self):
    traces = []

    def fn(key, trunc):
      traces.append(None)
      return tasks.LinearRegression(n_dims=5).sample(key, 2, 3, trunc)

    jitted = jax.jit(fn)
    a = jitted(jax.random.key(0), jnp.int32(2))
    b = jitted(jax.random.key(0), jnp.int32(4))
    self.assertLen(traces, 1)
    np.testing.assert_array_equal(a.xs[..., 2:], 0.0)
    np.testing.assert_array_equal(b.xs[..., 4:], 0.0)
    np.testing.assert_array_equal(a.xs[..., :2], b.xs[..., :2])

  def test_bad_sample_arguments(self):
    task = tasks.LinearRegression(n_dims=5)
    key = jax.random.key(0)
    with self.assertRaisesRegex(ValueError, "batch_size=0 must be a pos"):
      task.sample(key, 0, 3)
    with self.assertRaisesRegex(ValueError, "n_points=-1 must be a pos"):
      task.sample(key, 2, -1)
    with self.assertRaisesRegex(ValueError,
                                r"n_dims_truncated=6 must be in \[1, n_dims"):
      task.sample(key, 2, 3, 6)
    with self.assertRaisesRegex(ValueError, "n_dims_truncated=2.5 must be"):
      task.sample(key, 2, 3, 2.5)

  def test_label_noise(self):
    task = tasks.LinearRegression(n_dims=_D, noise_std=0.5)
    p = _sample(task, _B, _N)
    _, resid = _lstsq(p.xs, p.ys)
    # Residual variance of least squares: sigma^2 (n - d) / n.
    np.testing.assert_allclose(resid.var(), 0.25 * 11 / 16, rtol=0.2)

  def test_renormalized_noisy_labels_keep_label_scale(self):
    task = tasks.LinearRegression(n_dims=_D, noise_std=3.0,
                                  renormalize_ys=True)
    p = _sample(task, _B, _N)
    np.testing.assert_allclose(np.mean(p.ys**2), _D, rtol=0.2)

  @parameterized.parameters(("x_scale", 3.0), ("y_scale", 0.5))
  def test_scaling(self, field, scale):
    p = _sample(tasks.LinearRegression(n_dims=_D, **{field: scale}), _B, _N)
    x_scale = scale if field == "x_scale" else 1.0
    np.testing.assert_allclose(np.mean(p.xs**2), x_scale**2, rtol=0.1)
    np.testing.assert_allclose(np.mean(p.ys**2), _D * scale**2, rtol=0.25)

  def test_skewed_covariance(self):
    task = tasks.LinearRegression(n_dims=_D, covariance="skewed",
                                  covariance_seed=3)
    p = _sample(task, _B, _N)
    t = robustness.scale_matrix(_D, "skewed", 3)
    # Whitening with the scale matrix gives isotropic inputs (5120 samples:
    # entry standard errors of 0.014 to 0.02; an isotropic sample would be
    # off by O(1) here).
    white = p.xs.reshape(-1, _D) @ np.linalg.inv(t)
    np.testing.assert_allclose(white.T @ white / len(white), np.eye(_D),
                               atol=0.15)
    self.assertGreater(np.linalg.cond(t.T @ t), 10.0)

  def test_half_subspace_inputs_have_rank_d_over_2(self):
    p = _sample(tasks.LinearRegression(n_dims=_D, covariance="half_subspace"),
                _B, _N)
    self.assertEqual(np.linalg.matrix_rank(p.xs.reshape(-1, _D), tol=1e-3), 2)

  def test_orthogonal_query(self):
    task = tasks.LinearRegression(n_dims=_D, query_mode="orthogonal")
    p = _sample(task, _B, _D)  # 4 context inputs in 5 dims
    context, query = p.xs[:, :-1], p.xs[:, -1]
    np.testing.assert_allclose(np.einsum("bmd,bd->bm", context, query), 0.0,
                               atol=1e-4)
    # The query keeps a Gaussian norm: E|q|^2 = d.
    np.testing.assert_allclose(np.mean(np.sum(query**2, -1)), _D, rtol=0.25)
    np.testing.assert_array_equal(p.predict_positions, [2 * (_D - 1)])
    np.testing.assert_array_equal(p.example_index, [_D - 1])
    np.testing.assert_array_equal(p.targets[:, 0], p.ys[:, -1])
    np.testing.assert_array_equal(p.metric_mask, 1.0)

  def test_orthogonal_query_masked_when_context_spans_visible_dims(self):
    task = tasks.LinearRegression(n_dims=_D, query_mode="orthogonal")
    p = _sample(task, _B, _D, trunc=3)  # 4 context inputs in 3 visible dims
    np.testing.assert_array_equal(p.metric_mask, 0.0)
    np.testing.assert_array_equal(p.loss_mask, 0.0)
    np.testing.assert_array_equal(p.xs[:, -1], 0.0)
    with self.assertRaisesRegex(ValueError, "n_points <= n_dims=5.*got "
                                "n_points=6"):
      task.sample(jax.random.key(0), 2, 6)

  def test_overlapping_query_copies_a_context_input(self):
    task = tasks.LinearRegression(n_dims=_D, query_mode="overlapping")
    p = _sample(task, _B, _N)
    dist = np.abs(p.xs[:, :-1] - p.xs[:, -1:]).sum(-1)  # [b, n - 1]
    np.testing.assert_array_equal(dist.min(-1), 0.0)
    # The copied index varies across prompts.
    self.assertGreater(len(set(dist.argmin(-1))), 1)
    with self.assertRaisesRegex(ValueError, "n_points >= 2"):
      task.sample(jax.random.key(0), 2, 1)

  def test_random_quadrants(self):
    task = tasks.LinearRegression(n_dims=_D, query_mode="random_quadrants")
    p = _sample(task, _B, _N)
    signs = np.sign(p.xs[:, :-1])
    np.testing.assert_array_equal(signs, signs[:, :1].repeat(_N - 1, axis=1))
    # The query is drawn as usual, so it rarely shares the context orthant.
    same = np.all(np.sign(p.xs[:, -1]) == signs[:, 0], axis=-1)
    self.assertLess(same.mean(), 0.5)

  def test_robustness_suite(self):
    suite = tasks.linear_regression_robustness_suite(n_dims=6)
    self.assertContainsSubset(
        ["standard", "noisy_labels", "scale_x=0.333", "scale_y=3",
         "skewed", "half_subspace", "random_quadrants",
         "orthogonal_train_test", "overlapping_train_test"], suite)
    self.assertEqual(suite["scale_x=2"].x_scale, 2.0)
    self.assertEqual(suite["orthogonal_train_test"].query_mode, "orthogonal")
    for name, task in suite.items():
      self.assertIsInstance(task, tasks.LinearRegression, name)
      self.assertEqual(task.n_dims, 6)


class SparseLinearRegressionTest(parameterized.TestCase):

  @parameterized.parameters((None, 3), (4, 3), (2, 2))
  def test_support_within_truncated_coords(self, trunc, n_nonzero):
    task = tasks.SparseLinearRegression(n_dims=_D, k=3)
    p = _sample(task, _B, _N, trunc=trunc)
    visible = _D if trunc is None else trunc
    w, resid = _lstsq(p.xs[..., :visible], p.ys)
    np.testing.assert_allclose(resid, 0.0, atol=1e-4)
    self.assertTrue(np.all((np.abs(w) > 1e-3).sum(-1) == n_nonzero))
    # Every visible coordinate is used by some prompt.
    self.assertTrue(np.all((np.abs(w) > 1e-3).any(0)))
    self.assertEqual(p.normalizer, 3.0)


class Relu2nnRegressionTest(absltest.TestCase):

  def test_label_scale_and_nonlinearity(self):
    task = tasks.Relu2nnRegression(n_dims=_D, hidden=16)
    p = _sample(task, _B, _N)
    # sqrt(2 / hidden) scaling gives E[y^2] = d.
    np.testing.assert_allclose(np.mean(p.ys**2), _D, rtol=0.25)
    # Not linear: least squares leaves a residual.
    _, resid = _lstsq(p.xs, p.ys)
    self.assertGreater(resid.var(), 0.05)
    self.assertEqual(p.normalizer, _D)


if __name__ == "__main__":
  absltest.main()
