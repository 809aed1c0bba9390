"""Tests for ssm_icl/train/loop.py: files, resume, NaN, input errors.

All runs use the tiny Mamba on linear regression over the 8 fake CPU devices
(mesh (8, 1)), so the compiled programs are shared through the persistent
compilation cache with the other training tests.
"""

import collections
import os
import shutil
import signal
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import linear_regression
from configs import many_outlier_regression
from ssm_icl.train import checkpoint
from ssm_icl.train import loop
from ssm_icl.train import metrics
from ssm_icl.train import state as state_lib
from ssm_icl.train import step as step_lib


def tiny_config(**train):
  config = linear_regression.get_config("mamba,tiny")
  config.train.eval_every = 0
  config.ckpt.every = 5
  config.ckpt.max_to_keep = None
  config.train.update(train)
  return config


def _with(config, **train):
  config = config.copy_and_resolve_references()
  config.train.update(train)
  return config


@pytest.mark.slow
class LoopTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = absltest.get_default_test_tmpdir()
    cls.ref_dir = os.path.join(cls.root, "loop_reference")
    shutil.rmtree(cls.ref_dir, ignore_errors=True)
    config = tiny_config(steps=20, eval_every=10)
    cls.ref = loop.train_and_evaluate(config, cls.ref_dir)

  def test_writes_metrics_tensorboard_config_and_checkpoints(self):
    self.assertEqual(self.ref.step, 20)
    self.assertFalse(self.ref.interrupted)
    self.assertEqual(self.ref.compiled, {6: 1})
    names = set(os.listdir(self.ref_dir))
    self.assertTrue({"config.json", "metrics.jsonl", "tensorboard",
                     "checkpoints"} <= names)
    records = metrics.read_metrics(self.ref_dir)
    train = [r for r in records if "train/loss" in r]
    evals = [r for r in records if "eval/loss" in r]
    self.assertEqual([r["step"] for r in train], [5, 10, 15, 20])
    self.assertEqual([r["step"] for r in evals], [10, 20])
    for r in train:
      self.assertTrue(np.isfinite(r["train/loss"]))
      self.assertGreater(r["perf/tokens_per_s"], 0)
      self.assertEqual(r["train/n_points"], 6)
    self.assertEqual(self.ref.last_eval["eval/n_points"], 6)
    ckpt = checkpoint.Checkpointer(self.ref_dir, every=5, max_to_keep=None)
    self.assertEqual(ckpt.all_steps(), [5, 10, 15, 20])
    meta = ckpt.read_meta(20)
    ckpt.close()
    self.assertEqual(meta["config"]["model"]["d_in"], 4)  # filled from task
    self.assertEqual(meta["mesh_shape"], {"data": 8, "model": 1})
    self.assertEqual(int(self.ref.state.step), 20)

  def test_corrupted_latest_resumes_from_previous_bit_identically(self):
    workdir = os.path.join(self.root, "loop_corrupted")
    shutil.rmtree(workdir, ignore_errors=True)
    config = tiny_config(eval_every=10)
    loop.train_and_evaluate(_with(config, steps=10), workdir)
    ckdir = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
    shutil.rmtree(os.path.join(ckdir, "10", "state", "d"))
    with self.assertLogs(level="WARNING") as logs:
      result = loop.train_and_evaluate(_with(config, steps=20), workdir)
    self.assertTrue(any("step 10" in m and "cannot be restored" in m
                        for m in logs.output))
    # Same final parameters and optimiser state, bit for bit.
    chex.assert_trees_all_equal(jax.device_get(result.state.params),
                                jax.device_get(self.ref.state.params))
    chex.assert_trees_all_equal(jax.device_get(result.state.opt_state),
                                jax.device_get(self.ref.state.opt_state))
    # Nothing deleted: the unreadable checkpoint is kept under a new name.
    names = os.listdir(ckdir)
    self.assertTrue(any(n.startswith("10.unreadable-") for n in names))
    self.assertEqual(sorted(n for n in names if n.isdigit()),
                     ["10", "15", "20", "5"])
    # The metrics file has exactly one training record per logged step.
    steps = [r["step"] for r in metrics.read_metrics(workdir)
             if "train/loss" in r]
    self.assertEqual(steps, [5, 10, 15, 20])

  def test_resume_when_done_does_nothing(self):
    result = loop.train_and_evaluate(tiny_config(steps=20, eval_every=10),
                                     self.ref_dir)
    self.assertEqual(result.step, 20)
    self.assertEqual(result.compiled, {})

  def test_nan_loss_stops_and_keeps_last_good_checkpoint(self):
    workdir = os.path.join(self.root, "loop_nan")
    shutil.rmtree(workdir, ignore_errors=True)
    config = tiny_config(steps=20, inject_nan_at_step=13)
    with self.assertRaisesRegex(loop.NonFiniteLossError,
                                r"Non-finite training loss \(nan\) at step 13;"
                                r".*last good checkpoint is step 10"):
      loop.train_and_evaluate(config, workdir)
    ckpt = checkpoint.Checkpointer(workdir, every=5, max_to_keep=None)
    self.assertEqual(ckpt.all_steps(), [5, 10])
    ckpt.close()
    # The kept checkpoint is intact and equals the clean run at step 10.
    result = loop.train_and_evaluate(tiny_config(steps=10), workdir)
    self.assertEqual(result.compiled, {})  # restored, nothing left to train
    ref = checkpoint.Checkpointer(self.ref_dir, every=5, max_to_keep=None)
    want, _ = ref.restore(10, jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                       sharding=x.sharding), result.state))
    ref.close()
    chex.assert_trees_all_equal(jax.device_get(result.state.params),
                                jax.device_get(want.params))

  def test_sigterm_stops_at_the_step_it_arrived_and_skips_the_eval(self):
    workdir = os.path.join(self.root, "loop_sigterm")
    shutil.rmtree(workdir, ignore_errors=True)
    # The eval and the log would be due at step 3; a stop skips the eval.
    config = tiny_config(steps=1000, log_every=1000, eval_every=3)
    config.ckpt.every = 1000
    dispatched = []
    add_tokens = metrics.Progress.add_tokens

    def dispatch_and_signal(progress, n):
      dispatched.append(n)  # called once per dispatched step
      if len(dispatched) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
      return add_tokens(progress, n)

    with mock.patch.object(metrics.Progress, "add_tokens",
                           dispatch_and_signal):
      result = loop.train_and_evaluate(config, workdir)
    self.assertTrue(result.interrupted)
    self.assertEqual(result.step, 3)
    self.assertLen(dispatched, 3)  # no step dispatched after the signal
    self.assertEqual(result.last_eval, {})
    ckpt = checkpoint.Checkpointer(workdir, every=5, max_to_keep=None)
    self.assertEqual(ckpt.all_steps(), [3])
    ckpt.close()

  def test_bound_in_flight_waits_for_all_but_the_newest(self):
    step = jax.jit(lambda x: jnp.tanh(x @ x))
    x = jnp.ones((256, 256)) / 256
    in_flight, outputs = collections.deque(), []
    for i in range(6):
      x = step(x)
      outputs.append(x)
      loop.bound_in_flight(in_flight, x, limit=2)
      self.assertLen(in_flight, min(i + 1, 2))
      self.assertTrue(all(o.is_ready() for o in outputs[:-2]))
    self.assertEqual(loop.MAX_IN_FLIGHT, 1)

  def test_curriculum_compiles_once_per_length_bucket(self):
    # The many-outlier paper curriculum (points 12 -> 512 by 2: 251 lengths,
    # 8 buckets) at one step per stage, on the tiny model: its first 4 steps
    # (12 to 18 points) share the bucket of 72 points, one train program.
    # (tests/train/buckets_test.py checks the buckets of the whole curriculum
    # and the release of a finished bucket's programs.)
    workdir = os.path.join(self.root, "loop_curriculum")
    shutil.rmtree(workdir, ignore_errors=True)
    config = many_outlier_regression.get_config("mamba,tiny")
    paper = many_outlier_regression.get_config("mamba").task.curriculum
    config.task.curriculum = paper
    config.task.curriculum.dims.update(end=4, interval=1)
    config.task.curriculum.points.interval = 1
    config.train.update(steps=4, log_every=1, eval_every=4)
    config.ckpt.every = 100
    with mock.patch.object(loop, "console") as console:
      result = loop.train_and_evaluate(config, workdir)
    self.assertEqual(result.compiled, {72: 1})
    lines = "\n".join(c.args[0] for c in console.call_args_list)
    self.assertIn("Length buckets (72, 134, 196, 258, 320, 384, 448, 512) "
                  "for the 251 prompt lengths of the curriculum "
                  "(train.length_buckets=8): at most 8 train program(s).",
                  lines)
    self.assertIn("Compiled 1 train program(s) in this run, for the buckets "
                  "[72] of (72, 134", lines)
    records = metrics.read_metrics(workdir)
    train = [r for r in records if "train/loss" in r]
    self.assertEqual([r["train/n_points"] for r in train], [12, 14, 16, 18])
    self.assertTrue(all(np.isfinite(r["train/loss"]) for r in train))
    self.assertEqual(result.last_eval["eval/n_points"], 18)
    self.assertTrue(np.isfinite(result.last_eval["eval/metric_last"]))

    # Stopped at step 2 and resumed: the same padded batches, bit for bit.
    resumed_dir = os.path.join(self.root, "loop_curriculum_resumed")
    shutil.rmtree(resumed_dir, ignore_errors=True)
    loop.train_and_evaluate(_with(config, steps=2, eval_every=0),
                            resumed_dir)
    resumed = loop.train_and_evaluate(_with(config, eval_every=0),
                                      resumed_dir)
    self.assertEqual(resumed.compiled, {72: 1})
    chex.assert_trees_all_equal(jax.device_get(resumed.state.params),
                                jax.device_get(result.state.params))


