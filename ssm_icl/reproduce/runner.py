"""Runs a reproduction suite: train, evaluate, mark done, resume.

For every run of the plan (`plan.plan_runs`), in order:
  1. skip it if `<run dir>/DONE.json` exists (its config must equal the
     planned one, else ValueError: a changed suite needs a new workdir);
  2. train it with `ssm_icl.train.loop.train_and_evaluate`, which resumes
     from the run's latest checkpoint, so a killed suite repeats at most the
     steps after the last checkpoint (none after SIGTERM / Ctrl-C: the loop
     saves the current step before it stops);
  3. evaluate the final parameters on the suite's fixed evaluation prompts
     (`ssm_icl.eval.evaluate`) into `<run dir>/eval/results.json`;
  4. write `DONE.json` (atomically, only now; on GCS only if absent) and
     the run's small summary (`summaries`, run_summary.json), then the
     task's baselines
     (`<group>/baselines.json`, once per task, on the same prompts).
Each training session of a run is appended to `<run dir>/sessions.jsonl`
(start and end step, wall time), so the steps trained across restarts can
be audited. SIGTERM or Ctrl-C stop the suite at the next step or between
phases; the same command resumes it. The workdir may be local or gs://
(`ssm_icl.paths`).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from typing import Any, Callable, Collection, Sequence

from etils import epath
import ml_collections

from ssm_icl import baselines as baselines_lib
from ssm_icl import errors
from ssm_icl import models
from ssm_icl import paths
from ssm_icl.eval import icl_curves
from ssm_icl.eval import report
from ssm_icl.reproduce import plan as plan_lib
from ssm_icl.reproduce import summaries
from ssm_icl.train import checkpoint as ckpt_lib
from ssm_icl.train import loop
from ssm_icl.train import metrics as metrics_lib

MARKER = "DONE.json"
SESSIONS = "sessions.jsonl"
RESULTS = "eval/results.json"
BASELINES = "baselines.json"
PLAN = "plan.json"
_CHECKED = ("model.", "task.", "train.")


@dataclasses.dataclass
class SuiteResult:
  """What `run_suite` returns.

  Attributes:
    runs: the planned runs.
    done: relpaths of the runs finished (now or earlier).
    trained: relpaths of the runs trained or resumed in this call.
    interrupted: True when a signal stopped the suite early.
    wall_s: wall time of this call.
  """

  runs: list[plan_lib.Run]
  done: list[str]
  trained: list[str]
  interrupted: bool
  wall_s: float


class StopFlag:
  """SIGTERM sets a flag; Ctrl-C (SIGINT) is turned into a SIGTERM.

  The training loop installs its own SIGTERM handler while it runs (it then
  saves the current step and returns), so a stop request during training
  ends the run cleanly, and one between phases is seen by `requested`.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self._event.is_set()

  def _term(self, signum, frame):
    del signum, frame
    self._event.set()

  def _int(self, signum, frame):
    del signum, frame
    self._event.set()
    signal.raise_signal(signal.SIGTERM)

  def __enter__(self) -> "StopFlag":
    if threading.current_thread() is threading.main_thread():
      self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM,
                                                     self._term)
      self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._int)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()


def _json_text(value: Any) -> str:
  return json.dumps(value, indent=1, allow_nan=False) + "\n"


def write_json(path: paths.PathLike, value: Any) -> None:
  """Writes JSON atomically (a kill never leaves a half-written file)."""
  paths.write_text(path, _json_text(value))


def write_marker(path: paths.PathLike, value: Any) -> None:
  """Writes a DONE marker: atomically, and never over an existing one.

  Raises:
    FileExistsError: another process finished the run first.
  """
  if not paths.create_text(path, _json_text(value)):
    raise FileExistsError(f"{path} appeared while this run was training; "
                          "is another suite running in the same workdir?")


def read_json(path: paths.PathLike) -> Any:
  return json.loads(epath.Path(path).read_text())


def read_sessions(run_dir: paths.PathLike) -> list[dict[str, Any]]:
  """The training sessions recorded for a run (oldest first)."""
  path = epath.Path(run_dir) / SESSIONS
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines()
          if line.strip()]


