"""Sharded training: golden parameter shardings, and model parallelism that
matches a single device.

The golden table `tests/testdata/sharding_golden.json` records, for the tiny
config of every family on a (2, 4) ("data", "model") mesh, each parameter's
shape, logical axes and PartitionSpec under both rule sets. After an
intentional change of the models' logical axes or of the rule sets,
regenerate it with

  SSM_ICL_REGENERATE_GOLDEN=1 python -m pytest tests/parallel/sharding_test.py

and review the diff.
"""

import json
import os
import shutil

from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn
import jax
import numpy as np
import pytest

from configs import common
from configs import linear_regression
from ssm_icl import models
from ssm_icl.parallel import mesh as mesh_lib
from ssm_icl.train import checkpoint
from ssm_icl.train import loop
from ssm_icl.train import metrics
from ssm_icl.train import optim
from ssm_icl.train import state as state_lib

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "testdata",
                      "sharding_golden.json")
_RULE_SETS = ("dp", "dp_tp")


def sharding_table():
  """{rules: {family: {param: {shape, axes, spec}}}} on a (2, 4) mesh."""
  mesh = mesh_lib.make_mesh((2, 4))
  table = {}
  for rules_name in _RULE_SETS:
    rules = mesh_lib.axis_rules(rules_name, mesh)
    table[rules_name] = {}
    for family in common.FAMILIES:
      config = linear_regression.get_config(f"{family},tiny")
      task, _, model_cfg, _ = loop.build(config)
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        sharded = state_lib.abstract_state(
            models.build_model(model_cfg), optim.make_optimizer(config.train),
            (1, 12, task.d_in), 0, mesh, rules)
      rows = metrics.parameter_rows(sharded.boxed.params,
                                    sharded.shardings.params)
      table[rules_name][family] = {
          r["name"]: {"shape": list(r["shape"]), "axes": list(r["axes"]),
                      "spec": list(r["spec"])} for r in rows}
  return table


class GoldenShardingTest(absltest.TestCase):

  def test_matches_golden_table(self):
    table = json.loads(json.dumps(sharding_table()))
    if os.environ.get("SSM_ICL_REGENERATE_GOLDEN"):
      with open(GOLDEN, "w", encoding="utf-8") as f:
        json.dump({"mesh": {"data": 2, "model": 4}, "tables": table}, f,
                  indent=1, sort_keys=True)
        f.write("\n")
    with open(GOLDEN, encoding="utf-8") as f:
      golden = json.load(f)["tables"]
    for rules_name in _RULE_SETS:
      for family in common.FAMILIES:
        self.assertEqual(
            table[rules_name][family], golden[rules_name][family],
            f"{family} under {rules_name!r} differs from {GOLDEN}; see the "
            "module docstring to regenerate it after an intended change.")

  def test_golden_table_shards_mamba_and_attention_on_model(self):
    with open(GOLDEN, encoding="utf-8") as f:
      golden = json.load(f)["tables"]
    mambaformer = golden["dp_tp"]["mambaformer"]
    self.assertEqual(mambaformer["blocks_0/mixer/in_proj/kernel"]["spec"],
                     [None, "model"])
    attn = [v for k, v in mambaformer.items() if "c_attn/kernel" in k]
    self.assertNotEmpty(attn)
    self.assertEqual(attn[0]["spec"], [None, "model"])
    for family in common.FAMILIES:
      for row in golden["dp"][family].values():
        self.assertTrue(all(s is None for s in row["spec"]))


@pytest.mark.slow
class ModelParallelTrainingTest(parameterized.TestCase):
  """A (2, 4) data + model parallel run matches one device."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = absltest.get_default_test_tmpdir()
    config = linear_regression.get_config("mambaformer,tiny")
    config.train.update(steps=20, log_every=1, eval_every=0)
    config.ckpt.update(every=10, max_to_keep=None)
    cls.config = config
    cls.runs = {}
    for name, shape, rules, devices in (
        ("one", (1, 1), "dp", jax.devices()[:1]),
        ("mesh", (2, 4), "dp_tp", None)):
      workdir = os.path.join(cls.root, f"sharding_{name}")
      shutil.rmtree(workdir, ignore_errors=True)
      run_config = config.copy_and_resolve_references()
      run_config.mesh.update(shape=shape, rules=rules)
      result = loop.train_and_evaluate(run_config, workdir, devices=devices)
      cls.runs[name] = (workdir, result, run_config)

  def _losses(self, name):
    return np.array([r["train/loss"] for r in
                     metrics.read_metrics(self.runs[name][0])])

  def test_loss_trajectory_matches_single_device(self):
    one, mesh = self._losses("one"), self._losses("mesh")
    self.assertLen(one, 20)
    np.testing.assert_allclose(mesh, one, rtol=1e-5)
    kernel = self.runs["mesh"][1].state.params["blocks_0"]["mixer"][
        "in_proj"]["kernel"]
    self.assertEqual(kernel.sharding.spec, jax.sharding.PartitionSpec(
        None, "model"))
    # (Parameters are not compared element-wise: Adam turns the float noise
    # of gradients that are zero in exact arithmetic, e.g. the attention
    # key bias's, into updates of size lr, so they differ by design.)

  def test_restore_onto_a_different_mesh(self):
    # The single-device checkpoint at step 10 continues on the (2, 4) mesh.
    workdir = os.path.join(self.root, "sharding_moved")
    shutil.rmtree(workdir, ignore_errors=True)
    src = os.path.join(self.runs["one"][0], checkpoint.CHECKPOINT_DIR, "10")
    shutil.copytree(src, os.path.join(workdir, checkpoint.CHECKPOINT_DIR,
                                      "10"))
    result = loop.train_and_evaluate(self.runs["mesh"][2], workdir)
    self.assertEqual(result.step, 20)
    moved = np.array([r["train/loss"] for r in metrics.read_metrics(workdir)])
    np.testing.assert_allclose(moved, self._losses("one")[10:], rtol=1e-5)


if __name__ == "__main__":
  absltest.main()
