"""The outputs of a suite: merged curves, figures, Table 1, paper comparison.

From the finished runs' summaries (`summaries`: run_summary.json, built
from DONE.json, eval/results.json and metrics.jsonl where missing) and the
baselines of each task, `write_outputs` writes:

  <group>/results.json, <group>/curves.png|svg  models and baselines
  curves.png|svg          all tasks in one grid
  table.md                Table 1 over every model of the suite
  table1.md               Table 1 over the paper's three models only (the
                          best error e* is taken among those three, as in
                          the paper's table)
  comparison.md           table1.md's marks next to the paper's Table 1
  flops.png|svg           final error against analytic training FLOPs, one
                          line per family (points: sweep values), the
                          paper's matched-FLOPs view
  loss_curves.png|svg     smoothed training loss of every run, with its
                          convergence verdict (`ssm_icl.eval.convergence`)
  contrasts.md|json       for a suite with `contrasts`: every seed, the
                          spread and the verdicts (`contrasts`)
  summary.json            per run: steps, params, FLOPs, wall times, error,
                          convergence

Marks go only to converged runs: the others show their verdict instead.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Mapping, Sequence

from etils import epath

from ssm_icl import errors
from ssm_icl import paths
from ssm_icl.eval import icl_curves
from ssm_icl.eval import plots
from ssm_icl.eval import report
from ssm_icl.reproduce import contrasts as contrasts_lib
from ssm_icl.reproduce import plan as plan_lib
from ssm_icl.reproduce import runner
from ssm_icl.reproduce import summaries
from ssm_icl.train import metrics as metrics_lib

# The paper's Table 1 (docs/PAPER.md §9.1; cell symbols from recollection
# of the paper, see there).
PAPER_MODELS = ("transformer", "mamba", "mambaformer")
# Palette size of the small PNGs written for the docs (`figures_dir`).
_DOCS_COLORS = 64
PAPER_TABLE1 = {
    "linear_regression": "✓✓✓",
    "sparse_linear_regression": "✓✓✓",
    "relu_2nn_regression": "✓✓✓",
    "decision_tree": "✓▲✓",
    "ortho_outlier_regression": "✓▲✓",
    "many_outlier_regression": "▲✓✓",
    "sparse_parity": "✗✓✓",
    "cot_io": "✓✓✓",
    "vector_mqar": "✓✗✓",
}


def paper_mark(task: str, family: str) -> str | None:
  """The paper's Table 1 mark of (task, family), or None if not in it."""
  if task not in PAPER_TABLE1 or family not in PAPER_MODELS:
    return None
  return PAPER_TABLE1[task][PAPER_MODELS.index(family)]


def load_summary(workdir: paths.PathLike, run: plan_lib.Run
                 ) -> dict[str, Any] | None:
  """The run's summary, built and written from its files if missing.

  Returns:
    The summary (`summaries`), or None if the run has not finished.
  """
  run_dir = epath.Path(workdir) / run.relpath
  summary = summaries.read_summary(run_dir)
  if summary is not None:
    return summary
  marker_path = run_dir / runner.MARKER
  if not marker_path.exists():
    return None
  summary = summaries.make_summary(
      run, runner.read_json(marker_path),
      icl_curves.load_results(run_dir / runner.RESULTS),
      metrics_lib.read_metrics(run_dir))
  summaries.write_summary(run_dir, summary)
  return summary


