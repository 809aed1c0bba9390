"""Tests for ssm_icl/baselines/linear.py."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import tasks
from ssm_icl.baselines import linear
from ssm_icl.tasks import base


def _prompt_with_outliers(b=2, n=7, d=3, seed=0):
  """A linear-regression prompt where some examples are not genuine."""
  prompt = tasks.get_task("linear_regression", n_dims=d).sample(
      jax.random.key(seed), b, n)
  mask = np.ones((b, n), np.float32)
  mask[0, 1] = mask[1, 3] = 0.0
  return prompt.replace(example_mask=jnp.asarray(mask))


def _prefixes(prompt):
  """Yields (b, j, X_prefix, y_prefix, query) in float64, from numpy."""
  xs = np.asarray(prompt.xs, np.float64)
  ys = np.asarray(prompt.ys, np.float64)
  mask = np.asarray(prompt.example_mask)
  for b in range(xs.shape[0]):
    for j, e in enumerate(np.asarray(prompt.example_index)):
      keep = np.flatnonzero(mask[b, :e] > 0)
      yield b, j, xs[b, keep], ys[b, keep], xs[b, e]


class LeastSquaresTest(absltest.TestCase):

  def test_matches_float64_min_norm_solution_of_each_prefix(self):
    prompt = _prompt_with_outliers()
    got = np.asarray(linear.LeastSquares()(prompt))
    for b, j, x, y, q in _prefixes(prompt):
      w = np.linalg.lstsq(x, y, rcond=None)[0] if len(x) else np.zeros((3, 1))
      np.testing.assert_allclose(got[b, j], q @ w, rtol=1e-4, atol=1e-4)

  def test_bayes_error_curve_on_linear_regression(self):
    # Analytic anchor: normalised error (d - k) / d for k < d, 0 from k = d.
    d, n, b = 5, 9, 2048
    task = tasks.get_task("linear_regression", n_dims=d)
    prompt = task.sample(jax.random.key(1), b, n)
    err = np.asarray(base.pointwise_metric(linear.LeastSquares()(prompt),
                                           prompt))
    mean = err.mean(0)
    stderr = err.std(0) / np.sqrt(b)
    for k in range(d):
      self.assertLess(abs(mean[k] - (d - k) / d), 4 * stderr[k] + 1e-3,
                      msg=f"k={k}")
    np.testing.assert_allclose(mean[d:], 0.0, atol=1e-4)


class RidgeTest(absltest.TestCase):

  def test_matches_closed_form(self):
    prompt = _prompt_with_outliers()
    got = np.asarray(linear.Ridge(alpha=0.5)(prompt))
    for b, j, x, y, q in _prefixes(prompt):
      w = np.linalg.solve(x.T @ x + 0.5 * np.eye(3), x.T @ y)
      np.testing.assert_allclose(got[b, j], q @ w, rtol=1e-4, atol=1e-5)

  def test_rejects_non_positive_alpha(self):
    with self.assertRaisesRegex(ValueError, r"Ridge.alpha must be > 0, got 0"):
      linear.Ridge(alpha=0)


class BayesLinearRegressionTest(parameterized.TestCase):

  def test_noiseless_is_least_squares(self):
    prompt = _prompt_with_outliers()
    np.testing.assert_array_equal(
        linear.BayesLinearRegression()(prompt),
        linear.LeastSquares()(prompt))

  def test_noisy_is_ridge_with_noise_to_prior_ratio(self):
    prompt = _prompt_with_outliers()
    got = linear.BayesLinearRegression(noise_var=0.5, prior_var=2.0)(prompt)
    np.testing.assert_allclose(got, linear.Ridge(alpha=0.25)(prompt),
                               rtol=1e-6)

  def test_beats_least_squares_under_label_noise(self):
    task = tasks.get_task("linear_regression", n_dims=4, noise_std=1.0)
    prompt = task.sample(jax.random.key(2), 512, 6)
    bayes = linear.BayesLinearRegression(noise_var=1.0, prior_var=1.0)
    err_bayes = base.pointwise_metric(bayes(prompt), prompt).mean()
    err_ls = base.pointwise_metric(linear.LeastSquares()(prompt),
                                   prompt).mean()
    self.assertLess(float(err_bayes), float(err_ls))

  @parameterized.parameters(
      (dict(noise_var=-1.0), r"noise_var must be >= 0, got -1"),
      (dict(prior_var=0.0), r"prior_var must be > 0, got 0"))
  def test_rejects_bad_variances(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      linear.BayesLinearRegression(**kwargs)


class AveragingTest(absltest.TestCase):

  def test_matches_numpy_mean_of_y_times_x(self):
    prompt = _prompt_with_outliers()
    got = np.asarray(linear.Averaging()(prompt))
    for b, j, x, y, q in _prefixes(prompt):
      w = (x * y).mean(0) if len(x) else np.zeros(3)
      np.testing.assert_allclose(got[b, j, 0], q @ w, rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
  absltest.main()
