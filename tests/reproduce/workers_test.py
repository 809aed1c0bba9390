"""Tests for ssm_icl/reproduce/workers.py: shares, CPUs, the parallel suite.

The end-to-end tests run `python -m ssm_icl.reproduce --workers=2` on two
tiny smoke runs: one to completion, one stopped with SIGTERM to the parent
(which must reach both workers, each saving its step).
"""

import json
import os
import signal
import subprocess
import sys
import time

from absl.testing import absltest
from absl.testing import parameterized
import pytest

from ssm_icl import errors
from ssm_icl.reproduce import runner
from ssm_icl.reproduce import workers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# The smoke suite's runs of these two tasks (one model each).
RUNS = ("linear_regression/mamba", "sparse_linear_regression/mambaformer")


class PartitionTest(parameterized.TestCase):

  def test_longest_first_balances_the_costs(self):
    costs = [5.0, 1.0, 4.0, 3.0, 3.0, 2.0]
    shares = workers.partition(costs, 2)
    # LPT: 5 -> 0, 4 -> 1, 3 -> 1 (7), 3 -> 0 (8), 2 -> 1 (9), 1 -> 0 (9).
    self.assertEqual(shares, [[0, 1, 4], [2, 3, 5]])
    self.assertEqual([sum(costs[i] for i in s) for s in shares], [9, 9])

  @parameterized.parameters(1, 2, 3, 7)
  def test_every_run_in_exactly_one_share(self, n_workers):
    costs = [float((7 * i) % 5) for i in range(11)]
    shares = workers.partition(costs, n_workers)
    self.assertLen(shares, n_workers)
    self.assertCountEqual(sum(shares, []), range(11))
    for share in shares:
      self.assertEqual(share, sorted(share))
    self.assertEqual(shares, workers.partition(costs, n_workers))

  def test_fewer_runs_than_workers_leaves_the_last_shares_empty(self):
    self.assertEqual(workers.partition([1.0, 3.0], 4), [[1], [0], [], []])

  def test_no_workers_is_a_user_error(self):
    with self.assertRaisesRegex(errors.UserError, "--workers=0 must be"):
      workers.partition([1.0], 0)


class CpuGroupsTest(absltest.TestCase):

  def test_contiguous_disjoint_slices(self):
    self.assertEqual(workers.cpu_groups([0, 1, 2, 3, 4], 2),
                     [[0, 1, 2], [3, 4]])
    self.assertEqual(workers.cpu_groups([2, 5], 2), [[2], [5]])

  def test_more_workers_than_cpus_names_both(self):
    with self.assertRaisesRegex(errors.UserError,
                                r"--workers=3 is more than the 2 CPUs"):
      workers.cpu_groups([0, 1], 3)

  def test_unknown_cpus_pin_nothing(self):
    self.assertEqual(workers.cpu_groups(None, 3), [None] * 3)

  def test_worker_command_repeats_the_flags_and_adds_the_share(self):
    command = workers.worker_command(["--suite=smoke", "--workers=2"],
                                     [3, 0])
    self.assertEqual(command[1:], [
        "-m", "ssm_icl.reproduce", "--suite=smoke", "--workers=2",
        "--workers=1", "--worker_runs=3,0"])


class CommandLineTest(absltest.TestCase):
  """Bad --workers / --worker_runs values: one error line, nothing written."""

  def _run(self, workdir, *flags):
    return subprocess.run(
        [sys.executable, "-m", "ssm_icl.reproduce", "--suite=smoke",
         f"--workdir={workdir}", *flags], cwd=REPO, capture_output=True,
        text=True, timeout=120, check=False)

  def test_no_workers(self):
    workdir = self.create_tempdir().full_path
    proc = self._run(workdir, "--workers=0")
    self.assertEqual(proc.returncode, 2, msg=proc.stderr)
    self.assertEqual(proc.stderr.strip(), "error: --workers=0 must be >= 1.")
    self.assertEqual(os.listdir(workdir), [])

  def test_worker_runs_outside_the_plan(self):
    workdir = self.create_tempdir().full_path
    proc = self._run(workdir, "--tasks=linear_regression",
                     "--worker_runs=0,5")
    self.assertEqual(proc.returncode, 2, msg=proc.stderr)
    self.assertEqual(proc.stderr.strip(), "error: --worker_runs: [5] outside "
                     "the plan's 1 runs (0..0).")
    self.assertEqual(os.listdir(workdir), [])

  def test_worker_runs_not_integers(self):
    workdir = self.create_tempdir().full_path
    proc = self._run(workdir, "--worker_runs=a,1")
    self.assertEqual(proc.returncode, 2, msg=proc.stderr)
    self.assertIn("--worker_runs=a,1 must be comma-separated integers",
                  proc.stderr)