def resolved_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as training stores it (d_in / d_out filled from the task)."""
  return loop.build(config)[3].to_dict()


def config_differences(saved: dict[str, Any],
                       planned: dict[str, Any]) -> list[str]:
  """model.*, task.*, train.* fields that differ, as readable lines."""
  a = ckpt_lib.flatten_config(saved)
  b = ckpt_lib.flatten_config(planned)
  return [f"{k}: finished run {a.get(k, '<absent>')!r}, suite "
          f"{b.get(k, '<absent>')!r}"
          for k in sorted(set(a) | set(b))
          if k.startswith(_CHECKED) and a.get(k) != b.get(k)]


def finished_marker(run_dir: paths.PathLike, planned: dict[str, Any]
                    ) -> dict[str, Any] | None:
  """The run's DONE marker, or None if it has not finished.

  Raises:
    ValueError: the run finished with a different config than planned.
  """
  path = epath.Path(run_dir) / MARKER
  if not path.exists():
    return None
  marker = read_json(path)
  diff = config_differences(marker["config"], planned)
  if diff:
    raise errors.UserError(
        f"{run_dir} was finished with another config than the suite plans "
        "now:\n  " + "\n  ".join(diff) + "\nUse a new --workdir (or delete "
        "that run directory to retrain it).")
  return marker


def _latest_step(run_dir: paths.PathLike) -> int:
  """Step of the newest complete checkpoint of a run (0 if none)."""
  if not (epath.Path(run_dir) / ckpt_lib.CHECKPOINT_DIR).is_dir():
    return 0
  ckpt = ckpt_lib.Checkpointer(run_dir, every=1, max_to_keep=None,
                               async_save=False)
  steps = ckpt.all_steps()
  ckpt.close()
  return steps[-1] if steps else 0


def evaluate_model(run: plan_lib.Run, params: Any,
                   eval_cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """ICL curve of a trained model on the suite's evaluation prompts."""
  task, curriculum, model_cfg, _ = loop.build(run.config)
  model = models.build_model(model_cfg)
  apply_fn = lambda p, tokens: model.apply({"params": p}, tokens)
  predictors = {run.label: icl_curves.model_predictor(apply_fn, params,
                                                      task=task, model=model)}
  return icl_curves.evaluate(
      predictors, task, n_points=curriculum.points_end,
      n_prompts=eval_cfg.n_prompts, batch_size=eval_cfg.batch_size,
      seed=eval_cfg.seed, n_bootstrap=eval_cfg.n_bootstrap, progress=False)


def evaluate_baselines(run: plan_lib.Run,
                       eval_cfg: ml_collections.ConfigDict
                       ) -> dict[str, Any]:
  """ICL curves of the task's baselines on the same prompts as the models."""
  task, curriculum, _, _ = loop.build(run.config)
  return icl_curves.evaluate(
      baselines_lib.relevant_baselines(task), task,
      n_points=curriculum.points_end, n_prompts=eval_cfg.n_prompts,
      batch_size=eval_cfg.batch_size, seed=eval_cfg.seed,
      n_bootstrap=eval_cfg.n_bootstrap, progress=False)


@dataclasses.dataclass
class Plan:
  """A suite's runs in a workdir, before any work (`prepare`).

  Attributes:
    workdir: the checked (writable) suite directory.
    runs: the planned runs, in plan order.
    costs: per run, `plan.training_flops`.
    planned: per run, its resolved config (`resolved_config`).
    markers: per run, its DONE marker, or None if it has not finished.
  """

  workdir: epath.Path
  runs: list[plan_lib.Run]
  costs: list[dict[str, Any]]
  planned: list[dict[str, Any]]
  markers: list[dict[str, Any] | None]


def prepare(suite: ml_collections.ConfigDict, workdir: paths.PathLike, *,
            sweep: Sequence[tuple[str, list[Any]]] = (),
            tasks: Sequence[str] | None = None,
            families: Sequence[str] | None = None) -> Plan:
  """Plans the suite, writes DIR/plan.json and finds the finished runs.

  Finished runs are found (and their configs checked against the plan)
  before any work, so a changed suite fails at once.

  Raises:
    ValueError: as `run_suite`.
  """
  runs = plan_lib.plan_runs(suite, sweep=sweep, tasks=tasks, families=families)
  workdir = paths.check_writable(workdir)
  costs = [plan_lib.training_flops(r.config) for r in runs]
  planned = [resolved_config(r.config) for r in runs]
  write_json(workdir / PLAN, {
      "suite": suite.to_dict(), "sweep": [list(s) for s in sweep],
      "runs": [{"relpath": r.relpath, "task": r.task, "family": r.family,
                "label": r.label, "group": r.group, **c}
               for r, c in zip(runs, costs)]})
  markers = [finished_marker(workdir / r.relpath, p)
             for r, p in zip(runs, planned)]
  return Plan(workdir=workdir, runs=runs, costs=costs, planned=planned,
              markers=markers)


def _eta(elapsed: float, done_work: float, remaining: float) -> str:
  if done_work <= 0:
    return "?"
  return metrics_lib.format_duration(elapsed / done_work * remaining)


