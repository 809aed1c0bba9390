"""Killed and preempted runs resume bit-identically (subprocesses).

A run is SIGKILLed while it writes a checkpoint and, after a restart, again in
the middle of training; the second restart finishes, and its parameters at
the final step equal those of an uninterrupted run bit for bit (same
machine). Every checkpoint completed before a kill is still on disk
afterwards.
"""

import os
import shutil
import signal
import subprocess

from absl.testing import absltest
import numpy as np
import pytest

from tests.train import cli_util

_STEPS = 30
_OVERRIDES = (f"--config.train.steps={_STEPS}", "--config.ckpt.every=5",
              "--config.ckpt.max_to_keep=100", "--config.train.eval_every=0",
              "--config.train.log_every=1")


def _complete_steps(workdir):
  return sorted(int(n) for n in cli_util.checkpoint_names(workdir)
                if n.isdigit())


@pytest.mark.slow
class ResumeTest(absltest.TestCase):

  def test_sigkill_mid_save_and_mid_training_resume_bit_identically(self):
    root = absltest.get_default_test_tmpdir()
    ref_dir = os.path.join(root, "resume_reference")
    run_dir = os.path.join(root, "resume_killed")
    for d in (ref_dir, run_dir):
      shutil.rmtree(d, ignore_errors=True)

    # 1. Killed while writing a checkpoint of step >= 10.
    process = cli_util.start(cli_util.main_args(run_dir, *_OVERRIDES),
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    mid_save = lambda: any(
        ".orbax-checkpoint-tmp" in n and int(n.split(".")[0]) >= 10
        for n in cli_util.checkpoint_names(run_dir))
    caught = cli_util.wait_for(mid_save, process)
    process.kill()
    process.wait()
    self.assertTrue(caught, "the run ended before a save could be caught")
    partial = [n for n in cli_util.checkpoint_names(run_dir)
               if ".orbax-checkpoint-tmp" in n]
    self.assertNotEmpty(partial)  # the kill did land mid-save
    saved_before = _complete_steps(run_dir)
    self.assertGreaterEqual(len(saved_before), 1)
    kept = {s: cli_util.saved_params(run_dir, s) for s in saved_before}

    # 2. Restarted, then killed in the middle of training (step >= 22).
    process = cli_util.start(cli_util.main_args(run_dir, *_OVERRIDES),
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    cli_util.wait_for(lambda: any(s >= 22 for s in
                                  cli_util.logged_steps(run_dir)), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    self.assertLess(max(_complete_steps(run_dir)), _STEPS)

    # 3. Restarted to the end, and the uninterrupted reference.
    resumed = cli_util.run(cli_util.main_args(run_dir, *_OVERRIDES))
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
    self.assertIn("Resumed from the checkpoint at step", resumed.stdout)
    ref = cli_util.run(cli_util.main_args(ref_dir, *_OVERRIDES))
    self.assertEqual(ref.returncode, 0, ref.stderr[-3000:])

    got = cli_util.saved_params(run_dir, _STEPS)
    want = cli_util.saved_params(ref_dir, _STEPS)
    self.assertEqual(got.keys(), want.keys())
    for name in want:
      np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # Nothing saved before a kill was lost or changed.
    for step, params in kept.items():
      self.assertIn(step, _complete_steps(run_dir))
      again = cli_util.saved_params(run_dir, step)
      for name in params:
        np.testing.assert_array_equal(again[name], params[name])
    # One training record per step in the metrics of the resumed run.
    self.assertEqual(cli_util.logged_steps(run_dir),
                     list(range(1, _STEPS + 1)))

  def test_sigterm_saves_and_exits_zero(self):
    root = self.create_tempdir().full_path
    workdir = os.path.join(root, "run")
    stdout = open(os.path.join(root, "stdout.txt"), "w")
    self.addCleanup(stdout.close)
    process = cli_util.start(
        cli_util.main_args(workdir, "--config.train.steps=100000",
                           "--config.ckpt.every=100000",
                           "--config.train.eval_every=0",
                           "--config.train.log_every=1"),
        stdout=stdout, stderr=subprocess.DEVNULL)
    cli_util.wait_for(lambda: any(s >= 5 for s in
                                  cli_util.logged_steps(workdir)), process)
    process.send_signal(signal.SIGTERM)
    self.assertEqual(process.wait(timeout=120), 0)
    steps = _complete_steps(workdir)
    self.assertLen(steps, 1)
    self.assertGreaterEqual(steps[0], 5)
    self.assertLess(steps[0], 100000)
    with open(os.path.join(root, "stdout.txt"), encoding="utf-8") as f:
      out = f.read()
    self.assertIn(f"Stopping at step {steps[0]} (SIGTERM)", out)


if __name__ == "__main__":
  absltest.main()
