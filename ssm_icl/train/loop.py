"""`train_and_evaluate(config, workdir)`: the training program.

One function in sections, in the order they run:
  1. workdir and config checks      5. resume or initialise
  2. mesh and logical-axis rules     6. compiled steps (lazily per bucket)
  3. task, model, optimiser          7. the loop (metrics, eval, checkpoints)
  4. abstract state and shardings    8. wrap-up

Every input error (mesh vs device count, batch vs data axis, prompt longer
than the model's positions, incompatible checkpoint, unwritable workdir) is
raised as an `errors.UserError` in sections 1-5, before anything is
compiled.

Resume priority: the latest readable checkpoint in `workdir/checkpoints`
(see `checkpoint.Checkpointer.restore_latest`), else a fresh init from the
seed. Because every batch is drawn from `fold_in(seed, step)`, a resumed run
reproduces the uninterrupted run bit for bit on the same machine.

A SIGTERM (or, under `jax.distributed`, a preemption notice) makes the loop
save the current step and return normally, so the process exits with status
0. It stops within seconds: at most `MAX_IN_FLIGHT` dispatched steps are
queued behind the running one (`bound_in_flight`), so the stop waits for
only those, and no evaluation or new step starts after the signal.

A non-finite loss raises `NonFiniteLossError` naming the first bad step; no
checkpoint is written after it, so the last checkpoint on disk is good.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import time
from typing import Any

from absl import logging
from flax import linen as nn
import jax
import ml_collections
import numpy as np

from ssm_icl import compile_cache
from ssm_icl import errors
from ssm_icl import models
from ssm_icl import paths
from ssm_icl import tasks
from ssm_icl.parallel import distributed
from ssm_icl.parallel import mesh as mesh_lib
from ssm_icl.train import buckets as bucket_lib
from ssm_icl.train import checkpoint as ckpt_lib
from ssm_icl.train import metrics as metrics_lib
from ssm_icl.train import optim
from ssm_icl.train import state as state_lib
from ssm_icl.train import step as step_lib

PRECISIONS = ("default", "high", "highest")
# Steps the host may dispatch ahead of the one running (`bound_in_flight`).
MAX_IN_FLIGHT = 1


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf."""


@dataclasses.dataclass
class TrainResult:
  """What `train_and_evaluate` returns.

  Attributes:
    state: the final train state.
    step: the number of completed steps.
    interrupted: True when a signal or preemption stopped the run early.
    last_metrics: the last record written to metrics.jsonl (train/*).
    last_eval: the last evaluation's metrics (eval/*), or {}.
    compiled: length bucket (points) -> number of times its train step was
      compiled in this call (1 each: n_dims_truncated is traced, not static;
      see `ssm_icl.train.buckets`).
  """
  state: Any
  step: int
  interrupted: bool
  last_metrics: dict[str, Any]
  last_eval: dict[str, Any]
  compiled: dict[int, int]


def console(message: str) -> None:
  """Prints on process 0 (and logs), so progress shows whatever verbosity."""
  if distributed.is_main_process():
    print(message, flush=True)
  logging.info(message)


def resolve_config(config: ml_collections.ConfigDict,
                   task: Any) -> ml_collections.ConfigDict:
  """A copy of `config` with the model's d_in/d_out filled from the task."""
  resolved = ml_collections.ConfigDict(config.to_dict())
  for field, value in (("d_in", task.d_in), ("d_out", task.d_out)):
    given = resolved.model[field]
    if given is not None and given != value:
      raise errors.UserError(
          f"model.{field}={given} does not match the task {task.name!r}, "
          f"which needs {value}; leave it None to take it from the task.")
    resolved.model[field] = value
  dt_rank = resolved.model.get("dt_rank")
  if isinstance(dt_rank, str) and dt_rank.isdigit():  # "--config...=16"
    resolved.model.dt_rank = int(dt_rank)
  return resolved