def _command(workdir, *extra):
  return [sys.executable, "-m", "ssm_icl.reproduce", "--suite=smoke",
          f"--workdir={workdir}",
          "--tasks=linear_regression,sparse_linear_regression",
          "--workers=2", *extra]


def _env():
  # Plumbing, not speed: skip XLA's optimisation passes (faster compiles).
  return dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")


@pytest.mark.slow
class ParallelSuiteTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    if len(workers.available_cpus() or []) < 2:
      self.fail("these tests need 2 CPUs (the CI machine has 2)")

  def test_two_workers_train_every_run_on_their_own_cpu(self):
    workdir = self.create_tempdir().full_path
    proc = subprocess.run(_command(workdir), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=600,
                          check=False)
    log = proc.stdout + proc.stderr
    self.assertEqual(proc.returncode, 0, msg=log)
    cpus = workers.available_cpus()
    # One run per worker, each pinned to one of the two CPU slices.
    self.assertIn(f"[worker 0] 1 run(s) (plan indices 1) on CPU {cpus[0]}",
                  log)
    self.assertIn(f"[worker 1] 1 run(s) (plan indices 0) on CPU {cpus[-1]}",
                  log)
    self.assertIn("exit statuses [0, 0]", log)
    for relpath in RUNS:
      run_dir = os.path.join(workdir, relpath)
      self.assertTrue(os.path.exists(os.path.join(run_dir, runner.MARKER)))
      self.assertLen(runner.read_sessions(run_dir), 1)
    # The parent wrote the tables once, from both runs.
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    self.assertLen(summary["runs"], 2)
    self.assertIn("(2/2 runs finished)", log)

    again = subprocess.run(_command(workdir), cwd=REPO, env=_env(),
                           capture_output=True, text=True, timeout=300,
                           check=False)
    self.assertEqual(again.returncode, 0, msg=again.stdout + again.stderr)
    self.assertIn("2 finished earlier; 0 to train", again.stdout)
    self.assertNotIn("[worker", again.stdout)

  def test_sigterm_to_the_parent_stops_every_worker_at_a_saved_step(self):
    workdir = self.create_tempdir().full_path
    # Long enough never to finish before the signal.
    proc = subprocess.Popen(
        _command(workdir, "--sweep=train.steps=100000"), cwd=REPO,
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    started, log = set(), []
    deadline = time.monotonic() + 300
    for line in proc.stdout:
      log.append(line)
      if "Step 1 done" in line:
        started.add(line.split("]")[0])
      if len(started) == 2 or time.monotonic() > deadline:
        break
    self.assertLen(started, 2, msg="".join(log))
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    log.append(rest)
    self.assertEqual(proc.returncode, 0, msg="".join(log))
    self.assertIn("asking every worker to save and stop", rest)
    for relpath in RUNS:
      run_dir = os.path.join(workdir, relpath + "@steps=100000")
      sessions = runner.read_sessions(run_dir)
      self.assertLen(sessions, 1, msg=relpath)
      self.assertTrue(sessions[0]["interrupted"])
      self.assertBetween(sessions[0]["end_step"], 1, 99999)
      self.assertFalse(os.path.exists(os.path.join(run_dir, runner.MARKER)))


if __name__ == "__main__":
  absltest.main()
