"""Tests for ssm_icl/train/checkpoint.py on small sharded pytrees."""

import os
import shutil
import signal

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from ssm_icl.parallel import mesh as mesh_lib
from ssm_icl.train import checkpoint

_CONFIG = {"model": {"d_model": 16, "remat": False},
           "task": {"name": "linear_regression"},
           "train": {"seed": 0, "steps": 10, "grad_clip": 10.0,
                     "weight_decay": 0.0},
           "mesh": {"shape": [-1, 1]}}


def _state(mesh, value):
  sharding = {"w": NamedSharding(mesh, P(None, "model")),
              "step": NamedSharding(mesh, P())}
  state = {"w": jnp.full((4, 8), value, jnp.float32),
           "step": jnp.asarray(int(value), jnp.int32)}
  return jax.device_put(state, sharding), sharding


def _target(mesh):
  _, sharding = _state(mesh, 0.0)
  return {"w": jax.ShapeDtypeStruct((4, 8), jnp.float32,
                                    sharding=sharding["w"]),
          "step": jax.ShapeDtypeStruct((), jnp.int32,
                                       sharding=sharding["step"])}


class CheckpointerTest(parameterized.TestCase):

  def _save_steps(self, workdir, steps, mesh, **kwargs):
    ckpt = checkpoint.Checkpointer(workdir, every=5, max_to_keep=3, **kwargs)
    for step in steps:
      state, _ = _state(mesh, float(step))
      if ckpt.should_save(step):
        ckpt.save(step, state, checkpoint.make_meta(_CONFIG, step, mesh))
    ckpt.close()

  def test_round_trip_onto_another_mesh(self):
    workdir = self.create_tempdir().full_path
    self._save_steps(workdir, range(1, 11), mesh_lib.make_mesh((2, 4)))
    other = mesh_lib.make_mesh((-1, 1), devices=jax.devices()[:2])
    ckpt = checkpoint.Checkpointer(workdir, every=5, max_to_keep=3)
    self.assertEqual(ckpt.all_steps(), [5, 10])
    state, meta, step = ckpt.restore_latest(_target(other), _CONFIG)
    ckpt.close()
    self.assertEqual(step, 10)
    np.testing.assert_array_equal(state["w"], np.full((4, 8), 10.0))
    self.assertEqual(state["w"].sharding.mesh.shape, other.shape)
    self.assertEqual(meta["step"], 10)
    self.assertEqual(meta["mesh_shape"], {"data": 2, "model": 4})
    self.assertEqual(meta["device_count"], 8)
    self.assertEqual(meta["config"], _CONFIG)

  def test_sync_save(self):
    workdir = self.create_tempdir().full_path
    self._save_steps(workdir, [5], mesh_lib.make_mesh((2, 4)),
                     async_save=False)
    self.assertEqual(checkpoint.Checkpointer(
        workdir, every=5, max_to_keep=3).all_steps(), [5])

  def test_empty_directory(self):
    ckpt = checkpoint.Checkpointer(self.create_tempdir().full_path, every=5,
                                   max_to_keep=3)
    self.assertIsNone(ckpt.restore_latest(_target(mesh_lib.make_mesh((8, 1)))))

  def test_corrupted_latest_falls_back_and_is_kept(self):
    workdir = self.create_tempdir().full_path
    mesh = mesh_lib.make_mesh((2, 4))
    self._save_steps(workdir, range(1, 16), mesh)
    ckdir = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
    # Corrupt step 15: remove its array data files.
    shutil.rmtree(os.path.join(ckdir, "15", "state", "d"))
    ckpt = checkpoint.Checkpointer(workdir, every=5, max_to_keep=3)
    with self.assertLogs(level="WARNING") as logs:
      state, _, step = ckpt.restore_latest(_target(mesh), _CONFIG)
    self.assertEqual(step, 10)
    np.testing.assert_array_equal(state["w"], np.full((4, 8), 10.0))
    self.assertTrue(any("step 15" in m and "cannot be restored" in m
                        for m in logs.output))
    # Nothing deleted: 5 and 10 remain, 15 is renamed aside, and step 15 can
    # be saved again.
    names = sorted(os.listdir(ckdir))
    self.assertIn("5", names)
    self.assertIn("10", names)
    self.assertTrue(any(n.startswith("15.unreadable-") for n in names))
    self.assertEqual(ckpt.all_steps(), [5, 10])
    new_state, _ = _state(mesh, 15.0)
    self.assertTrue(ckpt.save(15, new_state,
                              checkpoint.make_meta(_CONFIG, 15, mesh)))
    ckpt.close()

  def test_partial_save_is_reported(self):
    workdir = self.create_tempdir().full_path
    mesh = mesh_lib.make_mesh((2, 4))
    self._save_steps(workdir, range(1, 6), mesh)
    ckdir = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
    os.makedirs(os.path.join(ckdir, "10.orbax-checkpoint-tmp-123", "state"))
    ckpt = checkpoint.Checkpointer(workdir, every=5, max_to_keep=3)
    with self.assertLogs(level="WARNING") as logs:
      _, _, step = ckpt.restore_latest(_target(mesh), _CONFIG)
    ckpt.close()
    self.assertEqual(step, 5)
    self.assertTrue(any("10.orbax-checkpoint-tmp-123" in m and
                        "never completed" in m for m in logs.output))

  def test_all_unreadable_raises_and_deletes_nothing(self):
    workdir = self.create_tempdir().full_path
    mesh = mesh_lib.make_mesh((2, 4))
    self._save_steps(workdir, range(1, 11), mesh)
    ckdir = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
    for step in ("5", "10"):
      shutil.rmtree(os.path.join(ckdir, step, "state", "d"))
    ckpt = checkpoint.Checkpointer(workdir, every=5, max_to_keep=3)
    with self.assertRaisesRegex(
        RuntimeError, r"None of the checkpoints \[10, 5\] .* can be restored"):
      ckpt.restore_latest(_target(mesh), _CONFIG)
    ckpt.close()
    self.assertEqual(sorted(os.listdir(ckdir)), ["10", "5"])

  def test_incompatible_config_names_fields(self):
    workdir = self.create_tempdir().full_path
    mesh = mesh_lib.make_mesh((2, 4))
    self._save_steps(workdir, [5], mesh)
    other = {**_CONFIG, "model": {"d_model": 32, "remat": True},
             "train": {**_CONFIG["train"], "seed": 3, "steps": 99}}
    ckpt = checkpoint.Checkpointer(workdir, every=5, max_to_keep=3)
    with self.assertRaises(ValueError) as cm:
      ckpt.restore_latest(_target(mesh), other)
    ckpt.close()
    message = str(cm.exception)
    self.assertIn("incompatible config", message)
    self.assertIn("model.d_model: checkpoint 16, config 32", message)
    self.assertIn("train.seed: checkpoint 0, config 3", message)
    # Resumable fields are not reported.
    self.assertNotIn("model.remat", message)
    self.assertNotIn("train.steps", message)

  @parameterized.parameters(-1, 0)
  def test_bad_options(self, every):
    with self.assertRaisesRegex(ValueError, rf"ckpt.every={every} must be"):
      checkpoint.Checkpointer(self.create_tempdir().full_path, every=every,
                              max_to_keep=1)
    with self.assertRaisesRegex(ValueError, r"ckpt.max_to_keep=0 must be"):
      checkpoint.Checkpointer(self.create_tempdir().full_path, every=1,
                              max_to_keep=0)