def run_suite(suite: ml_collections.ConfigDict, workdir: paths.PathLike, *,
              sweep: Sequence[tuple[str, list[Any]]] = (),
              tasks: Sequence[str] | None = None,
              families: Sequence[str] | None = None,
              only: Collection[int] | None = None,
              out: Callable[[str], None] = loop.console) -> SuiteResult:
  """Trains and evaluates every run of `suite` in `workdir`; resumable.

  Args:
    suite: a suite from configs/suites.py (`plan.suite_config`).
    workdir: the suite's directory (local or gs://); runs go to
      <workdir>/<task>/<model>/.
    sweep: from `plan.parse_sweep`.
    tasks: only these tasks (None: all).
    families: only these families (None: all).
    only: indices into the plan (`plan.plan_runs` order) of the runs this
      call handles; the others are left alone (`workers`: one share of the
      plan per process). None: every run.
    out: prints a progress line.

  Returns:
    A `SuiteResult`. Outputs (table, figures) are written by
    `outputs.write_outputs`.

  Raises:
    ValueError: a bad suite, filter or sweep, or a finished run whose config
      differs from the plan.
  """
  start_time = time.perf_counter()
  plan = prepare(suite, workdir, sweep=sweep, tasks=tasks, families=families)
  runs, costs, planned, markers = (plan.runs, plan.costs, plan.planned,
                                   plan.markers)
  workdir = plan.workdir
  mine = set(range(len(runs)) if only is None else only)
  remaining = sum(c["train_flops"] for i, (c, m) in
                  enumerate(zip(costs, markers)) if not m and i in mine)
  n, done_work = len(runs), 0.0
  share = "" if only is None else f" (this process: {len(mine)} of them)"
  out(f"Suite {suite.name!r}: {n} runs in {workdir}{share}, "
      f"{sum(1 for i, m in enumerate(markers) if m and i in mine)} finished "
      f"earlier; {remaining:.3g} training FLOPs to go.")
  done, trained, interrupted = [], [], False
  with StopFlag() as stop:
    for i, (run, cost, config) in enumerate(zip(runs, costs, planned)):
      if i not in mine:
        continue
      run_dir = workdir / run.relpath
      tag = f"[run {i + 1}/{n}] {run.group} / {run.label}"
      if markers[i] is None:
        elapsed = time.perf_counter() - start_time
        out(f"{tag} | {cost['params']:,} params, {cost['train_flops']:.3g} "
            f"training FLOPs | elapsed "
            f"{metrics_lib.format_duration(elapsed)} | ETA "
            f"{_eta(elapsed, done_work, remaining)}")
        first = _latest_step(run_dir)
        t0 = time.perf_counter()
        result = loop.train_and_evaluate(run.config, run_dir)
        train_s = time.perf_counter() - t0
        paths.append_text(run_dir / SESSIONS, json.dumps(
            {"start_step": first, "end_step": result.step, "wall_s": train_s,
             "interrupted": result.interrupted}) + "\n")
        trained.append(run.relpath)
        if result.interrupted or stop.requested:
          interrupted = True
          break
        t0 = time.perf_counter()
        results = evaluate_model(run, result.state.params, suite.eval)
        results["step"] = result.step
        icl_curves.save_results(results, run_dir / RESULTS)
        sessions = read_sessions(run_dir)
        markers[i] = {
            "config": config, "task": run.task, "family": run.family,
            "label": run.label, "group": run.group,
            "sweep": [list(s) for s in run.sweep], "step": result.step,
            "train_wall_s": sum(s["wall_s"] for s in sessions),
            "eval_wall_s": time.perf_counter() - t0,
            "final_train_loss": result.last_metrics.get("train/loss"),
            **cost}
        write_marker(run_dir / MARKER, markers[i])
        summary = summaries.make_summary(run, markers[i], results,
                                         metrics_lib.read_metrics(run_dir))
        summaries.write_summary(run_dir, summary)
        done_work += cost["train_flops"]
        remaining -= cost["train_flops"]
        error = report.summary_error(results, run.label)
        eval_s = markers[i]["eval_wall_s"]
        out(f"{tag} done: trained {metrics_lib.format_duration(train_s)}, "
            f"evaluated {metrics_lib.format_duration(eval_s)}; final-half "
            f"error {error:.4g}; {summary['convergence']['status']}")
      else:
        out(f"{tag} finished earlier; skipped.")
      done.append(run.relpath)
      if suite.eval.baselines:
        path = workdir / run.group / BASELINES
        if not path.exists() and not stop.requested:
          t0 = time.perf_counter()
          write_json(path, evaluate_baselines(run, suite.eval))
          out(f"{run.group}: baselines evaluated in "
              f"{metrics_lib.format_duration(time.perf_counter() - t0)}.")
      if stop.requested:
        interrupted = True
        break
  wall = time.perf_counter() - start_time
  if interrupted:
    out(f"Stopped after {metrics_lib.format_duration(wall)}; {len(done)}/"
        f"{len(mine)} runs finished. Run the same command again to resume.")
  else:
    out(f"All {len(mine)} runs finished ({metrics_lib.format_duration(wall)} "
        "in this call).")
  return SuiteResult(runs=runs, done=done, trained=trained,
                     interrupted=interrupted, wall_s=wall)

