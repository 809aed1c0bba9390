"""Tests for ssm_icl/eval/report.py, computed from tests/testdata results."""

import copy
import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from ssm_icl.eval import icl_curves
from ssm_icl.eval import report

_TESTDATA = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                         "testdata")
_TASKS = ("linear_regression", "decision_tree", "sparse_parity")
_MODELS = ("transformer", "mamba", "mambaformer")


def _load(task):
  return icl_curves.load_results(
      os.path.join(_TESTDATA, f"icl_results_{task}.json"))


def _expected_marks(results, fail_ratio=0.8, gap_margin=0.1):
  """The criterion, recomputed independently from the stored numbers."""
  x = np.array(results["x"])
  window = x >= 0.5 * x.max()
  acc = results["metric"] == "accuracy"

  def summary(name):
    value = np.mean(np.array(results["curves"][name]["mean"])[window])
    return 1 - value if acc else value

  # Trivial: the zero curve, or for parity (no stored no-context curve) the
  # exact no-context Bayes accuracy for d = 5, k = 2 (d = 5: 0.625).
  e0 = 1 - 0.625 if acc else summary("zero")
  errors = {m: summary(m) for m in _MODELS}
  best = min(errors.values())
  marks = {}
  for m, e in errors.items():
    if e > fail_ratio * e0:
      marks[m] = "✗"
    elif e > best + gap_margin * e0:
      marks[m] = "▲"
    else:
      marks[m] = "✓"
  return marks, errors