class IncompatibleFieldsTest(absltest.TestCase):

  def test_optimizer_structure(self):
    saved = {"train": {"grad_clip": 10.0, "weight_decay": 0.0}}
    self.assertEqual(checkpoint.incompatible_fields(saved, saved), [])
    self.assertEqual(
        checkpoint.incompatible_fields(
            saved, {"train": {"grad_clip": 0.0, "weight_decay": 0.0}}),
        ["train.grad_clip: checkpoint 10.0, config 0.0"])
    # Changing the clipping threshold keeps the optimiser state's structure.
    self.assertEqual(checkpoint.incompatible_fields(
        saved, {"train": {"grad_clip": 1.0, "weight_decay": 0.0}}),
                     ["train.grad_clip: checkpoint 10.0, config 1.0"])

  def test_tuples_equal_lists(self):
    self.assertEqual(checkpoint.incompatible_fields(
        {"task": {"x": [1, 2]}}, {"task": {"x": (1, 2)}}), [])

  def test_absent_field(self):
    self.assertEqual(checkpoint.incompatible_fields(
        {"task": {}}, {"task": {"k": 3}}),
                     ["task.k: checkpoint '<absent>', config 3"])


class SignalFlagTest(absltest.TestCase):

  def test_sigterm_sets_flag_and_handler_is_restored(self):
    previous = signal.getsignal(signal.SIGTERM)
    with checkpoint.SignalFlag() as flag:
      self.assertFalse(flag.requested)
      os.kill(os.getpid(), signal.SIGTERM)
      self.assertTrue(flag.requested)
      self.assertEqual(flag.signal_name, "SIGTERM")
    self.assertIs(signal.getsignal(signal.SIGTERM), previous)


if __name__ == "__main__":
  absltest.main()
