"""Tests for ssm_icl/baselines/trivial.py."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from ssm_icl import tasks
from ssm_icl.baselines import trivial
from ssm_icl.tasks import base


class ZeroPredictorTest(parameterized.TestCase):

  @parameterized.parameters(
      "linear_regression", "sparse_linear_regression", "relu_2nn_regression",
      "ortho_outlier_regression", "many_outlier_regression")
  def test_scores_about_one_on_normalised_regression(self, name):
    # The paper's normalisation: E[y^2] / normalizer = 1 (docs/PAPER.md §2.4).
    prompt = tasks.get_task(name, n_dims=8).sample(jax.random.key(0), 256, 10)
    err = np.asarray(base.pointwise_metric(
        trivial.ZeroPredictor()(prompt), prompt))
    mask = np.asarray(prompt.metric_mask)
    per_prompt = (err * mask).sum(1) / np.maximum(mask.sum(1), 1)
    scored = mask.sum(1) > 0
    mean = per_prompt[scored].mean()
    stderr = per_prompt[scored].std() / np.sqrt(scored.sum())
    self.assertLess(abs(mean - 1.0), 4 * stderr, msg=f"mean={mean}")

  def test_shape_and_zero_accuracy(self):
    prompt = tasks.get_task("sparse_parity", n_dims=6, k=2).sample(
        jax.random.key(0), 4, 5)
    preds = trivial.ZeroPredictor()(prompt)
    self.assertEqual(preds.shape, prompt.targets.shape)
    # sign(0) counts as wrong.
    np.testing.assert_array_equal(base.pointwise_metric(preds, prompt), 0.0)


class RandomSignTest(absltest.TestCase):

  def test_chance_accuracy_on_parity(self):
    prompt = tasks.get_task("sparse_parity", n_dims=6, k=2).sample(
        jax.random.key(0), 256, 20)
    acc = np.asarray(base.pointwise_metric(trivial.RandomSign()(prompt),
                                           prompt))
    stderr = 0.5 / np.sqrt(acc.size)
    self.assertLess(abs(acc.mean() - 0.5), 4 * stderr)

  def test_signs_are_plus_or_minus_one_and_seeded(self):
    prompt = tasks.get_task("sparse_parity", n_dims=6, k=2).sample(
        jax.random.key(0), 4, 5)
    a = np.asarray(trivial.RandomSign(seed=1)(prompt))
    np.testing.assert_array_equal(np.abs(a), 1.0)
    np.testing.assert_array_equal(a, trivial.RandomSign(seed=1)(prompt))
    self.assertFalse(np.array_equal(a, trivial.RandomSign(seed=2)(prompt)))


if __name__ == "__main__":
  absltest.main()
