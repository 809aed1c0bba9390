"""The paper's Table 1 (task x model: pass / gap / fail) from stored curves.

Every mark is computed from the numbers with a criterion that the table
states next to it:

* summary error e of a curve: the mean of its curve over the last part of the
  context (points with x >= (1 - window) * x_max; by default the last half of
  the examples). For accuracy metrics e = 1 - accuracy.
* trivial error e0 of the task: the summary error of the best predictor that
  ignores the in-context examples (`baselines.NO_CONTEXT`: the zero predictor
  on the squared-error tasks, the Bayes vote over all subsets on sparse
  parity), from its stored curve, or when none is stored from
  `baselines.no_context_level` (1 for normalised squared error, the exact
  no-context accuracy for parity).
* best error e* of the task: the smallest e among the models in the table.
* fail (✗) if e > fail_ratio * e0: not clearly better than the best
  no-context predictor; gap (▲) if not failing and e > e* + gap_margin * e0:
  it learns, but is clearly behind the best model; pass (✓) otherwise.
* a run that has not converged (`ssm_icl.eval.convergence`, when its status
  is given) gets no mark: its cell says why instead.

Each cell also shows e and the best baseline's e on the same prompts, and
for linear regression the report checks every model against least squares
at 2d examples (`LSQ_MARGIN`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from ssm_icl import paths
from ssm_icl.baselines import registry as baselines_registry
from ssm_icl.eval import convergence as convergence_lib
from ssm_icl.eval import icl_curves

PASS, GAP, FAIL, MISSING = "✓", "▲", "✗", "–"
# The mark of a run that has not converged: no verdict on it.
UNMARKED = "n/c"
# On linear regression every model must end within LSQ_MARGIN of least
# squares' error at 2d examples (d: the task's final dims), where least
# squares has just become exact on noiseless prompts.
LSQ_MARGIN = 0.05
LSQ_CURVE = "least_squares"


@dataclasses.dataclass(frozen=True)
class Criterion:
  """Thresholds of the marks (see the module docstring).

  Attributes:
    fail_ratio: fail if e > fail_ratio * e0; in (0, 1].
    gap_margin: gap if e > e* + gap_margin * e0; >= 0.
    window: summarise the last `window` fraction of the x range; in (0, 1].
  """

  fail_ratio: float = 0.8
  gap_margin: float = 0.1
  window: float = 0.5

  def __post_init__(self):
    if not 0 < self.fail_ratio <= 1:
      raise ValueError(
          f"Criterion.fail_ratio={self.fail_ratio} must be in (0, 1].")
    if not self.gap_margin >= 0:
      raise ValueError(
          f"Criterion.gap_margin={self.gap_margin} must be >= 0.")
    if not 0 < self.window <= 1:
      raise ValueError(f"Criterion.window={self.window} must be in (0, 1].")

  def describe(self) -> str:
    """The criterion in words, with its numbers, for the table's header."""
    return (
        f"Summary error e: the mean of a curve over x >= "
        f"{1 - self.window:g} * x_max (the last {self.window:.0%} of the "
        f"in-context examples); for accuracy, e = 1 - accuracy. Trivial "
        f"error e0: e of the best predictor that ignores the in-context "
        f"examples (the zero predictor; for sparse parity the Bayes vote "
        f"over all subsets), from its stored curve, else computed "
        f"(normalised squared error 1; parity exactly). e*: the best "
        f"model's e on the task.\n"
        f"- {FAIL} fail: e > {self.fail_ratio:g} * e0 (not clearly better "
        f"than ignoring the examples).\n"
        f"- {GAP} gap: not failing and e > e* + {self.gap_margin:g} * e0.\n"
        f"- {PASS} pass: otherwise.")


@dataclasses.dataclass(frozen=True)
class Cell:
  """One (task, model) entry: its mark and the numbers behind it."""

  mark: str
  error: float | None = None
  note: str | None = None  # shown instead of the mark (not converged)

  @property
  def shown(self) -> str:
    return self.note or self.mark


@dataclasses.dataclass(frozen=True)
class Row:
  """One task: the trivial and best errors, and a cell per model."""

  task: str
  metric: str
  trivial: float
  trivial_source: str
  best: float | None
  cells: dict[str, Cell]
  best_baseline: str | None = None
  best_baseline_error: float | None = None


def summary_error(results: Mapping[str, Any], name: str,
                  window: float = 0.5) -> float:
  """Summary error of curve `name` (see the module docstring).

  Raises:
    ValueError: if the curve is missing or has no value in the window.
  """
  if name not in results["curves"]:
    raise ValueError(f"Curve {name!r} is not in the results of task "
                     f"{results['task']!r}; it holds "
                     f"{sorted(results['curves'])}.")
  x = np.asarray(results["x"], np.float64)
  mean = np.array([np.nan if v is None else v
                   for v in results["curves"][name]["mean"]], np.float64)
  in_window = (x >= (1 - window) * x.max()) & np.isfinite(mean)
  if not in_window.any():
    raise ValueError(f"Curve {name!r} of task {results['task']!r} has no "
                     f"scored point in the last {window:.0%} of x.")
  value = float(mean[in_window].mean())
  return 1.0 - value if results["metric"] == "accuracy" else value


