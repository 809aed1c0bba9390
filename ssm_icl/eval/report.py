"""The paper's Table 1 (task x model: pass / gap / fail) from stored curves.

Every mark is computed from the numbers with a criterion that the table
states next to it:

* summary error e of a curve: the mean of its curve over the last part of the
  context (points with x >= (1 - window) * x_max; by default the last half of
  the examples). For accuracy metrics e = 1 - accuracy.
* trivial error e0 of the task: the summary error of the stored zero
  predictor curve ("zero"; "chance" for accuracy), or, when none is stored,
  the analytic value: 1 for normalised squared error (the zero predictor's
  error on the regression tasks, docs/PAPER.md §2.4), 0.5 for accuracy (chance).
* best error e* of the task: the smallest e among the models in the table.
* fail (✗) if e > fail_ratio * e0: not clearly better than the trivial
  predictor (for accuracy with the defaults: accuracy < 0.6);
  gap (▲) if not failing and e > e* + gap_margin * e0: it learns, but is
  clearly behind the best model; pass (✓) otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from ssm_icl import paths
from ssm_icl.eval import icl_curves

PASS, GAP, FAIL, MISSING = "✓", "▲", "✗", "–"
TRIVIAL_CURVES = {"squared_error": "zero", "accuracy": "chance"}
ANALYTIC_TRIVIAL = {"squared_error": 1.0, "accuracy": 0.5}


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
        f"error e0: the stored zero-predictor curve (chance for accuracy), "
        f"else 1 for normalised squared error and 0.5 for accuracy. e*: the "
        f"best model's e on the task.\n"
        f"- {FAIL} fail: e > {self.fail_ratio:g} * e0 (for accuracy: "
        f"accuracy < {1 - self.fail_ratio * 0.5:g}).\n"
        f"- {GAP} gap: not failing and e > e* + {self.gap_margin:g} * e0.\n"
        f"- {PASS} pass: otherwise.")


@dataclasses.dataclass(frozen=True)
class Cell:
  """One (task, model) entry: its mark and the numbers behind it."""

  mark: str
  error: float | None = None


@dataclasses.dataclass(frozen=True)
class Row:
  """One task: the trivial and best errors, and a cell per model."""

  task: str
  metric: str
  trivial: float
  trivial_source: str
  best: float | None
  cells: dict[str, Cell]


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


def _trivial(by_model: Mapping[str, Mapping[str, Any]], metric: str,
             window: float) -> tuple[float, str]:
  """The task's trivial error e0 and where it came from."""
  curve = TRIVIAL_CURVES.get(metric)
  for results in by_model.values():
    if curve in results["curves"]:
      return summary_error(results, curve, window), f"'{curve}' curve"
  if metric not in ANALYTIC_TRIVIAL:
    raise ValueError(f"Metric {metric!r} has no analytic trivial error and "
                     f"no stored {curve!r} curve.")
  value = ANALYTIC_TRIVIAL[metric]
  return (1.0 - value if metric == "accuracy" else value), "analytic"


def build_table(results_by_task_model: Any, *, models: Sequence[str] | None
                = None, criterion: Criterion = Criterion()) -> list[Row]:
  """Computes the marks of Table 1.

  Args:
    results_by_task_model: {task: {model: results}} where `results` (from
      `evaluate` / `load_results`) holds a curve named `model`; or a list of
      results, grouped with `group_by_task`.
    models: column order (default: order of first appearance).
    criterion: the thresholds.

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
    trivial, source = _trivial(by_model, metric, criterion.window)
    best = min(errors.values())
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
      cells[model] = Cell(mark, e)
    rows.append(Row(task, metric, trivial, source, best, cells))
  return rows


def render_markdown(rows: Sequence[Row], criterion: Criterion = Criterion()
                    ) -> str:
  """Table 1 and the numbers behind it as Markdown."""
  models = list(dict.fromkeys(m for row in rows for m in row.cells))
  lines = ["# Table 1: in-context learning, pass / gap / fail", "",
           f"{PASS} learns the task on par with the best model, {GAP} learns "
           f"it with a clear gap, {FAIL} fails. Marks are computed from the "
           f"stored curves:", "", criterion.describe(), "",
           "| Task | " + " | ".join(models) + " |",
           "|---|" + "---|" * len(models)]
  for row in rows:
    lines.append(f"| {row.task} | "
                 + " | ".join(row.cells[m].mark for m in models) + " |")
  lines += ["", "## Numbers behind the marks", "",
            "Summary error e per model (mark), trivial error e0 and best e*.",
            "",
            "| Task | metric | e0 (source) | e* | "
            + " | ".join(models) + " |",
            "|---|---|---|---|" + "---|" * len(models)]
  for row in rows:
    cells = []
    for m in models:
      cell = row.cells[m]
      cells.append(MISSING if cell.error is None
                   else f"{cell.error:.4g} {cell.mark}")
    lines.append(f"| {row.task} | {row.metric} | {row.trivial:.4g} "
                 f"({row.trivial_source}) | {row.best:.4g} | "
                 + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_table(results_by_task_model: Any, path: paths.PathLike, *,
                models: Sequence[str] | None = None,
                criterion: Criterion = Criterion()) -> str:
  """Computes Table 1, writes it as Markdown to `path`, returns the text.

  Args:
    results_by_task_model: see `build_table`.
    path: output Markdown file, local or gs:// (written atomically).
    models: column order (default: order of first appearance).
    criterion: the thresholds.

  Returns:
    The Markdown text written.
  """
  rows = build_table(results_by_task_model, models=models,
                     criterion=criterion)
  text = render_markdown(rows, criterion)
  paths.write_text(path, text)
  return text
