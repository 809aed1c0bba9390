"""Tests for the evaluation CLI, `python -m ssm_icl.eval`."""

import importlib
import json
import os
import shutil

from absl.testing import absltest
import jax
import numpy as np

from configs import cot_io
from configs import linear_regression
from ssm_icl import models
from ssm_icl.train import loop
from tests.train import cli_util

eval_main = importlib.import_module("ssm_icl.eval.__main__")


class EvalMainTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = os.path.join(absltest.get_default_test_tmpdir(),
                               "eval_main_run")
    shutil.rmtree(cls.workdir, ignore_errors=True)
    config = linear_regression.get_config("mamba,tiny")
    config.train.update(steps=10, eval_every=0)
    config.ckpt.every = 5
    cls.trained = loop.train_and_evaluate(config, cls.workdir)

  def test_writes_results_plot_and_table(self):
    results = eval_main.run(self.workdir, n_prompts=16, batch_size=8,
                            n_bootstrap=20)
    out = os.path.join(self.workdir, eval_main.EVAL_DIR)
    for name in ("results.json", "curves.png", "curves.svg", "table.md"):
      self.assertGreater(os.path.getsize(os.path.join(out, name)), 0, name)
    with open(os.path.join(out, "curves.png"), "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
      stored = json.load(f)
    self.assertEqual(stored["step"], 10)
    self.assertEqual(results["task"], "linear_regression")
    self.assertEqual(results["n_points"], 6)
    self.assertIn("mamba", results["curves"])
    self.assertIn("least_squares", results["curves"])
    # Least squares is exact once k >= d = 4 examples (noiseless task).
    ls = results["curves"]["least_squares"]["mean"]
    np.testing.assert_allclose(ls[results["x"].index(4):], 0.0, atol=1e-6)
    with open(os.path.join(out, "table.md"), encoding="utf-8") as f:
      self.assertIn("| linear_regression |", f.read())

  def test_summary_compares_the_model_with_least_squares_at_k_equals_d(self):
    results = eval_main.run(self.workdir, n_prompts=16, batch_size=8,
                            n_bootstrap=20)
    task = eval_main.restore_run(self.workdir)[1]
    text = eval_main.summary(results, task, model="mamba")
    at_d = results["curves"]["mamba"]["mean"][results["x"].index(4)]
    self.assertIn(f"At k = d = 4 examples: mamba {at_d:.3f}, least squares "
                  "0.000 (difference ", text)
    self.assertIn("| k=  4 |", text)
    # Without the model's name (or without least squares) there is no line.
    self.assertNotIn("At k = d", eval_main.summary(results, task))

  def test_restores_the_trained_parameters(self):
    config, task, _, model, params, step = eval_main.restore_run(
        self.workdir, step=10)
    self.assertEqual((step, task.name, config.model.d_in), (10, "linear_"
                                                            "regression", 4))
    self.assertIsInstance(model, models.ICLModel)
    want = jax.device_get(self.trained.state.params)
    for a, b in zip(jax.tree.leaves(jax.device_get(params)),
                    jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b)

  def test_bad_workdir_and_step(self):
    empty = self.create_tempdir().full_path
    with self.assertRaisesRegex(ValueError, r"has no checkpoints/ directory"):
      eval_main.run(empty)
    with self.assertRaisesRegex(ValueError, r"step=7 has no checkpoint"):
      eval_main.restore_run(self.workdir, step=7)

  def test_cot_model_is_evaluated_autoregressively(self):
    config = cot_io.get_config("mamba,tiny")
    task, _, model_cfg, _ = loop.build(config)
    model = models.build_model(model_cfg)
    prompt = task.sample(jax.random.key(0), 2, 4)
    params = jax.jit(model.init)(jax.random.key(1), prompt.tokens)["params"]
    predictors = eval_main.model_predictors("mamba", model, params, task)
    self.assertEqual(list(predictors), ["mamba", "mamba (teacher-forced)"])
    auto = predictors["mamba"](prompt)
    forced = predictors["mamba (teacher-forced)"](prompt)
    self.assertEqual(auto.shape, prompt.targets.shape)
    # s predictions agree; y predictions differ (they follow predicted s).
    np.testing.assert_allclose(auto[:, 0::2], forced[:, 0::2], rtol=1e-5,
                               atol=1e-6)
    self.assertFalse(np.allclose(auto[:, 1::2], forced[:, 1::2]))

  def test_cli(self):
    result = cli_util.run(
        [cli_util.sys.executable, "-m", "ssm_icl.eval",
         f"--workdir={self.workdir}", "--n_prompts=8", "--batch_size=8",
         "--n_bootstrap=10", "--nobaselines"])
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("mamba |", result.stdout)
    self.assertIn("Wrote", result.stdout)


if __name__ == "__main__":
  absltest.main()
