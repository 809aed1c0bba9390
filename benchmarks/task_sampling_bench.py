"""Task-sampling benchmark: generating a batch against a training step.

For every task family at the paper's sizes (the final curriculum point,
`task.default_n_points`, full dims, 64 prompts), times the jitted
`task.sample` and a jitted training step of the matching 4-layer Mamba
(d_model 128, read-in/read-out sized to the task): `value_and_grad` of
`masked_loss` plus an `optax.adam` update, on the same prompt. Prints the
median times (after a warm-up, `block_until_ready`) and the ratio
sample / step per task; the target is a ratio under 10%, so data generation
stays a small part of training. Both are measured in the same process, so
the ratio is meaningful even on a loaded machine; absolute times are not.
Uses JAX's default backend.

  python benchmarks/task_sampling_bench.py [--quick] [--tasks a,b] \
      [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import optax

from ssm_icl import models
from ssm_icl import tasks
from ssm_icl.tasks import base
from ssm_icl.tasks import task as task_lib

_TARGET = 0.10  # sampling must cost < 10% of a training step


def median_seconds(fn, repeats):
  """Median wall time of `fn()` (which returns arrays) after one warm-up."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def make_train_step(model, lr=1e-4):
  """A jitted (params, opt_state, prompt) -> (params, opt_state, loss)."""
  tx = optax.adam(lr)

  def loss_fn(params, prompt):
    outputs = model.apply({"params": params}, prompt.tokens)
    preds = base.gather_predictions(outputs, prompt)
    return base.masked_loss(preds, prompt)

  @jax.jit
  def step(params, opt_state, prompt):
    loss, grads = jax.value_and_grad(loss_fn)(params, prompt)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return tx, step


def bench_task(name, batch_size, repeats, step_repeats):
  """Returns a dict of timings for one task."""
  task = tasks.get_task(name)
  n_points = task.default_n_points
  length = task.seq_len(n_points)
  sampler = task_lib.jitted_sampler(task, batch_size, n_points)
  key = jax.random.key(0)
  sample_s = median_seconds(lambda: sampler(key), repeats)

  model = models.build_model(dict(
      family="mamba", n_layer=4, d_model=128, d_in=task.d_in,
      d_out=task.d_out, n_positions=length))
  prompt = sampler(key)
  params = model.init(jax.random.key(1), prompt.tokens)["params"]
  tx, step = make_train_step(model)
  opt_state = tx.init(params)
  # The step does not donate its inputs, so the same state can be reused.
  step_s = median_seconds(lambda: step(params, opt_state, prompt),
                          step_repeats)
  return dict(task=name, n_points=n_points, seq_len=length,
              batch_size=batch_size, sample_ms=1e3 * sample_s,
              step_ms=1e3 * step_s, ratio=sample_s / step_s)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", default=",".join(tasks.TASKS),
                      help="comma-separated task names")
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=20,
                      help="timed sampling calls per task")
  parser.add_argument("--step-repeats", type=int, default=5,
                      help="timed training steps per task")
  parser.add_argument("--quick", action="store_true",
                      help="3 repeats of each, for a smoke run")
  parser.add_argument("--out", default=None, help="write results as JSON")
  args = parser.parse_args(argv)
  if args.quick:
    args.repeats = args.step_repeats = 3
  names = [n for n in args.tasks.split(",") if n]
  for name in names:
    if name not in tasks.TASKS:
      parser.error(f"unknown task {name!r}; valid: {sorted(tasks.TASKS)}")

  print(f"backend={jax.default_backend()} devices={jax.device_count()} "
        f"batch={args.batch_size}; step = 4-layer Mamba d_model=128, "
        "value_and_grad + adam")
  print(f"{'task':26s} {'n_pts':>5s} {'tokens':>6s} {'sample ms':>10s} "
        f"{'step ms':>10s} {'ratio':>7s}")
  results = []
  for name in names:
    r = bench_task(name, args.batch_size, args.repeats, args.step_repeats)
    results.append(r)
    flag = "" if r["ratio"] < _TARGET else "  (above target)"
    print(f"{name:26s} {r['n_points']:5d} {r['seq_len']:6d} "
          f"{r['sample_ms']:10.3f} {r['step_ms']:10.1f} "
          f"{100 * r['ratio']:6.2f}%{flag}", flush=True)
  worst = max(results, key=lambda r: r["ratio"])
  print(f"worst ratio: {100 * worst['ratio']:.2f}% ({worst['task']}); "
        f"target < {100 * _TARGET:.0f}%")
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(dict(backend=jax.default_backend(), results=results), f,
                indent=2)
  return 0 if worst["ratio"] < _TARGET else 1


if __name__ == "__main__":
  sys.exit(main())
