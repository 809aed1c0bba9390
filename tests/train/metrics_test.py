"""Tests for ssm_icl/train/metrics.py."""

import os

from absl.testing import absltest
from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.parallel import mesh as mesh_lib
from ssm_icl.train import metrics


class MetricWriterTest(absltest.TestCase):

  def test_jsonl_and_tensorboard(self):
    workdir = self.create_tempdir().full_path
    writer = metrics.MetricWriter(workdir)
    writer.write(1, {"train/loss": np.float32(0.5), "n": 3})
    writer.write(2, {"train/loss": jnp.asarray(0.25), "bad": float("nan")})
    writer.close()
    records = metrics.read_metrics(workdir)
    self.assertEqual(records, [{"step": 1, "train/loss": 0.5, "n": 3},
                               {"step": 2, "train/loss": 0.25, "bad": "nan"}])
    tb_files = os.listdir(os.path.join(workdir, metrics.TENSORBOARD_DIR))
    self.assertTrue(any(f.startswith("events.out.tfevents") for f in tb_files))

  def test_truncate_after_drops_replayed_steps(self):
    workdir = self.create_tempdir().full_path
    writer = metrics.MetricWriter(workdir, tensorboard=False)
    for step in (1, 2, 3, 4):
      writer.write(step, {"x": step})
    with open(writer.path, "a") as f:
      f.write('{"step": 5, "x"')  # a line cut short by a kill
    writer.truncate_after(2)
    writer.write(3, {"x": 30})
    self.assertEqual([(r["step"], r["x"]) for r in
                      metrics.read_metrics(workdir)], [(1, 1), (2, 2), (3, 30)])

  def test_disabled_writer_writes_nothing(self):
    workdir = self.create_tempdir().full_path
    writer = metrics.MetricWriter(workdir, enabled=False)
    writer.write(1, {"x": 1})
    writer.truncate_after(0)
    writer.close()
    self.assertEqual(os.listdir(workdir), [])


class ProgressTest(absltest.TestCase):

  def test_rates_and_line(self):
    now = [100.0]
    progress = metrics.Progress(total_steps=1000, start_step=100,
                                clock=lambda: now[0])
    for _ in range(50):
      progress.add_tokens(64 * 82)
    now[0] += 10.0
    rates = progress.report(150)
    np.testing.assert_allclose(rates["steps_per_s"], 5.0)
    np.testing.assert_allclose(rates["tokens_per_s"], 50 * 64 * 82 / 10.0)
    np.testing.assert_allclose(rates["eta_s"], 850 / 5.0)
    line = progress.line(150, 0.123456, rates)
    self.assertEqual(
        line, "step 150/1000 | loss 0.1235 | 5 steps/s | 26.2k tok/s | "
        "ETA 2m50s")

  def test_format_duration(self):
    self.assertEqual(metrics.format_duration(3725), "1h02m")
    self.assertEqual(metrics.format_duration(42), "42s")
    self.assertEqual(metrics.format_duration(float("inf")), "?")


class OverviewTest(absltest.TestCase):

  def test_table_lists_axes_and_specs(self):
    mesh = mesh_lib.make_mesh((2, 4))
    boxed = {"dense": {"kernel": nn.LogicallyPartitioned(
        jax.ShapeDtypeStruct((16, 32), jnp.float32), ("embed", "inner"))},
             "D": jax.ShapeDtypeStruct((32,), jnp.float32)}
    shardings = {"dense": {"kernel": jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(None, "model"))},
                 "D": mesh_lib.replicated(mesh)}
    rows = metrics.parameter_rows(boxed, shardings)
    self.assertEqual([r["name"] for r in rows], ["D", "dense/kernel"])
    self.assertEqual(rows[1]["axes"], ("embed", "inner"))
    self.assertEqual(rows[1]["spec"], (None, "model"))
    table = metrics.parameter_overview(rows)
    self.assertIn("P(None, 'model')", table)
    self.assertIn("(embed, inner)", table)
    self.assertIn("Total: 544 parameters in 2 arrays.", table)

  def test_mismatched_trees(self):
    with self.assertRaisesRegex(ValueError, r"2 parameters but 1 shardings"):
      metrics.parameter_rows({"a": 1, "b": 2}, {"a": None, "c": 3})


if __name__ == "__main__":
  absltest.main()
