"""Object-store workdirs end to end: the CLIs on gs:// (a local emulator).

Both GCS clients of the stack (gcsfs for files and TensorBoard events,
tensorstore for Orbax's arrays) talk to the fake-gcs-server
of tests/gcs_emulator.py on 127.0.0.1, each test with its own bucket:
* a run with --workdir=gs://... is SIGKILLed after its first checkpoints,
  resumed, and ends bit-identical to an uninterrupted local run;
* `python -m ssm_icl.eval` evaluates it and writes its outputs there;
* the reproduce CLI runs a smoke-suite run there, and skips it when the
  suite runs again.
The two-process variant is in tests/parallel/multiprocess_test.py.
"""

import json
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
from etils import epath
import numpy as np
import pytest

from ssm_icl.reproduce import plan as plan_lib
from ssm_icl.reproduce import runner
from ssm_icl.train import checkpoint as ckpt_lib
from tests import gcs_emulator
from tests.train import cli_util

_STEPS = 24
_EVERY = 4
_OVERRIDES = (f"--config.train.steps={_STEPS}",
              f"--config.ckpt.every={_EVERY}", "--config.ckpt.max_to_keep=100",
              "--config.train.eval_every=0", "--config.train.log_every=1")


def setUpModule():
  gcs_emulator.emulator()


def _logged_steps(workdir: str) -> list[int]:
  """Steps of the training records in a gs:// run's metrics.jsonl."""
  path = epath.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line)["step"] for line in path.read_text().splitlines()
          if '"train/loss"' in line]


def _complete_steps(workdir: str) -> list[int]:
  ckpt = ckpt_lib.Checkpointer(workdir, every=1, max_to_keep=None,
                               async_save=False)
  steps = ckpt.all_steps()
  ckpt.close()
  return steps


@pytest.mark.slow
class TrainAndEvalTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = gcs_emulator.new_bucket("train") + "/run"
    cls.ref_dir = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    # The local reference runs alongside the GCS run.
    ref = cli_util.start(cli_util.main_args(cls.ref_dir, *_OVERRIDES),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # On GCS the metrics are uploaded right after each checkpoint save
    # starts; Orbax finishes a save before it starts the next, so records
    # up to step 2 * _EVERY mean the checkpoint at _EVERY is complete.
    killed = cli_util.start(cli_util.main_args(cls.workdir, *_OVERRIDES),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    cls.caught = cli_util.wait_for(
        lambda: any(s >= 2 * _EVERY for s in _logged_steps(cls.workdir)),
        killed, interval=0.05)
    killed.kill()
    killed.wait()
    cls.steps_after_kill = _complete_steps(cls.workdir)
    cls.resumed = cli_util.run(cli_util.main_args(cls.workdir, *_OVERRIDES))
    cls.ref_stderr = ref.communicate(timeout=300)[1]
    cls.ref_returncode = ref.returncode

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.ref_dir, ignore_errors=True)
    super().tearDownClass()

  def test_killed_and_resumed_run_matches_an_uninterrupted_local_run(self):
    self.assertEqual(self.ref_returncode, 0, self.ref_stderr[-3000:])
    self.assertTrue(self.caught, "the run ended before it could be killed")
    self.assertNotEmpty(self.steps_after_kill)
    self.assertLess(max(self.steps_after_kill), _STEPS)
    self.assertEqual(self.resumed.returncode, 0, self.resumed.stderr[-3000:])
    self.assertIn("Resumed from the checkpoint at step", self.resumed.stdout)
    self.assertIn(f"{self.workdir}/checkpoints", self.resumed.stdout)

    got = cli_util.saved_params(self.workdir, _STEPS)
    want = cli_util.saved_params(self.ref_dir, _STEPS)
    self.assertEqual(got.keys(), want.keys())
    for name in want:
      np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # One record per step, the killed session's extra records dropped.
    self.assertEqual(_logged_steps(self.workdir), list(range(1, _STEPS + 1)))
    self.assertEqual(_complete_steps(self.workdir),
                     list(range(_EVERY, _STEPS + 1, _EVERY)))
    run = epath.Path(self.workdir)
    self.assertEqual(json.loads((run / "config.json").read_text())
                     ["train"]["steps"], _STEPS)
    events = list((run / "tensorboard").iterdir())
    self.assertNotEmpty(events)
    self.assertTrue(all(e.name.startswith("events.out.tfevents")
                        and e.stat().length > 100 for e in events), events)

  def test_eval_cli_writes_its_outputs_to_the_bucket(self):
    self.assertEqual(self.resumed.returncode, 0, self.resumed.stderr[-3000:])
    result = cli_util.run([
        sys.executable, "-m", "ssm_icl.eval", f"--workdir={self.workdir}",
        "--n_prompts=32", "--batch_size=32", "--n_bootstrap=10",
        "--nobaselines"])
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    out = epath.Path(self.workdir) / "eval"
    self.assertCountEqual([p.name for p in out.iterdir()],
                          ["results.json", "curves.png", "curves.svg",
                           "table.md"])
    self.assertEqual(json.loads((out / "results.json").read_text())["step"],
                     _STEPS)
    self.assertTrue((out / "curves.png").read_bytes().startswith(b"\x89PNG"))
    self.assertIn("| linear_regression |", (out / "table.md").read_text())


@pytest.mark.slow
class ReproduceTest(absltest.TestCase):

  def test_smoke_suite_run_on_gcs_and_resumed(self):
    # One run of the smoke suite (a paper model, so Table 1 and the
    # comparison are written too): the same files and markers as the full
    # suite, in a tenth of its time.
    workdir = gcs_emulator.new_bucket("suite") + "/smoke"
    env = cli_util.env()
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"  # plumbing, not speed
    first = subprocess.run(
        [sys.executable, "-m", "ssm_icl.reproduce", "--suite=smoke",
         f"--workdir={workdir}", "--tasks=linear_regression",
         "--models=mamba"],
        cwd=cli_util.REPO, env=env, text=True, capture_output=True,
        timeout=600, check=False)
    self.assertEqual(first.returncode, 0, first.stderr[-3000:])
    self.assertIn("| linear_regression |", first.stdout)
    root = epath.Path(workdir)
    for name in ("plan.json", "table.md", "table1.md", "comparison.md",
                 "curves.png", "flops.png", "summary.json",
                 "linear_regression/baselines.json",
                 "linear_regression/results.json",
                 "linear_regression/mamba/DONE.json",
                 "linear_regression/mamba/sessions.jsonl",
                 "linear_regression/mamba/eval/results.json",
                 "linear_regression/mamba/metrics.jsonl"):
      self.assertTrue((root / name).exists(), name)
    marker = root / "linear_regression/mamba/DONE.json"
    done = marker.read_text()
    self.assertEqual(json.loads(done)["step"], 10)

    # The same suite again (in this process: nothing is compiled) finds the
    # run's marker in the bucket and skips it.
    lines = []
    again = runner.run_suite(plan_lib.suite_config("smoke"), workdir,
                             tasks=["linear_regression"], families=["mamba"],
                             out=lines.append)
    self.assertEqual((again.done, again.trained),
                     (["linear_regression/mamba"], []))
    self.assertTrue(any("finished earlier; skipped" in line for line in lines),
                    lines)
    self.assertEqual(marker.read_text(), done)
    sessions = (root / "linear_regression/mamba/sessions.jsonl").read_text()
    self.assertLen(sessions.splitlines(), 1)


if __name__ == "__main__":
  absltest.main()
