"""Per-run summaries: the small JSON that the suite's report is made from.

When a run finishes, the runner writes `<run dir>/run_summary.json`:

  identity     relpath, task, family, label, group, sweep, seed
  cost         step, params, train_flops, eval_flops_per_prompt,
               train_wall_s, eval_wall_s, final_train_loss
  train_loss   {"steps": [...], "loss": [...]}: the logged training loss
               (metrics.jsonl), with total_steps, log_every and
               final_stage_step (first step of the curriculum's final stage)
  convergence  the verdict of `ssm_icl.eval.convergence` (recomputed from
               train_loss by the report, so a changed criterion needs no
               retraining)
  results      the run's ICL curve (`ssm_icl.eval.icl_curves` results)

Together with each task's `baselines.json` these files are all that
`--report_only` reads: commit them (a few kB per run) and the tables and
figures regenerate without checkpoints or training logs
(`outputs.load_summary` builds the summary of a run finished before
summaries existed from its DONE.json, eval results and metrics.jsonl).
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from etils import epath

from ssm_icl import errors
from ssm_icl import paths
from ssm_icl.eval import convergence as convergence_lib
from ssm_icl.eval import icl_curves
from ssm_icl.eval import plots
from ssm_icl.reproduce import plan as plan_lib
from ssm_icl.train import loop

SUMMARY = "run_summary.json"
FORMAT_VERSION = 1
# Fields of DONE.json copied into the summary.
_MARKER_FIELDS = ("step", "params", "train_flops", "eval_flops_per_prompt",
                  "train_wall_s", "eval_wall_s", "final_train_loss")
CRITERION = convergence_lib.Convergence()


def make_summary(run: plan_lib.Run, marker: Mapping[str, Any],
                 results: Mapping[str, Any],
                 records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """The summary of a finished run.

  Args:
    run: the planned run.
    marker: its DONE.json.
    results: its eval/results.json.
    records: its metrics.jsonl records.
  """
  _, curriculum, _, _ = loop.build(run.config)
  steps, losses = convergence_lib.train_loss_log(records)
  summary = {
      "format_version": FORMAT_VERSION, "relpath": run.relpath,
      "task": run.task, "family": run.family, "label": run.label,
      "group": run.group, "sweep": [list(s) for s in run.sweep],
      "seed": int(run.config.train.seed),
      **{k: marker[k] for k in _MARKER_FIELDS if k in marker},
      "total_steps": int(run.config.train.steps),
      "log_every": int(run.config.train.log_every),
      "final_stage_step": int(curriculum.final_step),
      "train_loss": {"steps": steps, "loss": losses},
      "results": dict(results),
  }
  summary["convergence"] = assess(summary)
  return summary


def assess(summary: Mapping[str, Any],
           criterion: convergence_lib.Convergence = CRITERION
           ) -> dict[str, Any]:
  """The convergence verdict of a run from its summary's training log."""
  log = summary["train_loss"]
  return criterion.assess(
      log["steps"], log["loss"], total_steps=summary["total_steps"],
      final_stage_step=summary["final_stage_step"],
      log_every=summary["log_every"])


def write_summary(run_dir: paths.PathLike, summary: Mapping[str, Any]
                  ) -> None:
  """Writes `<run_dir>/run_summary.json` atomically."""
  paths.write_text(epath.Path(run_dir) / SUMMARY,
                   json.dumps(summary, indent=1, allow_nan=False) + "\n")


def read_summary(run_dir: paths.PathLike) -> dict[str, Any] | None:
  """`<run_dir>/run_summary.json`, checked, or None if absent."""
  path = epath.Path(run_dir) / SUMMARY
  if not path.exists():
    return None
  summary = json.loads(path.read_text())
  if summary.get("format_version") != FORMAT_VERSION:
    raise errors.UserError(
        f"{path}: format_version={summary.get('format_version')!r}, "
        f"expected {FORMAT_VERSION}.")
  icl_curves.validate_results(summary["results"], source=str(path))
  return summary


def plot_losses(summaries: Sequence[Mapping[str, Any]],
                path_stem: paths.PathLike, *,
                criterion: convergence_lib.Convergence = CRITERION,
                dpi: int = 120, svg: bool = True,
                palette_colors: int | None = None) -> tuple[str, ...]:
  """Smoothed training loss against step, one panel per task.

  Each run is a line (the criterion's moving mean of its logged loss); a
  dotted line marks the start of the curriculum's final stage and a dashed
  one the start of the criterion's last part.

  Returns:
    The paths written (png, then svg).
  """
  groups = list(dict.fromkeys(s["group"] for s in summaries))
  fig, panels = plots.panel_grid(len(groups))
  for ax, group in zip(panels, groups):
    mine = [s for s in summaries if s["group"] == group]
    for j, s in enumerate(mine):
      log = s["train_loss"]
      verdict = s.get("convergence", {}).get("status", "")
      ax.plot(log["steps"],
              convergence_lib.moving_mean(log["loss"], criterion.smooth),
              color=f"C{j % 10}", label=f"{s['label']} ({verdict})")
    first = mine[0]
    ax.axvline(first["final_stage_step"], color="grey", linestyle=":")
    ax.axvline(criterion.start_fraction * first["total_steps"],
               color="grey", linestyle="--")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title(group)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", frameon=False)
  fig.tight_layout()
  return plots.save_figure(fig, path_stem, dpi=dpi, svg=svg,
                           palette_colors=palette_colors)
