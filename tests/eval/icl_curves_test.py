"""Tests for ssm_icl/eval/icl_curves.py."""

import json
import os

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import baselines
from ssm_icl import tasks
from ssm_icl.eval import icl_curves
from ssm_icl.tasks import base

_LR = tasks.get_task("linear_regression", n_dims=4)
_SMALL = dict(n_points=6, n_prompts=64, batch_size=32, n_bootstrap=100,
              progress=False)


class EvaluateTest(parameterized.TestCase):

  def test_same_seed_gives_identical_curves(self):
    predictors = {"ls": baselines.LeastSquares(),
                  "zero": baselines.ZeroPredictor()}
    a = icl_curves.evaluate(predictors, _LR, seed=3, **_SMALL)
    b = icl_curves.evaluate(predictors, _LR, seed=3, **_SMALL)
    self.assertEqual(a, b)
    c = icl_curves.evaluate(predictors, _LR, seed=4, **_SMALL)
    self.assertNotEqual(a["curves"]["ls"]["mean"], c["curves"]["ls"]["mean"])
    self.assertEqual(c["seed"], 4)

  def test_every_predictor_sees_the_same_prompts(self):
    seen = {"a": [], "b": []}

    def recorder(name):
      def predict(prompt):
        seen[name].append(np.asarray(prompt.xs))
        return jnp.zeros_like(prompt.targets)
      return predict

    icl_curves.evaluate({"a": recorder("a"), "b": recorder("b")}, _LR,
                        **_SMALL)
    self.assertLen(seen["a"], 2)
    for xa, xb in zip(seen["a"], seen["b"]):
      np.testing.assert_array_equal(xa, xb)
    self.assertFalse(np.array_equal(seen["a"][0], seen["a"][1]))

  def test_result_layout_and_partial_last_batch(self):
    results = icl_curves.evaluate(
        {"zero": baselines.ZeroPredictor()}, _LR, n_points=6, n_prompts=40,
        batch_size=32, n_bootstrap=10, progress=False)
    self.assertEqual(results["task"], "linear_regression")
    self.assertEqual(results["task_config"]["n_dims"], 4)
    self.assertEqual(results["metric"], "squared_error")
    self.assertEqual(results["normalizer"], 4.0)
    self.assertEqual(results["x"], list(range(6)))
    self.assertEqual(results["curves"]["zero"]["kind"], "baseline")
    self.assertEqual(results["curves"]["zero"]["count"], [40] * 6)
    json.dumps(results, allow_nan=False)  # Plain JSON, no NaN.

  def test_least_squares_anchor(self):
    # Normalised error (d - k) / d for k < d, 0 from k = d (docs/PAPER.md §3.1).
    d, n_prompts = 4, 512
    results = icl_curves.evaluate(
        {"ls": baselines.LeastSquares()}, _LR, n_points=7, n_prompts=n_prompts,
        batch_size=256, n_bootstrap=10, progress=False)
    curve = results["curves"]["ls"]
    for k in range(d):
      stderr = curve["std"][k] / np.sqrt(n_prompts)
      self.assertLess(abs(curve["mean"][k] - (d - k) / d), 4 * stderr,
                      msg=f"k={k}")
    np.testing.assert_allclose(curve["mean"][d:], 0.0, atol=1e-4)

  def test_bootstrap_interval_contains_mean_and_shrinks(self):
    widths = []
    for n_prompts in (32, 512):
      curve = icl_curves.evaluate(
          {"zero": baselines.ZeroPredictor()}, _LR, n_points=6,
          n_prompts=n_prompts, batch_size=32, n_bootstrap=200,
          progress=False)["curves"]["zero"]
      low, mean, high = (np.array(curve[k]) for k in ("low", "mean", "high"))
      self.assertTrue(np.all(low <= mean) and np.all(mean <= high))
      self.assertTrue(np.all(high > low))
      widths.append(np.mean(high - low))
    # The width scales like 1 / sqrt(n_prompts): 4x narrower in theory.
    self.assertLess(widths[1], 0.5 * widths[0])

  def test_slots_are_grouped_by_example_index_with_metric_mask(self):
    # CoT-I/O has two slots per example, and only the y slot is scored.
    task = tasks.get_task("cot_io", n_dims=3, hidden=2)
    zero = baselines.ZeroPredictor()
    results = icl_curves.evaluate({"zero": zero}, task, n_points=4,
                                  n_prompts=16, batch_size=8, n_bootstrap=10,
                                  progress=False)
    (_, p0), (_, p1) = icl_curves.eval_prompts(
        task, n_points=4, n_prompts=16, batch_size=8, seed=0)
    # Expected: the mean of y^2 / d at each example (the zero predictor's
    # normalised error; CoT is normalised by d like the regression tasks).
    y2 = np.concatenate([np.asarray(p.ys)[..., 0] ** 2 for p in (p0, p1)])
    np.testing.assert_allclose(results["curves"]["zero"]["mean"],
                               y2.mean(0) / task.n_dims, rtol=1e-5)
    self.assertEqual(results["x"], [0, 1, 2, 3])
    self.assertEqual(results["curves"]["zero"]["count"], [16] * 4)

  def test_rejects_empty_predictors(self):
    with self.assertRaisesRegex(ValueError, r"predictors is empty"):
      icl_curves.evaluate({}, _LR, **_SMALL)

  @parameterized.parameters("n_points", "n_prompts", "batch_size",
                            "n_bootstrap")
  def test_rejects_non_positive_sizes(self, field):
    kwargs = {**_SMALL, field: 0}
    with self.assertRaisesRegex(ValueError, rf"{field}=0 must be a positive"):
      icl_curves.evaluate({"zero": baselines.ZeroPredictor()}, _LR, **kwargs)

  def test_rejects_misshapen_predictions(self):
    bad = lambda prompt: jnp.zeros(prompt.targets.shape[:2])
    with self.assertRaisesRegex(
        ValueError, r"Predictor 'bad' returned shape \(32, 6\); expected "
        r"prompt.targets' shape \(32, 6, 1\)"):
      icl_curves.evaluate({"bad": bad}, _LR, **_SMALL)


