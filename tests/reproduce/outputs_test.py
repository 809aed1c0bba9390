"""The report of a suite regenerated from run summaries alone (no training).

A fake workdir holds only what would be committed: every run's
run_summary.json (made by `summaries.make_summary` from synthetic curves
and loss logs) and each task's baselines.json.
"""

import copy
import json
import os

from absl.testing import absltest
from etils import epath

from ssm_icl.eval import icl_curves
from ssm_icl.reproduce import contrasts as contrasts_lib
from ssm_icl.reproduce import outputs
from ssm_icl.reproduce import plan as plan_lib
from ssm_icl.reproduce import runner
from ssm_icl.reproduce import summaries

_TESTDATA = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                         "testdata")


def _template(task):
  return icl_curves.load_results(
      os.path.join(_TESTDATA, f"icl_results_{task}.json"))


def _model_results(template, label, value):
  """The template's results with one model curve of constant `value`."""
  results = copy.deepcopy(template)
  curve = dict(results["curves"]["mamba"], mean=[value] * len(results["x"]))
  results["curves"] = {label: curve}
  return results


def _loss_log(run, falling):
  """A training log: flat after half the steps, or still falling."""
  steps = run.config.train.steps
  every = run.config.train.log_every
  records = []
  for s in range(every, steps + 1, every):
    loss = 1.0 - 0.5 * s / steps if falling else 0.5 + 0.5 * max(
        0.0, 1 - 2 * s / steps)
    records.append({"step": s, "train/loss": loss})
  return records


def _write_fake_run(workdir, run, template, value, falling=False):
  marker = {"step": run.config.train.steps, "params": 1000,
            "train_flops": 1e9, "eval_flops_per_prompt": 1e5,
            "train_wall_s": 10.0, "eval_wall_s": 1.0,
            "final_train_loss": 0.5}
  summary = summaries.make_summary(
      run, marker, _model_results(template, run.label, value),
      _loss_log(run, falling))
  summaries.write_summary(os.path.join(workdir, run.relpath), summary)


def _write_baselines(workdir, group, template):
  baselines = copy.deepcopy(template)
  baselines["curves"] = {n: c for n, c in template["curves"].items()
                         if c["kind"] == icl_curves.KIND_BASELINE}
  icl_curves.save_results(baselines,
                          os.path.join(workdir, group, runner.BASELINES))


class ReportFromSummariesTest(absltest.TestCase):

  def test_mini_table_marks_converged_runs_only(self):
    workdir = self.create_tempdir().full_path
    suite = plan_lib.suite_config("mini")
    runs = plan_lib.plan_runs(suite, tasks=["linear_regression"],
                              families=["transformer", "mamba",
                                        "mambaformer"])
    template = _template("linear_regression")
    _write_baselines(workdir, "linear_regression", template)
    for run, value, falling in zip(runs, (0.02, 0.3, 0.01),
                                   (False, True, False)):
      _write_fake_run(workdir, run, template, value, falling)
    # Only summaries and baselines: nothing to resume or load from.
    files = {name for _, _, names in os.walk(workdir) for name in names}
    self.assertEqual(files, {summaries.SUMMARY, runner.BASELINES})
    summary = outputs.write_outputs(workdir, runs, "mini")
    self.assertLen(summary["runs"], 3)
    by_label = {r["label"]: r for r in summary["runs"]}
    self.assertEqual(by_label["mamba"]["convergence"]["status"],
                     "not converged")
    self.assertEqual(by_label["transformer"]["convergence"]["status"],
                     "converged")
    self.assertNotIn("train_loss", by_label["mamba"])  # kept small
    table = (epath.Path(workdir) / "table1.md").read_text()
    self.assertIn("not converged (-", table)
    self.assertIn("| ✓ 0.02 (least_squares 1.55e-12) |", table)
    self.assertIn("## Linear regression against least squares", table)
    comparison = (epath.Path(workdir) / "comparison.md").read_text()
    self.assertIn("## Not marked: the run has not converged (1)", comparison)
    for name in ("loss_curves.png", "curves.png", "flops.png",
                 "summary.json"):
      self.assertTrue((epath.Path(workdir) / name).exists(), msg=name)

  def test_contrasts_suite_writes_every_seed_and_the_verdicts(self):
    workdir = self.create_tempdir().full_path
    suite = plan_lib.suite_config("contrasts")
    runs = plan_lib.plan_runs(suite, tasks=["sparse_parity"],
                              families=["transformer", "mamba"])
    template = _template("sparse_parity")
    _write_baselines(workdir, "sparse_parity", template)
    accuracy = {"transformer": (0.6, 0.6, 0.97), "mamba": (0.95,) * 3}
    for run in runs:
      _write_fake_run(workdir, run, template,
                      accuracy[run.family][run.config.train.seed])
    wanted = [c for c in suite.contrasts
              if (c["task"], c["better"]) == ("sparse_parity", "mamba")]
    outputs.write_outputs(workdir, runs, "contrasts", contrasts=wanted)
    report = json.loads((epath.Path(workdir) / "contrasts.json").read_text())
    (mamba,) = report["contrasts"]
    self.assertEqual(mamba["verdict"], contrasts_lib.NOT_CLAIMED)
    self.assertEqual(mamba["reason"], "fails in seed 2")
    spread = report["runs"]["sparse_parity"]["transformer"]
    self.assertAlmostEqual(spread["min"], 0.03)
    self.assertAlmostEqual(spread["max"], 0.4)
    text = (epath.Path(workdir) / "contrasts.md").read_text()
    self.assertIn("| sparse_parity | transformer | 0.4 | 0.4 | 0.03 |", text)
    self.assertIn("| mamba beats transformer on sparse_parity | not claimed "
                  "(fails in seed 2) | 0: 0.05 vs 0.4, 1: 0.05 vs 0.4, 2: "
                  "0.05 vs 0.03 |", text)

  def test_missing_summary_is_built_from_the_run_files(self):
    workdir = self.create_tempdir().full_path
    (run,) = plan_lib.plan_runs(plan_lib.suite_config("mini"),
                                tasks=["linear_regression"],
                                families=["mamba"])
    run_dir = os.path.join(workdir, run.relpath)
    results = _model_results(_template("linear_regression"), run.label, 0.1)
    icl_curves.save_results(results, os.path.join(run_dir, runner.RESULTS))
    runner.write_json(os.path.join(run_dir, runner.MARKER),
                      {"step": 4000, "train_wall_s": 3.0})
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
      for record in _loss_log(run, falling=False):
        f.write(json.dumps(record) + "\n")
    summary = outputs.load_summary(workdir, run)
    self.assertEqual(summary["convergence"]["status"], "converged")
    self.assertEqual(summary["train_wall_s"], 3.0)
    self.assertTrue(os.path.exists(os.path.join(run_dir, summaries.SUMMARY)))
    self.assertEqual(summaries.read_summary(run_dir)["results"]["x"],
                     results["x"])


if __name__ == "__main__":
  absltest.main()