class Table1Test(parameterized.TestCase):

  def test_marks_follow_the_stated_criterion(self):
    results = [_load(t) for t in _TASKS]
    path = os.path.join(self.create_tempdir().full_path, "out", "table1.md")
    text = report.write_table(results, path)
    with open(path, encoding="utf-8") as f:
      self.assertEqual(f.read(), text)
    # The criterion is stated in the output.
    self.assertIn("fail: e > 0.8 * e0 (not clearly better than ignoring the "
                  "examples)", text)
    self.assertIn("gap: not failing and e > e* + 0.1 * e0", text)
    self.assertIn("the last 50% of the in-context examples", text)
    all_marks = set()
    for task, result in zip(_TASKS, results):
      marks, errors = _expected_marks(result)
      best_name, best_e = report.best_baseline({"m": result}, 0.5)
      row = f"| {task} | " + " | ".join(
          f"{marks[m]} {errors[m]:.3g} ({best_name} {best_e:.3g})"
          for m in _MODELS) + " |"
      self.assertIn(row, text)
      for m in _MODELS:  # The numbers behind the marks are printed too.
        self.assertIn(f"{errors[m]:.4g} {marks[m]}", text)
      all_marks.update(marks.values())
    # The stored results exercise every mark.
    self.assertEqual(all_marks, {"✓", "▲", "✗"})

  def test_build_table_rows(self):
    rows = report.build_table({t: {m: _load(t) for m in _MODELS}
                               for t in _TASKS})
    self.assertEqual([r.task for r in rows], list(_TASKS))
    parity = rows[2]
    self.assertEqual(parity.metric, "accuracy")
    self.assertEqual(parity.trivial_source, "analytic")
    self.assertAlmostEqual(parity.trivial, 1 - 0.625)
    # Bayes-optimal is the best baseline on parity, and it is exact.
    self.assertEqual(parity.best_baseline, "bayes_optimal")
    marks, errors = _expected_marks(_load("sparse_parity"))
    for m in _MODELS:
      self.assertEqual(parity.cells[m].mark, marks[m])
      self.assertAlmostEqual(parity.cells[m].error, errors[m])
    self.assertAlmostEqual(parity.best, min(errors.values()))

  def test_analytic_trivial_error_without_a_zero_curve(self):
    results = copy.deepcopy(_load("linear_regression"))
    del results["curves"]["zero"]
    (row,) = report.build_table([results])
    self.assertEqual((row.trivial, row.trivial_source), (1.0, "analytic"))
    self.assertIn("| 1 (analytic) |", report.render_markdown([row]))

  def test_model_at_the_no_context_level_fails(self):
    # The case: accuracy 0.613 on d = 6, k = 2 parity, where the
    # Bayes vote that ignores the examples reaches 0.594, was marked pass
    # by a chance-level threshold (accuracy < 0.6).
    results = copy.deepcopy(_load("sparse_parity"))
    results["task_config"]["n_dims"] = 6
    n = len(results["x"])
    results["curves"]["mamba"]["mean"] = [0.613] * n
    results["curves"]["no_context"] = dict(
        results["curves"]["chance"], mean=[0.594] * n)
    (row,) = report.build_table([results])
    self.assertEqual(row.trivial_source, "'no_context' curve")
    self.assertAlmostEqual(row.trivial, 0.406)
    self.assertEqual(row.cells["mamba"].mark, "✗")

  def test_unconverged_runs_get_no_mark(self):
    results = _load("linear_regression")
    status = {"status": "not converged", "fall": 0.031}
    rows = report.build_table(
        {"linear_regression": {m: results for m in _MODELS}},
        convergence={"linear_regression": {"mamba": status}})
    cell = rows[0].cells["mamba"]
    self.assertEqual((cell.mark, cell.shown),
                     ("n/c", "not converged (-3.1%)"))
    text = report.render_markdown(rows)
    self.assertIn("not converged (-3.1%) ", text)

  def test_least_squares_check(self):
    results = copy.deepcopy(_load("linear_regression"))
    x = results["x"].index(10)  # d = 5: 2d = 10 examples
    lsq = results["curves"]["least_squares"]["mean"][x]
    results["curves"]["mamba"]["mean"][x] = lsq + 0.04
    results["curves"]["transformer"]["mean"][x] = lsq + 0.06
    checks = report.least_squares_check(
        {"linear_regression": {m: results for m in _MODELS}})
    ok = {c["model"]: c["ok"] for c in checks}
    self.assertEqual(ok["mamba"], True)
    self.assertEqual(ok["transformer"], False)
    self.assertEqual({c["x"] for c in checks}, {10})
    text = report.least_squares_markdown(checks)
    self.assertIn("within 0.05 of least squares' error there", text)
    self.assertIn("does NOT hold for every model", text)
    path = os.path.join(self.create_tempdir().full_path, "t.md")
    written = report.write_table(
        {"linear_regression": {m: results for m in _MODELS}}, path)
    self.assertIn("## Linear regression against least squares", written)

  def test_missing_models_and_column_order(self):
    by_task = {"linear_regression": {"mamba": _load("linear_regression")},
               "sparse_parity": {m: _load("sparse_parity") for m in _MODELS}}
    rows = report.build_table(by_task, models=["mambaformer", "mamba"])
    self.assertEqual(list(rows[0].cells), ["mambaformer", "mamba"])
    self.assertEqual(rows[0].cells["mambaformer"].mark, "–")
    text = report.render_markdown(rows)
    self.assertIn("| Task | mambaformer | mamba |", text)

  def test_stricter_criterion_changes_marks(self):
    results = [_load("linear_regression")]
    strict = report.Criterion(fail_ratio=0.1, gap_margin=0.0)
    (row,) = report.build_table(results, criterion=strict)
    marks, _ = _expected_marks(results[0], fail_ratio=0.1, gap_margin=0.0)
    self.assertEqual({m: c.mark for m, c in row.cells.items()}, marks)

  def test_group_by_task_keeps_model_curves_only(self):
    grouped = report.group_by_task([_load("decision_tree")])
    self.assertEqual(list(grouped), ["decision_tree"])
    self.assertEqual(list(grouped["decision_tree"]), list(_MODELS))

  @parameterized.parameters(
      (dict(fail_ratio=0.0), r"fail_ratio=0.0 must be in \(0, 1\]"),
      (dict(gap_margin=-0.1), r"gap_margin=-0.1 must be >= 0"),
      (dict(window=1.5), r"window=1.5 must be in \(0, 1\]"))
  def test_rejects_bad_criterion(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      report.Criterion(**kwargs)

  def test_rejects_empty_results(self):
    with self.assertRaisesRegex(ValueError, r"No results"):
      report.build_table([])

  def test_summary_error_rejects_unknown_curve(self):
    with self.assertRaisesRegex(ValueError, r"Curve 's4' is not in the "
                                r"results of task 'sparse_parity'"):
      report.summary_error(_load("sparse_parity"), "s4")

  def test_summary_error_rejects_unscored_window(self):
    results = copy.deepcopy(_load("sparse_parity"))
    curve = results["curves"]["mamba"]["mean"]
    curve[len(curve) // 2:] = [None] * (len(curve) - len(curve) // 2)
    with self.assertRaisesRegex(ValueError, r"no scored point in the last "
                                r"50% of x"):
      report.summary_error(results, "mamba")


if __name__ == "__main__":
  absltest.main()