def collect(workdir: paths.PathLike, runs: Sequence[plan_lib.Run]
            ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
  """Merged results per group and the summaries of the finished runs.

  Returns:
    ({group: results with every finished model's curve and the baselines},
    [summary of each finished run, in plan order, with its convergence
    recomputed by the current criterion]).
  """
  workdir = epath.Path(workdir)
  merged: dict[str, dict[str, Any]] = {}
  finished = []
  for run in runs:
    summary = load_summary(workdir, run)
    if summary is None:
      continue
    summary["convergence"] = summaries.assess(summary)
    results = summary["results"]
    finished.append(summary)
    if run.group not in merged:
      merged[run.group] = copy.deepcopy(results)
      merged[run.group]["curves"] = {}
      merged[run.group].pop("step", None)
    target = merged[run.group]
    if results["x"] != target["x"]:
      raise errors.UserError(
          f"{run.relpath}: evaluated at x={results['x']}, but "
          f"the other runs of {run.group!r} at {target['x']}.")
    target["curves"].update(results["curves"])
  for group, results in merged.items():
    path = workdir / group / runner.BASELINES
    if path.exists():
      baselines = icl_curves.load_results(path)
      if baselines["x"] == results["x"]:
        for name, curve in baselines["curves"].items():
          results["curves"].setdefault(name, curve)
  return merged, finished


def comparison_markdown(rows: Sequence[report.Row]) -> str:
  """Measured Table 1 marks beside the paper's, with the disagreements."""
  lines = ["# Measured Table 1 against the paper", "",
           "Each cell: measured mark / paper mark (docs/PAPER.md §9.1). "
           "Marks as defined in table1.md.", "",
           "| Task | " + " | ".join(PAPER_MODELS) + " |",
           "|---|" + "---|" * len(PAPER_MODELS)]
  disagreements, unmarked = [], []
  for row in rows:
    cells = []
    for family in PAPER_MODELS:
      cell = row.cells.get(family)
      measured = report.MISSING if cell is None else cell.mark
      paper = paper_mark(row.task.split("@")[0], family) or report.MISSING
      cells.append(f"{measured} / {paper}")
      if measured == report.UNMARKED:
        unmarked.append(f"- {row.task}, {family}: {cell.note}.")
      elif (measured != report.MISSING and paper != report.MISSING
            and measured != paper):
        disagreements.append(
            f"- {row.task}, {family}: measured {measured} (e = "
            f"{cell.error:.4g}, best {row.best:.4g}, trivial "
            f"{row.trivial:.4g}), paper {paper}.")
    lines.append(f"| {row.task} | " + " | ".join(cells) + " |")
  lines += ["", f"## Disagreements ({len(disagreements)})", ""]
  lines += disagreements or ["None."]
  if unmarked:
    lines += ["", f"## Not marked: the run has not converged "
              f"({len(unmarked)})", "", *unmarked]
  return "\n".join(lines) + "\n"


def plot_flops(points: Sequence[Mapping[str, Any]],
               path_stem: paths.PathLike, *,
               dpi: int = 120, svg: bool = True,
               palette_colors: int | None = None) -> tuple[str, ...]:
  """Final error against training FLOPs, one panel per task.

  Args:
    points: dicts with "group", "family", "label", "train_flops", "error".
    path_stem: output path without extension.
    dpi, svg, palette_colors: how to write it (`plots.save_figure`).

  Returns:
    The paths written (png, then svg).
  """
  groups = list(dict.fromkeys(p["group"] for p in points))
  fig, panels = plots.panel_grid(len(groups))
  for ax, group in zip(panels, groups):
    colours = itertools.cycle([f"C{j}" for j in range(10)])
    mine = [p for p in points if p["group"] == group]
    for family in dict.fromkeys(p["family"] for p in mine):
      line = sorted((p for p in mine if p["family"] == family),
                    key=lambda p: p["train_flops"])
      ax.plot([p["train_flops"] for p in line], [p["error"] for p in line],
              marker="o", color=next(colours), label=family)
      if len(line) > 1:
        for p in line:
          ax.annotate(p["label"].partition("@")[2], (p["train_flops"],
                                                      p["error"]),
                      fontsize="x-small")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (analytic)")
    ax.set_ylabel("final-half error")
    ax.set_title(group)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", frameon=False)
  fig.tight_layout()
  return plots.save_figure(fig, path_stem, dpi=dpi, svg=svg,
                           palette_colors=palette_colors)


def write_outputs(workdir: paths.PathLike, runs: Sequence[plan_lib.Run],
                  suite_name: str = "", *, figures_dir: str | None = None,
                  contrasts: Sequence[Mapping[str, str]] | None = None
                  ) -> dict[str, Any]:
  """Writes the merged curves, figures, tables and summary of a suite.

  Args:
    workdir: the suite's directory (local or gs://).
    runs: the planned runs (only finished ones are reported).
    suite_name: for titles.
    figures_dir: if set, also write small PNGs there for the docs:
      <suite>_curves.png (every task), <suite>_flops.png and
      <suite>_loss_curves.png.
    contrasts: [{"task", "better", "worse"}] to judge across the runs'
      seeds (contrasts.md, contrasts.json).

  Returns:
    The summary dict written to summary.json (empty "runs" when nothing has
    finished; then nothing else is written).
  """
  workdir = epath.Path(workdir)
  merged, finished = collect(workdir, runs)
  summary: dict[str, Any] = {"suite": suite_name, "runs": finished,
                             "n_planned": len(runs)}
  if not finished:
    return summary
  labels = list(dict.fromkeys(m["label"] for m in finished))
  for group, results in merged.items():
    icl_curves.save_results(results, workdir / group / "results.json")
    plots.plot_curves(results, workdir / group / "curves",
                      title=f"{group} ({suite_name})")
  plots.plot_grid(list(merged.values()), workdir / "curves")
  by_task = {g: {m["label"]: merged[g] for m in finished if m["group"] == g}
             for g in merged}
  status = {g: {m["label"]: m["convergence"] for m in finished
                if m["group"] == g} for g in merged}
  table_args = {"convergence": status,
                "convergence_criterion": summaries.CRITERION}
  report.write_table(by_task, workdir / "table.md", models=labels,
                     **table_args)
  paper_only = {g: {m: r for m, r in by_model.items() if m in PAPER_MODELS}
                for g, by_model in by_task.items()}
  paper_only = {g: v for g, v in paper_only.items() if v}
  if paper_only:
    report.write_table(paper_only, workdir / "table1.md",
                       models=[m for m in PAPER_MODELS if m in labels],
                       **table_args)
    rows = report.build_table(paper_only, models=list(PAPER_MODELS),
                              convergence=status)
    paths.write_text(workdir / "comparison.md", comparison_markdown(rows))
  for m in finished:
    m["error"] = report.summary_error(merged[m["group"]], m["label"])
  plot_flops(finished, workdir / "flops")
  summaries.plot_losses(finished, workdir / "loss_curves")
  if figures_dir:
    small = {"dpi": 60, "svg": False, "palette_colors": _DOCS_COLORS}
    figures = epath.Path(figures_dir)
    plots.plot_grid(list(merged.values()),
                    figures / f"{suite_name}_curves", **small)
    plot_flops(finished, figures / f"{suite_name}_flops", **small)
    summaries.plot_losses(finished, figures / f"{suite_name}_loss_curves",
                          **small)
  if contrasts:
    seeds = sorted({int(r.config.train.seed) for r in runs})
    contrasts_lib.write(workdir, contrasts_lib.build(contrasts, finished,
                                                     seeds))
  summary["train_wall_s"] = sum(m["train_wall_s"] for m in finished)
  summary["eval_wall_s"] = sum(m["eval_wall_s"] for m in finished)
  summary["runs"] = [{k: v for k, v in m.items()
                      if k not in ("results", "train_loss")}
                     for m in finished]
  runner.write_json(workdir / "summary.json", summary)
  return summary