def group_by_task(results_list: Sequence[Mapping[str, Any]]
                  ) -> dict[str, dict[str, Mapping[str, Any]]]:
  """{task: {model: results}} for every model curve in `results_list`."""
  grouped: dict[str, dict[str, Mapping[str, Any]]] = {}
  for results in results_list:
    icl_curves.validate_results(results)
    for name, curve in results["curves"].items():
      if curve["kind"] == icl_curves.KIND_MODEL:
        grouped.setdefault(results["task"], {})[name] = results
  return grouped


def _trivial(task: str, by_model: Mapping[str, Mapping[str, Any]],
             metric: str, window: float) -> tuple[float, str]:
  """The task's trivial error e0 and where it came from."""
  curve = baselines_registry.NO_CONTEXT.get(task.split("@")[0])
  for results in by_model.values():
    if curve in results["curves"]:
      return summary_error(results, curve, window), f"'{curve}' curve"
  results = next(iter(by_model.values()))
  value = baselines_registry.no_context_level(
      results["task"], results.get("task_config", {}), metric)
  return (1.0 - value if metric == "accuracy" else value), "analytic"


def best_baseline(by_model: Mapping[str, Mapping[str, Any]],
                  window: float) -> tuple[str | None, float | None]:
  """(name, e) of the baseline curve with the smallest summary error."""
  errors = {}
  for results in by_model.values():
    for name, curve in results["curves"].items():
      if curve["kind"] == icl_curves.KIND_BASELINE and name not in errors:
        try:
          errors[name] = summary_error(results, name, window)
        except ValueError:  # a curve with no point in the window
          continue
  if not errors:
    return None, None
  name = min(errors, key=errors.get)
  return name, errors[name]


def value_at(results: Mapping[str, Any], name: str, x: int) -> float | None:
  """Curve `name`'s mean at x examples, or None if x is not evaluated."""
  if x not in results["x"]:
    return None
  value = results["curves"][name]["mean"][results["x"].index(x)]
  return None if value is None else float(value)


