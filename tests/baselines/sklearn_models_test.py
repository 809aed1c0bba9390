"""Tests for ssm_icl/baselines/sklearn_models.py."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
from sklearn import ensemble
from sklearn import linear_model
from sklearn import tree

from ssm_icl import tasks
from ssm_icl.baselines import prefix
from ssm_icl.baselines import sklearn_models


@functools.cache
def _sampler(task, b, n):
  return jax.jit(functools.partial(task.sample, batch_size=b, n_points=n))


def _prompt(b=2, n=6, d=3, seed=0):
  task = tasks.get_task("sparse_linear_regression", n_dims=d, k=2)
  prompt = _sampler(task, b, n)(jax.random.key(seed))
  example_mask = np.ones((b, n), np.float32)
  example_mask[1, 2] = 0.0  # Not genuine: slots 2 and 3 share one prefix.
  metric_mask = np.ones((b, n), np.float32)
  metric_mask[0, 4] = 0.0  # Not scored: no fit needed.
  return prompt.replace(example_mask=jnp.asarray(example_mask),
                        metric_mask=jnp.asarray(metric_mask))


def _direct(prompt, make):
  """One sklearn fit per scored slot, straight from the prompt."""
  xs, ys = np.asarray(prompt.xs, np.float64), np.asarray(prompt.ys)[..., 0]
  mask, slots = np.asarray(prompt.example_mask), np.asarray(prompt.metric_mask)
  out = np.zeros(slots.shape)
  for b in range(xs.shape[0]):
    for j in range(xs.shape[1]):
      keep = np.flatnonzero(mask[b, :j] > 0)
      if keep.size and slots[b, j]:
        out[b, j] = make().fit(xs[b, keep], ys[b, keep]).predict(
            xs[b, j:j + 1])[0]
  return out


class SklearnBaselinesTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("lasso", sklearn_models.Lasso(alpha=0.01),
       lambda: linear_model.Lasso(alpha=0.01, fit_intercept=False,
                                  max_iter=100_000)),
      ("tree", sklearn_models.DecisionTree(max_depth=2),
       lambda: tree.DecisionTreeRegressor(max_depth=2, random_state=0)),
      ("boosting", sklearn_models.GradientBoosting(n_estimators=5),
       lambda: ensemble.GradientBoostingRegressor(
           n_estimators=5, learning_rate=0.3, max_depth=6, random_state=0)))
  def test_matches_direct_fits(self, baseline, make):
    prompt = _prompt()
    got = np.asarray(baseline(prompt))[..., 0]
    np.testing.assert_allclose(got, _direct(prompt, make), rtol=1e-5,
                               atol=1e-5)

  def test_unscored_and_empty_prefix_slots_predict_zero(self):
    prompt = _prompt()
    got = np.asarray(sklearn_models.DecisionTree()(prompt))
    np.testing.assert_array_equal(got[:, 0], 0.0)
    np.testing.assert_array_equal(got[0, 4], 0.0)
    self.assertNotEqual(float(got[0, 3, 0]), 0.0)

  def test_slots_with_the_same_prefix_share_one_fit(self):
    prompt = _prompt()
    view = prefix.prefix_view(prompt, name="t")
    fits = []

    class Counting(tree.DecisionTreeRegressor):

      def fit(self, x, y):
        fits.append(len(x))
        return super().fit(x, y)

    sklearn_models.fit_predict_prefixes(view, Counting)
    # Prompt 0: prefixes of 1, 2, 3 and 5 examples (slot 4 is unscored);
    # prompt 1: slots 2 and 3 share the prefix {0, 1}, so 1, 2, 3, 4.
    self.assertEqual(sorted(fits), [1, 1, 2, 2, 3, 3, 4, 5])

  def test_lasso_recovers_sparse_weights(self):
    task = tasks.get_task("sparse_linear_regression", n_dims=8, k=2)
    prompt = _sampler(task, 4, 16)(jax.random.key(3))
    got = sklearn_models.Lasso(alpha=0.001)(prompt)
    np.testing.assert_allclose(got[:, -1], prompt.targets[:, -1], atol=0.05)

  @parameterized.parameters(
      (sklearn_models.Lasso, dict(alpha=0), r"Lasso.alpha must be > 0, got 0"),
      (sklearn_models.Lasso, dict(max_iter=0), r"max_iter must be >= 1"),
      (sklearn_models.DecisionTree, dict(max_depth=0),
       r"max_depth must be >= 1 or None, got 0"),
      (sklearn_models.GradientBoosting, dict(learning_rate=0.0),
       r"GradientBoosting.learning_rate must be positive, got 0.0"))
  def test_rejects_bad_fields(self, cls, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      cls(**kwargs)


if __name__ == "__main__":
  absltest.main()
