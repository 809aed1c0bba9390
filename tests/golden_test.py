r"""Golden values: the training metrics of fixed tiny runs of every family.

Each of the six families trains `STEPS` steps of its tiny linear-regression
config (configs/linear_regression.py:<family>,tiny) from seed 0 on the 8 fake
CPU devices, and its per-step loss and gradient norm, and the trained
model's predictions on a fixed batch of prompts, must equal the values
stored in tests/testdata/golden_losses.json, so a change to a model's init or
layers, the task sampler, the loss or the optimiser fails here.

What it resolves (measured when it was written): LayerNorm eps 1e-5 -> 1e-6
moves the metrics by 2e-5 to 6e-5 relative and fails five of the six
families (the hybrid moves less); eps 1e-4 moves them by 6e-5 to 6e-4. A
precision change inside the selective scan (delta rounded to bf16 before the
softplus) moves the tiny models' losses by only ~2e-7 and their predictions
by ~3e-6, below this test's resolution: in a 3-step tiny run the scan's
contribution to the output is small. That class of change is caught where
it happens, by tests/ops/selective_scan_test.py (every schedule against the
naive reference).

Tolerance: XLA:CPU splits reductions and gradient matmuls by the number of
threads, so results differ by ~1e-7 relative between machines with other
core counts (docs/DESIGN.md §4); RTOL = 2e-5 allows for that.
The values were generated on the 2-core CI machine type.

After an intended numerical change, regenerate (on that machine type) with

  SSM_ICL_UPDATE_GOLDEN=1 python -m pytest tests/golden_test.py -q

and commit the JSON with the change that explains it.

The same values must come out with the fused Pallas selective scan forced
(interpret mode on CPU; slow, so not part of the default suite):

  SSM_ICL_GOLDEN_SCAN_IMPL=pallas python -m pytest tests/golden_test.py -q
"""

import json
import os

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from configs import linear_regression
from ssm_icl import models
from ssm_icl.eval import icl_curves
from ssm_icl.train import loop
from ssm_icl.train import metrics

FAMILIES = ("transformer", "mamba", "s4", "s4_mamba", "hybrid", "mambaformer")
STEPS = 3
METRICS = ("train/loss", "train/grad_norm")
PREDICTIONS = "predictions"
N_PROMPTS = 4
RTOL = 2e-5
# Predictions near zero have no meaningful relative error; below this
# fraction of the largest |prediction| the check is absolute.
ATOL_FRACTION = 1e-5
GOLDEN = os.path.join(os.path.dirname(__file__), "testdata",
                      "golden_losses.json")
UPDATE = os.environ.get("SSM_ICL_UPDATE_GOLDEN") == "1"
# Forces the selective-scan schedule (config.model.scan_impl) of every run,
# e.g. "pallas" for the fused kernel (interpret mode on CPU); the golden
# values must not depend on the schedule.
SCAN_IMPL = os.environ.get("SSM_ICL_GOLDEN_SCAN_IMPL")


def golden_config(family):
  config = linear_regression.get_config(f"{family},tiny")
  config.train.steps = STEPS
  config.train.log_every = 1
  config.train.eval_every = 0
  config.ckpt.every = 1000
  config.ckpt.async_save = False
  if SCAN_IMPL:
    config.model.scan_impl = SCAN_IMPL
  return config


def train_metrics(family, workdir):
  """The family's golden run: per-step metrics and final predictions.

  Returns:
    {metric: [value after step 1, ..., STEPS]} for each of METRICS, and
    PREDICTIONS: the trained model's predictions at every example of
    N_PROMPTS fixed prompts, flattened ([N_PROMPTS * n_points * d_out]).
  """
  config = golden_config(family)
  result = loop.train_and_evaluate(config, workdir)
  records = [r for r in metrics.read_metrics(workdir) if "train/loss" in r]
  values = {m: [r[m] for r in records] for m in METRICS}
  task, curriculum, model_cfg, _ = loop.build(config)
  model = models.build_model(model_cfg)
  predict = icl_curves.model_predictor(
      lambda p, tokens: model.apply({"params": p}, tokens),
      jax.device_get(result.state.params), task=task, model=model)
  prompt = task.sample(jax.random.key(2024), N_PROMPTS,
                       curriculum.points_end)
  values[PREDICTIONS] = np.asarray(predict(prompt), np.float64).ravel(
      ).tolist()
  return values


def load_golden():
  with open(GOLDEN, encoding="utf-8") as f:
    return json.load(f)


class GoldenTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.golden = {"families": {}} if UPDATE else load_golden()

  @classmethod
  def tearDownClass(cls):
    if UPDATE:
      cls.golden.update({
          "steps": STEPS, "metrics": list(METRICS) + [PREDICTIONS],
          "prompts": f"{N_PROMPTS} prompts, task.sample(key(2024))",
          "config": "configs/linear_regression.py:<family>,tiny, seed 0",
          "device_count": jax.device_count(),
          "cpu_count": os.cpu_count(), "jax": jax.__version__})
      with open(GOLDEN, "w", encoding="utf-8") as f:
        json.dump(cls.golden, f, indent=1)
        f.write("\n")
    super().tearDownClass()

  def test_golden_file_covers_every_family(self):
    if UPDATE:
      return  # the file is being rewritten
    golden = load_golden()
    self.assertEqual(sorted(golden["families"]), sorted(FAMILIES))
    self.assertEqual(golden["steps"], STEPS)
    for family, values in golden["families"].items():
      for m in METRICS:
        self.assertLen(values[m], STEPS, msg=f"{family} {m}")
        self.assertTrue(np.all(np.isfinite(values[m])), msg=family)
      self.assertNotEmpty(values[PREDICTIONS], msg=family)
      self.assertTrue(np.all(np.isfinite(values[PREDICTIONS])), msg=family)

  @parameterized.parameters(*FAMILIES)
  def test_training_matches_golden_values(self, family):
    got = train_metrics(family, self.create_tempdir().full_path)
    if UPDATE:
      self.golden["families"][family] = got
      return
    want = self.golden["families"][family]
    for m in METRICS:
      np.testing.assert_allclose(
          got[m], want[m], rtol=RTOL, atol=0,
          err_msg=f"{family}: {m} per step moved from the golden values; "
          "if the change is intended, regenerate them (see the module "
          "docstring).")
    scale = np.max(np.abs(want[PREDICTIONS]))
    np.testing.assert_allclose(
        got[PREDICTIONS], want[PREDICTIONS], rtol=RTOL,
        atol=ATOL_FRACTION * scale,
        err_msg=f"{family}: the trained model's predictions moved from the "
        "golden values; if the change is intended, regenerate them (see the "
        "module docstring).")


if __name__ == "__main__":
  absltest.main()
