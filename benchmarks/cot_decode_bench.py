"""Chain-of-thought evaluation: recurrent decoding vs one forward per example.

`tasks.cot_autoregressive_predict` (mode "query") runs one full forward pass
of the 3n-token prompt per example (n passes); `tasks.cot_recurrent_predict`
walks the prompt once with the model's decoding cache (4n single-token
steps). Both give the same predictions (checked here to 1e-4 of the output
scale). For each family, times both (median of `--repeats` calls after a
warm-up, `block_until_ready`) on the CoT-I/O task's default prompt
(n = 101 examples, 303 tokens) and prints the speed-up ratio. Absolute times
depend on the machine and its load; the ratio is measured in one process.

  python benchmarks/cot_decode_bench.py [--quick] [--families mamba,hybrid]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import numpy as np

from ssm_icl import models
from ssm_icl import tasks


def _time(fn, *args, repeats):
  jax.block_until_ready(fn(*args))  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def bench(family: str, *, batch: int, n_points: int, d_model: int,
          n_layer: int, repeats: int) -> dict:
  task = tasks.CotIO()
  prompt = task.sample(jax.random.key(0), batch, n_points)
  length = prompt.tokens.shape[1]
  model = models.ICLModel(models.ModelConfig(
      family=family, n_layer=n_layer, d_model=d_model, d_in=task.d_in,
      d_out=task.d_out, n_positions=length))
  params = jax.jit(model.init)(jax.random.key(1), prompt.tokens)["params"]

  @jax.jit
  def per_example(params, prompt):
    return tasks.cot_autoregressive_predict(
        lambda t: model.apply({"params": params}, t), prompt, task)

  @jax.jit
  def recurrent(params, prompt):
    return tasks.cot_recurrent_predict(
        functools.partial(model.decode_step, params),
        model.init_cache(batch, length), prompt, task)

  want = np.asarray(per_example(params, prompt))
  got = np.asarray(recurrent(params, prompt))
  err = float(np.abs(got - want).max() / np.abs(want).max())
  if err > 1e-4:
    raise AssertionError(f"{family}: recurrent CoT differs by {err:.2e}")
  t_full = _time(per_example, params, prompt, repeats=repeats)
  t_rec = _time(recurrent, params, prompt, repeats=repeats)
  return dict(family=family, per_example_s=t_full, recurrent_s=t_rec,
              speedup=t_full / t_rec, max_rel_diff=err)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--families", default="mamba,transformer,mambaformer")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--n-points", type=int, default=101)
  parser.add_argument("--d-model", type=int, default=128)
  parser.add_argument("--n-layer", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--quick", action="store_true",
                      help="batch 8, 21 examples, d_model 32, 2 layers")
  args = parser.parse_args()
  if args.quick:
    args.batch, args.n_points, args.d_model, args.n_layer = 8, 21, 32, 2
  print(f"backend={jax.default_backend()} batch={args.batch} "
        f"n_points={args.n_points} d_model={args.d_model} "
        f"n_layer={args.n_layer}")
  for family in args.families.split(","):
    r = bench(family, batch=args.batch, n_points=args.n_points,
              d_model=args.d_model, n_layer=args.n_layer,
              repeats=args.repeats)
    print(f"{r['family']:12s} one forward per example {r['per_example_s']:8.3f}"
          f" s   recurrent {r['recurrent_s']:8.3f} s   speed-up "
          f"{r['speedup']:6.1f}x   (max rel diff {r['max_rel_diff']:.1e})")


if __name__ == "__main__":
  main()
