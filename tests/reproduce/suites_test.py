"""Tests for the mini, pilot and contrasts suites of configs/suites.py."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from configs import suites
from ssm_icl.reproduce import plan as plan_lib
from ssm_icl.train import loop


def _runs(name, **kwargs):
  return plan_lib.plan_runs(plan_lib.suite_config(name), **kwargs)


class MiniSuiteTest(parameterized.TestCase):

  def test_one_recipe_per_task_for_every_model(self):
    recipes = {}
    for run in _runs("mini"):
      train = run.config.train
      recipe = (train.steps, train.lr, train.lr_schedule, train.warmup_steps,
                train.batch_size, run.config.task.curriculum.to_json())
      recipes.setdefault(run.task, set()).add(recipe)
    self.assertLen(recipes, 9)
    for task, found in recipes.items():
      self.assertLen(found, 1, msg=task)
      (steps, lr, schedule, warmup, _, _), = found
      self.assertEqual((steps, lr), (suites.MINI_STEPS[task],
                                     suites.MINI_LR[task]))
      self.assertEqual(schedule, "cosine")
      self.assertEqual(warmup, int(suites.WARMUP_FRACTION * steps))

  def test_every_family_has_mini_layers(self):
    # Not the paper's 1:2 ratio: a 2-layer Transformer stops at one
    # gradient step on linear regression (configs/suites.py, MINI_LAYERS).
    depths = {(r.family, r.config.model.n_layer) for r in _runs("mini")}
    self.assertEqual({d for _, d in depths}, {suites.MINI_LAYERS})
    self.assertIn(("transformer", suites.MINI_LAYERS), depths)

  @parameterized.parameters(
      # (task, final dims, final points): grows like the paper's config.
      ("linear_regression", 5, 11), ("decision_tree", 4, 21),
      ("many_outlier_regression", 4, 64), ("cot_io", 4, 11))
  def test_curriculum_grows_to_the_final_size_as_early_as_the_papers(
      self, task, dims, points):
    (run,) = _runs("mini", tasks=[task], families=["mamba"])
    _, curriculum, _, _ = loop.build(run.config)
    self.assertEqual(curriculum.final, (dims, points))
    self.assertLess(curriculum.at(0)[1], points)
    if task != "cot_io":  # CoT-I/O's paper curriculum keeps d fixed.
      self.assertLess(curriculum.at(0)[0], dims)
    else:
      self.assertEqual(curriculum.at(0)[0], dims)
    # The paper's curriculum ends at 3-6% of its steps (2000 per stage).
    self.assertLessEqual(curriculum.final_step,
                         0.06 * run.config.train.steps)

  @parameterized.parameters("sparse_parity", "vector_mqar")
  def test_fixed_size_where_the_paper_has_no_curriculum(self, task):
    (run,) = _runs("mini", tasks=[task], families=["mamba"])
    _, curriculum, _, _ = loop.build(run.config)
    self.assertEqual(curriculum.final_step, 0)

  def test_the_smallest_first_stages_sample(self):
    # The first stages at the edge: d = k = 2 for sparse regression, d = 1
    # and 2 examples for the outliers, d = 1 for the trees.
    for run in _runs("mini", families=["mamba"], tasks=[
        "sparse_linear_regression", "many_outlier_regression",
        "decision_tree"]):
      task, curriculum, _, _ = loop.build(run.config)
      dims, points = curriculum.at(0)
      prompt = task.sample(jax.random.key(0), 2, points, dims)
      self.assertTrue(np.all(np.isfinite(np.asarray(prompt.tokens))),
                      msg=run.task)

  def test_scaled_curriculum_values(self):
    # Paper: dims 5 -> 20 (+1), points 11 -> 41 (+2), every 2000 steps, so
    # both reach their final values at 30k of 500k steps (6%).
    self.assertEqual(
        suites.scaled_curriculum("linear_regression", 5, 11, 4000),
        {"dims": {"start": 1, "end": 5, "inc": 1, "interval": 60},
         "points": {"start": 3, "end": 11, "inc": 1, "interval": 30}})
    # Short runs: at least MIN_STAGE_STEPS per stage.
    self.assertEqual(
        suites.scaled_curriculum("linear_regression", 5, 11, 100)["dims"],
        {"start": 1, "end": 5, "inc": 1,
         "interval": suites.MIN_STAGE_STEPS})


class PilotAndContrastsTest(absltest.TestCase):

  def test_pilot_sweeps_the_lrs_at_pilot_steps(self):
    runs = _runs("pilot", tasks=["sparse_parity"], families=["mamba"])
    self.assertEqual([r.config.train.lr for r in runs],
                     list(suites.PILOT_LRS))
    self.assertEqual([r.label for r in runs],
                     [f"mamba@lr={lr}" for lr in suites.PILOT_LRS])
    self.assertEqual({r.config.train.steps for r in runs},
                     {suites.PILOT_STEPS})

  def test_pilot_transformers_keep_the_depth_they_ran_with(self):
    runs = _runs("pilot", tasks=["linear_regression"])
    depths = {r.family: r.config.model.n_layer for r in runs}
    self.assertEqual(depths, {"transformer": suites.PILOT_TRANSFORMER_LAYERS,
                              "mamba": suites.MINI_LAYERS,
                              "mambaformer": suites.MINI_LAYERS})

  def test_pilot_curriculum_keeps_the_timing_it_ran_with(self):
    (run,) = _runs("pilot", tasks=["linear_regression"], families=["mamba"],
                   sweep=plan_lib.parse_sweep(["train.lr=0.001"]))
    _, curriculum, _, _ = loop.build(run.config)
    self.assertEqual(curriculum.final_step,
                     suites.PILOT_CURRICULUM_END * suites.PILOT_STEPS)

  def test_a_command_line_sweep_replaces_the_suites_own(self):
    runs = _runs("pilot", tasks=["sparse_parity"], families=["mamba"],
                 sweep=plan_lib.parse_sweep(["train.lr=0.01"]))
    self.assertEqual([r.config.train.lr for r in runs], [0.01])

  def test_contrasts_use_the_mini_settings_per_seed(self):
    mini = {(r.task, r.family): r for r in _runs("mini")}
    runs = _runs("contrasts")
    seeds = list(suites.CONTRAST_SEEDS)
    self.assertLen(runs, 3 * (3 + 3 + 2 + 2))
    for run in runs:
      seed = run.config.train.seed
      self.assertIn(seed, seeds)
      self.assertEqual(run.label, f"{run.family}@seed={seed}")
      expected = mini[run.task, run.family].config.copy_and_resolve_references()
      expected.train.seed = seed
      self.assertEqual(run.config.to_json(), expected.to_json())
    pairs = {(r.task, r.family) for r in runs}
    for task, better, worse in suites.CONTRASTS:
      self.assertIn((task, better), pairs)
      self.assertIn((task, worse), pairs)


if __name__ == "__main__":
  absltest.main()
