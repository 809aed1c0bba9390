"""Projected wall time of a suite's runs from step times measured here.

For every run, a few training steps are timed on this machine with the
run's exact model, batch and mesh (`train_and_evaluate` in a scratch
directory, compilation excluded): at its first and last length bucket when
they differ (`train.length_buckets`: a step runs padded to its stage's
bucket, so a run with one bucket, like the mini suite's, runs every step at
the final length). The step time is interpolated linearly in the number of
tokens and summed over the curriculum's stages, each at its bucket.
Evaluation and checkpointing are not included. Run it on the machine that
will train the suite (e.g. a GPU for the `paper` suite):

  python -m ssm_icl.reproduce --suite=paper --workdir=DIR --time_steps=20
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Callable, Sequence

from etils import epath
import jax

from ssm_icl import errors
from ssm_icl import paths
from ssm_icl.reproduce import plan as plan_lib
from ssm_icl.train import buckets as bucket_lib
from ssm_icl.train import loop
from ssm_icl.train import metrics as metrics_lib


def step_time(config: Any, n_points: int, n_steps: int,
              scratch: epath.Path) -> float:
  """Seconds per training step of `config` at a fixed `n_points`.

  Trains 2 * n_steps steps and times the second half (the first half holds
  the compilation).
  """
  config = config.copy_and_resolve_references()
  config.task.curriculum.points.update(start=n_points, end=n_points, inc=0)
  config.train.steps = 2 * n_steps
  config.train.log_every = n_steps
  config.train.eval_every = 0
  config.ckpt.every = 10 * n_steps
  _remove(scratch)
  with contextlib.redirect_stdout(io.StringIO()):
    loop.train_and_evaluate(config, scratch)
  records = [r for r in metrics_lib.read_metrics(scratch)
             if "perf/steps_per_s" in r]
  _remove(scratch)
  return 1.0 / records[-1]["perf/steps_per_s"]


def _remove(directory: epath.Path) -> None:
  if directory.exists():
    directory.rmtree()


def _built(config: Any) -> tuple[Any, Any, tuple[int, ...]]:
  """(task, curriculum, length buckets) of a run's config."""
  task, curriculum, _, _ = loop.build(config)
  return task, curriculum, bucket_lib.curriculum_buckets(
      curriculum, config.train.length_buckets)


def timed_points(config: Any) -> list[int]:
  """The n_points to time a run at: its first and last length bucket."""
  buckets = _built(config)[2]
  return sorted({buckets[0], buckets[-1]})


def projected_seconds(config: Any, times: dict[int, float]) -> float:
  """Training seconds over the whole curriculum, from per-length times.

  Args:
    config: the run's config.
    times: n_points -> seconds per step, measured at one or two lengths
      (`timed_points`); other lengths are interpolated linearly in tokens.
      Each stage counts at the length of its bucket.
  """
  task, curriculum, buckets = _built(config)
  (p0, t0), (p1, t1) = sorted(times.items())[0], sorted(times.items())[-1]
  l0, l1 = task.seq_len(p0), task.seq_len(p1)
  slope = 0.0 if l1 == l0 else (t1 - t0) / (l1 - l0)
  steps = config.train.steps
  interval = curriculum.points_interval
  if curriculum.points_start == curriculum.points_end:
    interval = steps
  total = 0.0
  for start in range(0, steps, interval):
    length = task.seq_len(bucket_lib.bucket_of(buckets,
                                               curriculum.at(start)[1]))
    total += (t0 + slope * (length - l0)) * min(interval, steps - start)
  return total


def estimate_times(runs: Sequence[plan_lib.Run], workdir: paths.PathLike, *,
                   n_steps: int, out: Callable[[str], None] = print) -> str:
  """Times every run and writes `<workdir>/estimate.md`; returns its text.

  Raises:
    ValueError: if n_steps < 1.
  """
  if n_steps < 1:
    raise errors.UserError(f"time_steps={n_steps} must be >= 1.")
  device = jax.devices()[0]
  lines = [
      "# Projected training time per run", "",
      f"Measured on {jax.device_count()} x {device.device_kind} "
      f"({device.platform}) with JAX {jax.__version__}: {n_steps} steps "
      f"after {n_steps} compile/warm-up steps, at the first and last length "
      "bucket of the curriculum, interpolated in tokens; evaluation and "
      "checkpoints not included.", "",
      "| Run | steps | batch | ms/step (first, last bucket) | projected |",
      "|---|---|---|---|---|"]
  total = 0.0
  workdir = paths.workdir_path(workdir)
  scratch = workdir / "estimate_scratch"
  for i, run in enumerate(runs):
    lengths = timed_points(run.config)
    times = {p: step_time(run.config, p, n_steps, scratch) for p in lengths}
    seconds = projected_seconds(run.config, times)
    total += seconds
    ms = ", ".join(f"{1e3 * times[p]:.3g}" for p in lengths)
    line = (f"| {run.relpath} | {run.config.train.steps:,} | "
            f"{run.config.train.batch_size} | {ms} | "
            f"{metrics_lib.format_duration(seconds)} |")
    lines.append(line)
    out(f"[{i + 1}/{len(runs)}] {line}")
  lines += ["", f"Total: {metrics_lib.format_duration(total)} of training "
            f"for {len(runs)} runs."]
  text = "\n".join(lines) + "\n"
  paths.write_text(workdir / "estimate.md", text)
  return text