class CurveStatisticsTest(absltest.TestCase):

  def test_pooled_mean_std_and_unscored_points(self):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 3))
    weights = np.ones((5, 3))
    weights[:, 2] = 0.0                 # Point 2 is never scored.
    weights[1, 0] = 0.0                 # Prompt 1 is not scored at point 0.
    values *= weights
    counts = icl_curves.bootstrap_indices(5, 50, seed=0)
    stats = icl_curves.curve_statistics(values, weights, counts)
    np.testing.assert_allclose(stats["mean"][0], values[[0, 2, 3, 4], 0].mean())
    np.testing.assert_allclose(stats["std"][1], values[:, 1].std())
    self.assertIsNone(stats["mean"][2])
    self.assertIsNone(stats["low"][2])
    self.assertEqual(stats["count"], [4, 5, 0])

  def test_identity_resample_gives_a_degenerate_interval(self):
    values = np.arange(6.0).reshape(3, 2)
    stats = icl_curves.curve_statistics(values, np.ones((3, 2)),
                                        np.ones((1, 3)))
    self.assertEqual(stats["low"], stats["mean"])
    self.assertEqual(stats["high"], stats["mean"])

  def test_bootstrap_counts_resample_every_prompt_set(self):
    counts = icl_curves.bootstrap_indices(7, 30, seed=1)
    self.assertEqual(counts.shape, (30, 7))
    np.testing.assert_array_equal(counts.sum(1), 7)
    self.assertGreater(len({tuple(c) for c in counts}), 1)


class ModelPredictorTest(absltest.TestCase):

  def test_reads_outputs_at_the_prediction_slots(self):
    prompt = _LR.sample(jax.random.key(0), 2, 5)
    apply_fn = lambda params, tokens: tokens[..., :1] * params["scale"]
    predict = icl_curves.model_predictor(apply_fn, {"scale": 3.0})
    expected = base.gather_predictions(3.0 * prompt.tokens[..., :1], prompt)
    np.testing.assert_allclose(predict(prompt), expected, rtol=1e-6)
    self.assertEqual(predict.kind, "model")

  def test_chain_of_thought_feeds_back_its_hidden_predictions(self):
    task = tasks.get_task("cot_io", n_dims=3, hidden=2)
    prompt = task.sample(jax.random.key(0), 2, 3)
    # A causal toy model: the running mean of the tokens' s and y channels.
    def apply_fn(params, tokens):
      steps = jnp.arange(1, tokens.shape[1] + 1)[None, :, None]
      means = jnp.cumsum(tokens, 1) / steps
      return params * means[..., task.n_dims:task.n_dims + task.d_out]
    predict = icl_curves.model_predictor(apply_fn, 0.5, task=task)
    expected = tasks.cot_autoregressive_predict(
        lambda t: apply_fn(0.5, t), prompt, task)
    np.testing.assert_allclose(predict(prompt), expected, rtol=1e-6)
    teacher = icl_curves.model_predictor(apply_fn, 0.5)(prompt)
    self.assertFalse(np.allclose(teacher, expected))


class SaveLoadTest(absltest.TestCase):

  def _results(self):
    return icl_curves.evaluate({"zero": baselines.ZeroPredictor()}, _LR,
                               **_SMALL)

  def test_round_trip(self):
    results = self._results()
    path = os.path.join(self.create_tempdir().full_path, "sub", "r.json")
    icl_curves.save_results(results, path)
    self.assertEqual(icl_curves.load_results(path), results)

  def test_load_rejects_missing_keys(self):
    path = self.create_tempfile(content=json.dumps({"task": "x"})).full_path
    with self.assertRaisesRegex(
        ValueError,
        r"missing key\(s\) \['format_version', 'metric', 'x', 'curves'\]"):
      icl_curves.load_results(path)

  def test_load_rejects_other_format_version(self):
    results = {**self._results(), "format_version": 99}
    path = self.create_tempfile(content=json.dumps(results)).full_path
    with self.assertRaisesRegex(ValueError, r"format_version=99, expected 1"):
      icl_curves.load_results(path)

  def test_save_rejects_curve_of_wrong_length(self):
    results = self._results()
    results["curves"]["zero"]["mean"] = [0.0]
    with self.assertRaisesRegex(ValueError, r"curve 'zero' has 1 'mean' "
                                r"values but x has 6"):
      icl_curves.save_results(results, "unused.json")


if __name__ == "__main__":
  absltest.main()