class BadInputTest(parameterized.TestCase):
  """Each bad input fails with a clear message before anything compiles."""

  def setUp(self):
    super().setUp()
    self.workdir = self.create_tempdir().full_path
    # Any compilation would go through one of these; they must not be hit.
    for module, name in ((state_lib, "init_state"),
                         (step_lib, "jit_train_step")):
      patcher = mock.patch.object(module, name,
                                  side_effect=AssertionError("compiled"))
      patcher.start()
      self.addCleanup(patcher.stop)

  def _expect(self, config, message, workdir=None):
    with self.assertRaisesRegex(ValueError, message):
      loop.train_and_evaluate(config, workdir or self.workdir)

  def test_mesh_shape_vs_device_count(self):
    config = tiny_config()
    config.mesh.shape = (3, 1)
    self._expect(config, r"mesh.shape=\(3, 1\) covers 3 devices but 8")

  def test_batch_not_divisible_by_data_axis(self):
    self._expect(tiny_config(batch_size=12),
                 r"train.batch_size=12 is not divisible by the mesh's 'data' "
                 r"axis of size 8")

  def test_workdir_not_writable(self):
    blocker = os.path.join(self.workdir, "a_file")
    with open(blocker, "w") as f:
      f.write("x")
    self._expect(tiny_config(), r"workdir=.*a_file/run' is not writable",
                 workdir=os.path.join(blocker, "run"))

  def test_prompt_longer_than_positions(self):
    config = linear_regression.get_config("transformer,tiny")
    config.model.n_positions = 10
    self._expect(config, r"n_points=6 needs 12 tokens, but the model allows "
                 r"n_positions=10")

  def test_task_and_model_dims_disagree(self):
    config = tiny_config()
    config.model.d_in = 7
    self._expect(config, r"model.d_in=7 does not match the task")

  def test_unknown_task_field(self):
    config = tiny_config()
    config.task.kwargs = {"n_dims": 4, "nope": 1}
    self._expect(config, r"Unknown argument\(s\) \['nope'\]")

  def test_incompatible_checkpoint(self):
    config = tiny_config()
    ckpt = checkpoint.Checkpointer(self.workdir, every=5, max_to_keep=None)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    saved = config.to_dict()
    saved["model"]["d_model"] = 32
    saved["task"]["kwargs"]["n_dims"] = 5
    ckpt.save(5, {"x": np.zeros(2)}, checkpoint.make_meta(saved, 5, mesh))
    ckpt.close()
    self._expect(config, r"(?s)incompatible config.*model.d_model: "
                 r"checkpoint 32, config 16.*task.kwargs.n_dims: checkpoint 5,"
                 r" config 4")

  @parameterized.parameters(("steps", 0), ("log_every", -1))
  def test_bad_train_values(self, field, value):
    self._expect(tiny_config(**{field: value}),
                 rf"train.{field}={value} must be positive")

  def test_bad_length_buckets(self):
    self._expect(tiny_config(length_buckets=-1),
                 r"train.length_buckets=-1 must be an int >= 0")


if __name__ == "__main__":
  absltest.main()
