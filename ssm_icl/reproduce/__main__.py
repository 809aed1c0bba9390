r"""Reproduces the paper: trains, evaluates and tabulates a whole suite.

  python -m ssm_icl.reproduce --suite=smoke --workdir=workdirs/smoke  # minutes
  python -m ssm_icl.reproduce --suite=pilot --workdir=workdirs/pilot  # recipe
  python -m ssm_icl.reproduce --suite=mini --workdir=workdirs/mini  # ~3 h CPU
  python -m ssm_icl.reproduce --suite=contrasts --workdir=workdirs/contrasts
  python -m ssm_icl.reproduce --suite=paper --workdir=workdirs/paper  # GPU/TPU
  python -m ssm_icl.reproduce --suite=paper --workdir=gs://bucket/paper  # pods

Trains every (task, model) run of the suite (configs/suites.py) into
DIR/<task>/<model>/, evaluates it and the task's baselines on the same
prompts, and writes DIR/table.md, table1.md, comparison.md, curves.png,
flops.png, loss_curves.png and summary.json (contrasts.md / .json for the
seeded `contrasts` suite). Stop it with Ctrl-C or SIGTERM at any time; the
same command resumes it (finished runs are skipped, an interrupted run
continues from the step where it stopped).

Each finished run leaves DIR/<task>/<model>/run_summary.json (a few kB:
its curve, training-loss log and convergence verdict). Those files and each
task's DIR/<task>/baselines.json are all that --report_only reads, so a
directory holding only them (e.g. committed under docs/results/mini)
regenerates the tables and figures:

  python -m ssm_icl.reproduce --suite=mini --workdir=docs/results/mini \
      --report_only --figures_dir=docs/figures

The pilot trains every mini run briefly at each lr of configs/suites.py's
PILOT_LRS; its table.md (convergence per run) and loss_curves.png choose
MINI_STEPS and MINI_LR, one recipe per task for all models.

Options:
  --sweep model.d_model=64,128,256   repeat every run for each value (the
                                     flag may be repeated: all combinations)
  --tasks=linear_regression,...      only these tasks
  --models=mamba,...                 only these families
  --dry_run                          print the plan (params, FLOPs) and exit
  --time_steps=20                    time 20 steps of every run here and
                                     write DIR/estimate.md (projected wall
                                     time per run) instead of training
  --report_only                      only rewrite the outputs from the
                                     finished runs
  --workers=2                        train the unfinished runs in 2
                                     processes, each pinned to its share
                                     of the CPUs (small models: ~1.3x the
                                     runs per hour on 2 cores; see
                                     ssm_icl/reproduce/workers.py)
  --figures_dir=docs/figures         also write small PNGs for the docs
  --compile_cache=DIR|off            persistent compilation cache (default
                                     ~/.cache/ssm_icl/jax; see ssm_icl.cli)
"""

import sys

from absl import app
from absl import flags

from ssm_icl import cli
from ssm_icl import compile_cache
from ssm_icl import errors
from ssm_icl import paths

_SUITE = flags.DEFINE_enum(
    "suite", None, ["paper", "mini", "pilot", "contrasts", "smoke"],
    "Suite of configs/suites.py.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Suite directory, local or gs://bucket/path; an "
    "existing one is resumed.")
_SWEEP = flags.DEFINE_multi_string(
    "sweep", [], "KEY=V1,V2,...: train every run once per value, e.g. "
    "model.d_model=64,128,256.")
_TASKS = flags.DEFINE_list("tasks", None, "Only these tasks.")
_MODELS = flags.DEFINE_list("models", None, "Only these model families.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False,
                             "Print the plan and exit.")
_TIME_STEPS = flags.DEFINE_integer(
    "time_steps", 0, "If > 0: time this many steps per run and write "
    "estimate.md instead of training.")
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False, "Only write the outputs of the finished runs.")
_WORKERS = flags.DEFINE_integer(
    "workers", 1, "Train the unfinished runs in this many processes, each "
    "pinned to its share of the CPUs (at most one worker per CPU).")
_WORKER_RUNS = flags.DEFINE_list(
    "worker_runs", None, "Internal (set by --workers for its children): "
    "train only the runs at these indices of the plan; write no outputs.")