def least_squares_check(results_by_task_model: Mapping[str, Mapping[
    str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
  """Every model on linear regression against least squares at 2d examples.

  Returns:
    One dict per (linear-regression group, model): "task", "model", "x"
    (= 2d), "error", "least_squares", "ok" (error <= least_squares +
    LSQ_MARGIN; None when either is not evaluated at x).
  """
  checks = []
  for task, by_model in results_by_task_model.items():
    if task.split("@")[0] != "linear_regression":
      continue
    for model, results in by_model.items():
      x = 2 * int(results.get("task_config", {}).get("n_dims", 0))
      error = value_at(results, model, x)
      lsq = (value_at(results, LSQ_CURVE, x)
             if LSQ_CURVE in results["curves"] else None)
      ok = None if error is None or lsq is None else error <= lsq + LSQ_MARGIN
      checks.append({"task": task, "model": model, "x": x, "error": error,
                     "least_squares": lsq, "ok": ok})
  return checks


def least_squares_markdown(checks: Sequence[Mapping[str, Any]]) -> str:
  """The least-squares check as a Markdown section ("" without checks)."""
  if not checks:
    return ""
  fmt = lambda v: MISSING if v is None else f"{v:.4g}"
  verdict = {True: PASS, False: FAIL, None: "not evaluated at 2d"}
  lines = ["## Linear regression against least squares", "",
           f"Rule: every model's error at 2d examples (d: the task's final "
           f"dims) is within {LSQ_MARGIN:g} of least squares' error there.",
           "", "| Task | model | x = 2d | e(2d) | least squares | within |",
           "|---|---|---|---|---|---|"]
  for c in checks:
    lines.append(f"| {c['task']} | {c['model']} | {c['x']} | "
                 f"{fmt(c['error'])} | {fmt(c['least_squares'])} | "
                 f"{verdict[c['ok']]} |")
  held = all(c["ok"] for c in checks)
  lines += ["", "The rule " + ("holds for every model." if held else
                               "does NOT hold for every model.")]
  return "\n".join(lines) + "\n"


def build_table(results_by_task_model: Any, *, models: Sequence[str] | None
                = None, criterion: Criterion = Criterion(),
                convergence: Mapping[str, Mapping[str, Mapping[str, Any]]]
                | None = None) -> list[Row]:
  """Computes the marks of Table 1.

  Args:
    results_by_task_model: {task: {model: results}} where `results` (from
      `evaluate` / `load_results`) holds a curve named `model`; or a list of
      results, grouped with `group_by_task`.
    models: column order (default: order of first appearance).
    criterion: the thresholds.
    convergence: {task: {model: `Convergence.assess` result}}; a model
      whose status is not "converged" gets `UNMARKED` and a note. Models
      absent from it are marked as usual.

  Returns:
    One `Row` per task, in input order.
  """
  if not isinstance(results_by_task_model, Mapping):
    results_by_task_model = group_by_task(results_by_task_model)
  if not results_by_task_model:
    raise ValueError("No results: pass {task: {model: results}} or a list "
                     "of evaluate() results with model curves.")
  if models is None:
    models = list(dict.fromkeys(
        m for by_model in results_by_task_model.values() for m in by_model))
  rows = []
  for task, by_model in results_by_task_model.items():
    if not by_model:
      raise ValueError(f"Task {task!r} has no model results.")
    for results in by_model.values():
      icl_curves.validate_results(results, source=f"results of {task!r}")
    metric = next(iter(by_model.values()))["metric"]
    errors = {m: summary_error(r, m, criterion.window)
              for m, r in by_model.items()}
    trivial, source = _trivial(task, by_model, metric, criterion.window)
    best = min(errors.values())
    statuses = (convergence or {}).get(task, {})
    cells = {}
    for model in models:
      if model not in errors:
        cells[model] = Cell(MISSING)
        continue
      e = errors[model]
      if e > criterion.fail_ratio * trivial:
        mark = FAIL
      elif e > best + criterion.gap_margin * trivial:
        mark = GAP
      else:
        mark = PASS
      note = convergence_lib.mark_text(statuses.get(model))
      cells[model] = Cell(UNMARKED if note else mark, e, note)
    rows.append(Row(task, metric, trivial, source, best, cells,
                    *best_baseline(by_model, criterion.window)))
  return rows


def _cell_text(cell: Cell, row: Row) -> str:
  """"mark e (best baseline e_b)" for Table 1."""
  if cell.error is None:
    return cell.shown
  text = f"{cell.shown} {cell.error:.3g}"
  if row.best_baseline is not None:
    text += f" ({row.best_baseline} {row.best_baseline_error:.3g})"
  return text


def render_markdown(rows: Sequence[Row], criterion: Criterion = Criterion(),
                    convergence: convergence_lib.Convergence | None = None,
                    lsq_checks: Sequence[Mapping[str, Any]] = ()) -> str:
  """Table 1 and the numbers behind it as Markdown.

  Args:
    rows: from `build_table`.
    criterion: the thresholds (stated in the text).
    convergence: the convergence criterion, stated when given.
    lsq_checks: from `least_squares_check`, shown when given.
  """
  models = list(dict.fromkeys(m for row in rows for m in row.cells))
  lines = ["# Table 1: in-context learning, pass / gap / fail", "",
           f"{PASS} learns the task on par with the best model, {GAP} learns "
           f"it with a clear gap, {FAIL} fails. Marks are computed from the "
           f"stored curves:", "", criterion.describe(), ""]
  if convergence is not None:
    lines += [convergence.describe(), ""]
  lines += ["Each cell: mark, the model's e, and in parentheses the best "
            "baseline on the same prompts with its e.", "",
            "| Task | " + " | ".join(models) + " |",
            "|---|" + "---|" * len(models)]
  for row in rows:
    lines.append(f"| {row.task} | "
                 + " | ".join(_cell_text(row.cells[m], row) for m in models)
                 + " |")
  lines += ["", "## Numbers behind the marks", "",
            "Summary error e per model (mark), trivial error e0, best model "
            "e* and best baseline.", "",
            "| Task | metric | e0 (source) | e* | best baseline | "
            + " | ".join(models) + " |",
            "|---|---|---|---|---|" + "---|" * len(models)]
  for row in rows:
    cells = []
    for m in models:
      cell = row.cells[m]
      cells.append(MISSING if cell.error is None
                   else f"{cell.error:.4g} {cell.shown}")
    baseline = (MISSING if row.best_baseline is None else
                f"{row.best_baseline} {row.best_baseline_error:.4g}")
    lines.append(f"| {row.task} | {row.metric} | {row.trivial:.4g} "
                 f"({row.trivial_source}) | {row.best:.4g} | {baseline} | "
                 + " | ".join(cells) + " |")
  text = "\n".join(lines) + "\n"
  lsq = least_squares_markdown(lsq_checks)
  return text + ("\n" + lsq if lsq else "")


def write_table(results_by_task_model: Any, path: paths.PathLike, *,
                models: Sequence[str] | None = None,
                criterion: Criterion = Criterion(),
                convergence: Mapping[str, Mapping[str, Mapping[str, Any]]]
                | None = None,
                convergence_criterion: convergence_lib.Convergence | None
                = None) -> str:
  """Computes Table 1, writes it as Markdown to `path`, returns the text.

  Args:
    results_by_task_model: see `build_table`.
    path: output Markdown file, local or gs:// (written atomically).
    models: column order (default: order of first appearance).
    criterion: the thresholds.
    convergence: per-run convergence (see `build_table`).
    convergence_criterion: the criterion behind `convergence`, stated.

  Returns:
    The Markdown text written.
  """
  if not isinstance(results_by_task_model, Mapping):
    results_by_task_model = group_by_task(results_by_task_model)
  rows = build_table(results_by_task_model, models=models,
                     criterion=criterion, convergence=convergence)
  lsq = least_squares_check({
      t: {m: r for m, r in by_model.items() if models is None or m in models}
      for t, by_model in results_by_task_model.items()})
  text = render_markdown(rows, criterion, convergence_criterion, lsq)
  paths.write_text(path, text)
  return text