def build(config: ml_collections.ConfigDict) -> tuple[Any, Any, Any, Any]:
  """(task, curriculum, ModelConfig, resolved config) from a config.

  Raises:
    ValueError: unknown task/model fields, or a prompt longer than the
      model's position table.
  """
  task = tasks.get_task(config.task.name, **config.task.kwargs.to_dict())
  curriculum = tasks.Curriculum.from_config(config.task.curriculum)
  resolved = resolve_config(config, task)
  model_cfg = models.ModelConfig.from_config_dict(resolved.model)
  if model_cfg.uses_positions:
    task.check_fits(curriculum.points_end, model_cfg.n_positions)
  return task, curriculum, model_cfg, resolved


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: paths.PathLike, *,
                       devices: list[jax.Device] | None = None
                       ) -> TrainResult:
  """Trains (or resumes) the run described by `config` in `workdir`.

  Args:
    config: a config from `configs/*.py` (see docs/TRAINING.md).
    workdir: run directory, local or gs://bucket/path: checkpoints/,
      metrics.jsonl, tensorboard/, config.json.
    devices: devices of the mesh (default: all devices of all processes).

  Returns:
    A `TrainResult`.

  Raises:
    errors.UserError: invalid config, mesh, batch, workdir or checkpoint.
    NonFiniteLossError: the loss became NaN/Inf (the message names the step).
  """
  # ---------------------------------------------------------- 1. workdir
  workdir = paths.check_writable(workdir)
  tcfg = config.train
  if tcfg.matmul_precision not in PRECISIONS:
    raise errors.UserError(
        f"train.matmul_precision={tcfg.matmul_precision!r} is "
        f"unknown; expected one of {PRECISIONS}.")
  for field in ("steps", "log_every"):
    if tcfg[field] <= 0:
      raise errors.UserError(f"train.{field}={tcfg[field]} must be positive.")

  # ---------------------------------------------------------- 2. mesh
  mesh = mesh_lib.make_mesh(config.mesh.shape, config.mesh.axes, devices)
  rules = mesh_lib.axis_rules(config.mesh.rules, mesh)
  mesh_lib.check_batch_divisible(tcfg.batch_size, mesh)

  # ---------------------------------------------------------- 3. task, model
  task, curriculum, model_cfg, resolved = build(config)
  buckets = bucket_lib.curriculum_buckets(curriculum, tcfg.length_buckets)
  config_dict = resolved.to_dict()
  model = models.build_model(model_cfg)
  tx = optim.make_optimizer(tcfg)
  schedule = optim.learning_rate_schedule(tcfg)

  with (jax.set_mesh(mesh), nn.logical_axis_rules(rules),
        jax.default_matmul_precision(tcfg.matmul_precision)):
    # -------------------------------------------------------- 4. shardings
    first_points = curriculum.at(0)[1]
    token_shape = (1, task.seq_len(first_points), task.d_in)
    sharded = state_lib.abstract_state(model, tx, token_shape, tcfg.seed,
                                       mesh, rules)
    rows = metrics_lib.parameter_rows(sharded.boxed.params,
                                      sharded.shardings.params)
    console(f"Mesh {dict(mesh.shape)} over {mesh.devices.size} devices "
            f"({jax.process_count()} processes), rules {config.mesh.rules!r};"
            f" model {model_cfg.family} {model_cfg.block_pattern}")
    console(metrics_lib.parameter_overview(rows))

    # -------------------------------------------------------- 5. resume
    ckpt = ckpt_lib.Checkpointer(
        workdir, every=config.ckpt.every, max_to_keep=config.ckpt.max_to_keep,
        async_save=config.ckpt.async_save)
    restored = ckpt.restore_latest(sharded.target, config_dict)
    if restored is None:
      state, start = state_lib.init_state(sharded), 0
      console(f"Initialised from seed {tcfg.seed}.")
    else:
      state, _, start = restored
      console(f"Resumed from the checkpoint at step {start} in "
              f"{ckpt.directory}.")
    # Written only now: an incompatible config must not overwrite the
    # config.json of the run whose checkpoint it failed to resume.
    if distributed.is_main_process():
      paths.write_text(workdir / "config.json",
                       json.dumps(config_dict, indent=2))
    writer = metrics_lib.MetricWriter(
        workdir, enabled=distributed.is_main_process())
    writer.truncate_after(start)

    # -------------------------------------------------------- 6. compile
    # Train and eval steps compile once per length bucket; the samplers (no
    # model) once per n_points. Each cache releases the programs of shorter
    # lengths when a longer one is first requested: the curriculum never
    # shortens the prompt, so they would never run again.
    scalars = {}
    compiled = collections.Counter()
    replicated = mesh_lib.replicated(mesh)
    console(f"Length buckets {buckets} for the "
            f"{len(curriculum.distinct_points())} prompt lengths of the "
            f"curriculum (train.length_buckets={tcfg.length_buckets}): at "
            f"most {len(buckets)} train program(s).")

    def on_trace(bucket):
      compiled.update([bucket])
      console(f"Compiling the train step for {bucket} points (train program "
              f"{sum(compiled.values())}, bucket {buckets.index(bucket) + 1} "
              f"of {len(buckets)}).")

    def sampler_cache(sample_fn):
      return bucket_lib.ProgramCache(lambda n: step_lib.jit_sampler(
          sample_fn, mesh, task=task, batch_size=tcfg.batch_size, n_points=n,
          pad_points=bucket_lib.bucket_of(buckets, n), seed=tcfg.seed))

    train_samplers = sampler_cache(step_lib.sample_train_prompt)
    eval_samplers = sampler_cache(step_lib.sample_eval_prompt)
    train_steps = bucket_lib.ProgramCache(lambda b: step_lib.jit_train_step(
        sharded.shardings, step_lib.prompt_shardings(
            task, mesh, tcfg.batch_size, b), mesh, seed=tcfg.seed,
        schedule=schedule, on_trace=lambda: on_trace(b)))
    eval_steps = bucket_lib.ProgramCache(lambda b: step_lib.jit_eval_step(
        sharded.shardings.params, step_lib.prompt_shardings(
            task, mesh, tcfg.batch_size, b), mesh, model.apply))

    def train_fn(n_points):
      """`fn(state, n_dims, nan_step)`: samples the step's batch and trains."""
      sample = train_samplers.get(n_points)
      train = train_steps.get(bucket_lib.bucket_of(buckets, n_points))
      return lambda state, n_dims, nan_step: train(
          state, sample(state.step, n_dims), nan_step)

    def scalar(value):
      # Global (replicated) scalars, so multi-process jit accepts them.
      if value not in scalars:
        scalars[value] = jax.device_put(np.int32(value), replicated)
      return scalars[value]

    def evaluate(state, n_points):
      sample = eval_samplers.get(n_points)
      evaluate_batch = eval_steps.get(bucket_lib.bucket_of(buckets, n_points))
      last_slot = scalar(task.num_slots(n_points) - 1)
      n_batches = max(1, math.ceil(tcfg.eval_prompts / tcfg.batch_size))
      sums = None
      for i in range(n_batches):
        out = evaluate_batch(state.params, sample(scalar(i)), last_slot)
        sums = out if sums is None else jax.tree.map(np.add, sums, out)
      sums = jax.device_get(sums)
      return {
          "eval/loss": float(sums["loss_sum"]) / (n_batches * tcfg.batch_size),
          "eval/metric": float(sums["metric_sum"] / sums["metric_count"]),
          "eval/metric_last": float(sums["last_sum"] / sums["last_count"]),
          "eval/n_points": n_points,
      }

    # -------------------------------------------------------- 7. loop
    total = tcfg.steps
    progress = metrics_lib.Progress(total, start)
    pending = []  # (step, metrics) not yet checked / written
    in_flight = collections.deque()  # losses of steps maybe still running
    first_step_start = time.perf_counter()
    window = []   # host metrics since the last record
    last_record, last_eval = {}, {}
    step, interrupted = start, False
    use_signal = not jax.distributed.is_initialized()

    def drain():
      """Fetches pending metrics; raises at the first non-finite loss."""
      fetched = jax.device_get([m for _, m in pending])
      for (s, _), values in zip(pending, fetched):
        loss = float(values["train/loss"])
        if not math.isfinite(loss):
          ckpt.wait()  # let the last good save finish before listing it
          saved = ckpt.all_steps()
          raise NonFiniteLossError(
              f"Non-finite training loss ({loss}) at step {s}; stopping. "
              f"Nothing was saved after it: the last good checkpoint is step "
              f"{saved[-1] if saved else 'none'} in {ckpt.directory}.")
        window.append(values)
      pending.clear()

    try:
      with ckpt_lib.SignalFlag() if use_signal else _NoSignal() as signals:
        if start >= total:
          console(f"Nothing to do: the checkpoint is at step {start} and "
                  f"train.steps={total}.")
        while step < total:
          n_dims, n_points = curriculum.at(step)
          state, step_metrics = train_fn(n_points)(
              state, scalar(n_dims), scalar(tcfg.inject_nan_at_step))
          step += 1
          pending.append((step, step_metrics))
          progress.add_tokens(tcfg.batch_size * task.seq_len(n_points))
          bound_in_flight(in_flight, step_metrics["train/loss"])
          if step == start + 1:
            jax.block_until_ready(step_metrics)
            console(first_step_line(step, time.perf_counter()
                                    - first_step_start))

          if step % tcfg.log_every == 0 or step == total:
            drain()
            rates = progress.report(step)
            last_record = {
                k: float(np.mean([w[k] for w in window])) for k in window[0]}
            last_record.update(
                {"train/n_points": n_points, "train/n_dims": n_dims,
                 "perf/steps_per_s": rates["steps_per_s"],
                 "perf/tokens_per_s": rates["tokens_per_s"]})
            window.clear()
            writer.write(step, last_record)
            console(progress.line(step, last_record["train/loss"], rates))

          # A stop is decided before the evaluation, which may take
          # seconds: after a signal no new work is dispatched.
          stop = signals.requested or ckpt.reached_preemption(step)
          if not stop and tcfg.eval_every > 0 and (
              step % tcfg.eval_every == 0 or step == total):
            last_eval = evaluate(state, n_points)
            writer.write(step, last_eval)
            console(eval_line(step, last_eval))

          if stop or step == total or ckpt.should_save(step):
            drain()  # never save a state whose loss history is non-finite
            ckpt.save(step, state, ckpt_lib.make_meta(config_dict, step, mesh))
            writer.flush()  # on GCS: store the records up to the checkpoint
          if stop:
            interrupted = True
            console(stop_line(step, signals, ckpt))
            break

    finally:
      # -------------------------------------------------------- 8. wrap-up
      # Also on errors: finish pending saves, so the last good checkpoint
      # is complete on disk.
      ckpt.close()
      writer.close()
  if compiled:
    console(f"Compiled {sum(compiled.values())} train program(s) in this "
            f"run, for the buckets {sorted(compiled)} of {buckets}.")
  return TrainResult(state=state, step=step, interrupted=interrupted,
                     last_metrics=last_record, last_eval=last_eval,
                     compiled=dict(compiled))


