"""Tests for ssm_icl/baselines/registry.py, and prefix causality of every
baseline."""

import dataclasses
import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import baselines
from ssm_icl import tasks
from ssm_icl.baselines import registry

# Every registered baseline, with small hyperparameters where they matter.
_SMALL_KWARGS = {
    "gd_2nn": dict(hidden=4, steps=3, batch_size=2),
    "gradient_boosting": dict(n_estimators=3),
    "lasso": dict(alpha=0.01),
}


@functools.cache
def _sampler(task, b, n):
  return jax.jit(functools.partial(task.sample, batch_size=b, n_points=n))


def _prompt_for(name):
  if name == "parity_bayes":
    task = tasks.get_task("sparse_parity", n_dims=4, k=2)
  else:
    task = tasks.get_task("linear_regression", n_dims=3)
  return _sampler(task, 2, 6)(jax.random.key(0))


def _perturb(prompt, i, *, x):
  """Changes label i (and input i if `x`), keeping parity inputs in {-1,+1}."""
  xs, ys = np.asarray(prompt.xs).copy(), np.asarray(prompt.ys).copy()
  ys[:, i] = -ys[:, i] + 0.5 * np.sign(ys[:, i] + 0.1)
  if x:
    xs[:, i] = -xs[:, i]
  if np.all(np.abs(np.asarray(prompt.xs)) == 1):
    ys[:, i] = -np.asarray(prompt.ys)[:, i]  # Labels stay in {-1, +1}.
  return prompt.replace(xs=jnp.asarray(xs), ys=jnp.asarray(ys))


class NoPeekingTest(parameterized.TestCase):
  """Changing example i never changes the predictions of earlier slots."""

  @parameterized.parameters(sorted(registry.BASELINES))
  def test_prefix_causality(self, name):
    baseline = baselines.get_baseline(name, **_SMALL_KWARGS.get(name, {}))
    prompt = _prompt_for(name)
    before = np.asarray(baseline(prompt))
    for i in (2, 4):
      # A new example i (input and label): slots j < i see the same prefix
      # and the same query.
      after = np.asarray(baseline(_perturb(prompt, i, x=True)))
      np.testing.assert_array_equal(after[:, :i], before[:, :i])
      # A new label i only: slot i's query x_i is unchanged too.
      after = np.asarray(baseline(_perturb(prompt, i, x=False)))
      np.testing.assert_array_equal(after[:, :i + 1], before[:, :i + 1])
    if name not in ("zero", "chance"):
      # The perturbation is seen later: the check above is not vacuous.
      after = np.asarray(baseline(_perturb(prompt, 2, x=False)))
      self.assertFalse(np.array_equal(after[:, 3:], before[:, 3:]))


class GetBaselineTest(absltest.TestCase):

  def test_builds_with_fields(self):
    knn = baselines.get_baseline("knn", n_neighbors=5, weights="distance")
    self.assertEqual(knn, baselines.KNearestNeighbors(5, "distance"))
    self.assertEqual(knn.kind, "baseline")

  def test_rejects_unknown_name(self):
    with self.assertRaisesRegex(ValueError,
                                r"Unknown baseline 'svm'; valid names: .*knn"):
      baselines.get_baseline("svm")

  def test_rejects_unknown_field(self):
    with self.assertRaisesRegex(
        ValueError, r"Unknown argument\(s\) \['k'\] for baseline 'knn'; "
        r"valid arguments: \['n_neighbors', 'weights'\]"):
      baselines.get_baseline("knn", k=3)


class RelevantBaselinesTest(parameterized.TestCase):

  @parameterized.parameters(sorted(tasks.TASKS))
  def test_every_task_has_working_baselines(self, name):
    task = tasks.get_task(name)
    relevant = baselines.relevant_baselines(task)
    self.assertNotEmpty(relevant)
    trivial = "chance" if name == "sparse_parity" else "zero"
    self.assertIn(trivial, relevant)
    # The trivial level of Table 1 is evaluated with the other baselines.
    self.assertIn(baselines.NO_CONTEXT[name], relevant)
    prompt = _sampler(task, 1, 3)(jax.random.key(0))
    for baseline in relevant.values():
      self.assertIsInstance(baseline, baselines.Baseline)
      # Shrink the costly ones: this checks wiring and shapes only.
      if isinstance(baseline, baselines.GDTwoLayerNetwork):
        baseline = dataclasses.replace(baseline, hidden=4, steps=2)
      if isinstance(baseline, baselines.GradientBoosting):
        baseline = dataclasses.replace(baseline, n_estimators=2)
      preds = baseline(prompt)
      self.assertEqual(preds.shape, prompt.targets.shape)
      self.assertTrue(np.all(np.isfinite(preds)))

  def test_reference_lists(self):
    slr = baselines.relevant_baselines(
        tasks.get_task("sparse_linear_regression"))
    self.assertEqual([b.alpha for b in slr.values()
                      if isinstance(b, baselines.Lasso)],
                     [1.0, 0.1, 0.01, 0.001, 0.0001])
    tree = baselines.relevant_baselines(tasks.get_task("decision_tree"))
    depths = [b.max_depth for b in tree.values()
              if isinstance(b, baselines.DecisionTree)]
    self.assertEqual(depths, [4, None])
    self.assertTrue(any(isinstance(b, baselines.GradientBoosting)
                        for b in tree.values()))
    parity = baselines.relevant_baselines(
        tasks.get_task("sparse_parity", k=3))
    self.assertEqual(parity["bayes_optimal"], baselines.ParityBayes(k=3))

  def test_noisy_linear_regression_adds_the_bayes_predictor(self):
    noisy = baselines.relevant_baselines(
        tasks.get_task("linear_regression", noise_std=0.5, y_scale=2.0))
    self.assertEqual(noisy["bayes_optimal"],
                     baselines.BayesLinearRegression(0.25, 4.0))
    clean = baselines.relevant_baselines(tasks.get_task("linear_regression"))
    self.assertNotIn("bayes_optimal", clean)

  def test_no_context_level(self):
    self.assertAlmostEqual(baselines.no_context_level(
        "sparse_parity", {"n_dims": 6, "k": 2}, "accuracy"), 38 / 64)
    self.assertEqual(baselines.no_context_level(
        "decision_tree", {}, "squared_error"), 1.0)
    with self.assertRaisesRegex(ValueError, "No analytic no-context level "
                                "for task 'sparse_parity' with metric "
                                "'squared_error'"):
      baselines.no_context_level("sparse_parity", {}, "squared_error")

  def test_rejects_unknown_task(self):

    class Unknown:
      name = "tic_tac_toe"

    with self.assertRaisesRegex(
        ValueError, r"task name 'tic_tac_toe'; known task names: .*decision"):
      baselines.relevant_baselines(Unknown())


if __name__ == "__main__":
  absltest.main()