_FIGURES_DIR = flags.DEFINE_string(
    "figures_dir", None, "Also write small PNGs of the curves and the FLOPs "
    "figure there (e.g. docs/figures).")


def plan_table(runs) -> str:
  """The plan as text: one line per run with its size and FLOPs."""
  # pylint: disable=g-import-not-at-top
  from ssm_icl.reproduce import plan as plan_lib
  from ssm_icl.train import loop
  # pylint: enable=g-import-not-at-top
  lines = [f"{'run':48} {'params':>10} {'steps':>8} {'batch':>5} "
           f"{'tokens':>6} {'train FLOPs':>11}"]
  total = 0.0
  for run in runs:
    cost = plan_lib.training_flops(run.config)
    task, curriculum, _, _ = loop.build(run.config)
    total += cost["train_flops"]
    lines.append(f"{run.relpath:48} {cost['params']:>10,} "
                 f"{run.config.train.steps:>8,} "
                 f"{run.config.train.batch_size:>5} "
                 f"{task.seq_len(curriculum.points_end):>6} "
                 f"{cost['train_flops']:>11.3g}")
  lines.append(f"{len(runs)} runs, {total:.3g} training FLOPs in all.")
  return "\n".join(lines)


def worker_indices(values: list[str], n_runs: int) -> list[int]:
  """--worker_runs as plan indices, each checked against the plan size."""
  try:
    indices = [int(v) for v in values]
  except ValueError:
    raise errors.UserError(f"--worker_runs={','.join(values)} must be "
                           "comma-separated integers.") from None
  bad = [i for i in indices if not 0 <= i < n_runs]
  if bad:
    raise errors.UserError(f"--worker_runs: {bad} outside the plan's "
                           f"{n_runs} runs (0..{n_runs - 1}).")
  return indices


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.start()
  # pylint: disable=g-import-not-at-top
  from ssm_icl.reproduce import estimate
  from ssm_icl.reproduce import outputs
  from ssm_icl.reproduce import plan as plan_lib
  from ssm_icl.reproduce import runner
  from ssm_icl.reproduce import workers
  # pylint: enable=g-import-not-at-top
  workdir = paths.workdir_path(_WORKDIR.value, name="--workdir")
  suite = plan_lib.suite_config(_SUITE.value)
  sweep = plan_lib.parse_sweep(_SWEEP.value)
  runs = plan_lib.plan_runs(suite, sweep=sweep, tasks=_TASKS.value,
                            families=_MODELS.value)
  workers.check_workers(_WORKERS.value)
  if _DRY_RUN.value:
    print(plan_table(runs))
    return
  if _TIME_STEPS.value:
    estimate.estimate_times(runs, workdir, n_steps=_TIME_STEPS.value)
    return
  if _WORKER_RUNS.value is not None:
    # A child of --workers: its share only; the parent writes the outputs.
    runner.run_suite(suite, workdir, sweep=sweep, tasks=_TASKS.value,
                     families=_MODELS.value,
                     only=worker_indices(_WORKER_RUNS.value, len(runs)))
    return
  failed = []
  if not _REPORT_ONLY.value and _WORKERS.value > 1:
    failed = workers.run_parallel(
        suite, workdir, sys.argv[1:], _WORKERS.value, sweep=sweep,
        tasks=_TASKS.value, families=_MODELS.value)
  elif not _REPORT_ONLY.value:
    result = runner.run_suite(suite, workdir, sweep=sweep,
                              tasks=_TASKS.value, families=_MODELS.value)
    runs = result.runs
  summary = outputs.write_outputs(workdir, runs, suite.name,
                                  figures_dir=_FIGURES_DIR.value,
                                  contrasts=suite.get("contrasts"))
  if summary["runs"]:
    table = workdir / "table1.md"
    print((table if table.exists() else workdir / "table.md").read_text())
    print(f"Wrote {workdir}/table.md, table1.md, comparison.md, curves.png, "
          f"flops.png and summary.json ({len(summary['runs'])}/"
          f"{summary['n_planned']} runs finished).")
  print(compile_cache.report(), flush=True)
  if failed:
    raise errors.UserError(workers.failure_message(failed))


if __name__ == "__main__":
  flags.mark_flags_as_required(["suite", "workdir"])
  cli.run(main)