def bound_in_flight(in_flight: collections.deque, new: jax.Array,
                    limit: int | None = None) -> None:
  """Appends a step's output and waits until at most `limit` are unfinished.

  JAX dispatches steps asynchronously, so without a bound the Python loop
  runs up to the next metric fetch (`log_every` steps) ahead of the device,
  and a SIGTERM would have to wait for all of them. With `limit` = 1 the
  device is still never idle as long as the host's work per step is shorter
  than a step (the next step is queued while the current one runs), and a
  stop waits for the running step and at most `limit` queued ones.

  Args:
    in_flight: outputs of dispatched steps, oldest first (updated in place).
    new: an output of the step just dispatched (e.g. its loss).
    limit: the bound; default `MAX_IN_FLIGHT`.
  """
  in_flight.append(new)
  limit = MAX_IN_FLIGHT if limit is None else limit
  while len(in_flight) > limit:
    in_flight.popleft().block_until_ready()


def first_step_line(step: int, seconds: float) -> str:
  """The console line after the first step of a start (compile included)."""
  line = (f"Step {step} done {seconds:.1f} s after the loop started "
          "(compilation included).")
  if compile_cache.active():
    line += " " + compile_cache.report()
  return line


def stop_line(step: int, signals: Any, ckpt: ckpt_lib.Checkpointer) -> str:
  """Waits for the stop's checkpoint and describes the stop and its timing.

  Two times: signal -> the loop stopped (the in-flight steps finished and
  the save started), and the wait for the checkpoint to be on disk.
  """
  if signals.signal_name is None:
    reason = "(preemption)"
  else:
    reason = (f"({signals.signal_name}) "
              f"{time.monotonic() - signals.received_at:.2f} s after the "
              "signal")
  save_start = time.perf_counter()
  ckpt.wait()
  saved_s = time.perf_counter() - save_start
  return (f"Stopping at step {step} {reason}; checkpoint saved in "
          f"{ckpt.directory} ({saved_s:.2f} s to finish writing it).")


def eval_line(step: int, values: dict[str, Any]) -> str:
  """The console line of an evaluation."""
  return (f"eval at step {step}: loss {values['eval/loss']:.4g}, metric "
          f"{values['eval/metric']:.4g} (last slot "
          f"{values['eval/metric_last']:.4g}), n_points "
          f"{values['eval/n_points']}")


class _NoSignal:
  """Stands in for `SignalFlag` when JAX's preemption service owns SIGTERM."""
  requested = False
  signal_name = None
  received_at = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return None
