"""Tests of benchmarks/train_step_bench.py: the compile grid's configs and
a compile-only measurement (timings themselves are not tested)."""

import os
import sys

from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(_ROOT, "benchmarks"))
import train_step_bench  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import linear_regression  # pylint: disable=g-import-not-at-top,wrong-import-position
from ssm_icl import tasks  # pylint: disable=g-import-not-at-top,wrong-import-position


class PaperGridTest(absltest.TestCase):

  def test_every_task_and_family_at_its_final_length(self):
    grid = train_step_bench.paper_grid()
    self.assertEqual(list(grid), [f"{t}:{f}" for t in tasks.TASKS
                                  for f in common.FAMILIES])
    config, n_points = grid["linear_regression:mamba"]
    self.assertEqual((config.model.family, config.model.n_layer,
                      config.model.d_model, n_points), ("mamba", 4, 128, 41))
    for config, n_points in grid.values():
      self.assertEqual(n_points, config.task.curriculum.points.end)


class CompileOnlyTest(absltest.TestCase):

  def test_compile_only_reports_shapes_and_runs_no_step(self):
    config = linear_regression.get_config("mamba,tiny")
    result = train_step_bench.bench(config, 5, 0, compile_only=True)
    self.assertEqual(result["family"], "mamba")
    self.assertEqual(result["tokens_per_prompt"], 10)
    self.assertGreater(result["compile_s"], 0.0)
    self.assertGreater(result["params"], 0)
    self.assertNotIn("step_ms", result)
    # Analytic training FLOPs: 3x the forward pass of the batch.
    forward = train_step_bench.flops_lib.model_flops(
        train_step_bench._build(config)[1], 10,
        batch=result["batch"])["total"]
    self.assertAlmostEqual(result["step_gflop"], 3 * forward / 1e9)


class MatmulGflopsTest(absltest.TestCase):

  def test_a_positive_finite_rate(self):
    rate = train_step_bench.matmul_gflops(n=64, repeats=2)
    self.assertGreater(rate, 0.0)
    self.assertLess(rate, float("inf"))


if __name__ == "__main__":
  absltest.main()
