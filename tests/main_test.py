"""The training CLI, `python -m ssm_icl.main`, run in subprocesses."""

import os

from absl.testing import absltest
import numpy as np
import pytest

from ssm_icl.train import metrics
from tests.train import cli_util


@pytest.mark.slow
class MainTest(absltest.TestCase):

  def test_tiny_config_trains_and_its_loss_falls(self):
    workdir = os.path.join(self.create_tempdir().full_path, "run")
    result = cli_util.run(cli_util.main_args(
        workdir, "--config.train.steps=120", "--config.train.lr=0.003",
        "--config.train.log_every=40", "--config.train.eval_every=120",
        config="configs/vector_mqar.py:mamba,tiny"))
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("step 120/120 | loss", result.stdout)
    self.assertIn("Total:", result.stdout)  # the parameter overview
    self.assertIn("eval at step 120", result.stdout)
    records = metrics.read_metrics(workdir)
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    self.assertLen(losses, 3)
    self.assertTrue(np.all(np.isfinite(losses)))
    self.assertLess(losses[-1], 0.97 * losses[0])
    # tiny: a checkpoint every 10 steps, the last 3 kept.
    self.assertEqual(cli_util.checkpoint_names(workdir), ["100", "110", "120"])

  def test_mesh_error_before_compiling(self):
    workdir = os.path.join(self.create_tempdir().full_path, "run")
    result = cli_util.run(cli_util.main_args(
        workdir, "--config.mesh.shape=(3, 1)"))
    # Input errors print one error line (tests/cli_test.py has more).
    self.assertEqual(result.returncode, 2)
    self.assertIn("error: mesh.shape=(3, 1) covers 3 devices but 8 devices "
                  "are available", result.stderr)
    self.assertNotIn("Initialised", result.stdout)


if __name__ == "__main__":
  absltest.main()
