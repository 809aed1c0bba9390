"""Training cost against sequence length: Mamba versus attention.

For every length in `--lengths` (default 128 ... 4096) and every model of
`MODELS`, times one jitted forward+backward pass (the gradient of the mean
squared output with respect to all parameters; median of `--repeats` calls
after a warm-up, `block_until_ready`) and reads XLA's temp memory
(`compiled.memory_analysis().temp_size_in_bytes`) and the compile time:

  mamba_block   one Mamba block (read-in, block, norm, read-out)
  attn_block    one attention block, same width
  mamba         the paper's Mamba: `--n_layer` Mamba blocks
  transformer   the paper's Transformer: `--n_layer` / 2 layers of
                attention + MLP, learned positions

Attention uses `attn_impl="auto"`: dense up to 512 tokens, then the blocked
online-softmax path (ssm_icl/ops/attention.py), which keeps memory linear in
the length, so 4096 tokens fit. `--attn_impl=dense` forces the materialised
path for comparison (add `--max_temp_gb` to skip what would not fit).

It prints a table and the log-log slope of time and memory against length
for each model (over the lengths >= `--fit_from`): ~1 means linear, ~2
quadratic. Every number is measured in this process, on JAX's default
backend; absolute times depend on the machine and its load.

  python benchmarks/scaling_bench.py [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import models

MODELS = ("mamba_block", "attn_block", "mamba", "transformer")
_MB = 2.0**20


def model_config(name: str, args: argparse.Namespace, length: int):
  """The ModelConfig of benchmark model `name` at `length` tokens."""
  common = dict(d_model=args.d_model, n_head=args.n_head, d_in=args.d_in,
                d_out=1, n_positions=length, attn_impl=args.attn_impl,
                attn_block_size=args.block_size)
  if name == "mamba_block":
    return models.ModelConfig(family="custom", pattern="mamba", n_layer=1,
                              **common)
  if name == "attn_block":
    return models.ModelConfig(family="custom", pattern="attn", n_layer=1,
                              **common)
  if name == "mamba":
    return models.ModelConfig(family="mamba", n_layer=args.n_layer, **common)
  if name == "transformer":
    return models.ModelConfig(family="transformer",
                              n_layer=max(1, args.n_layer // 2), **common)
  raise ValueError(f"Unknown model {name!r}; expected one of {MODELS}.")


def measure(name: str, args: argparse.Namespace, length: int
            ) -> dict[str, float]:
  """Compile time, temp memory and median fwd+bwd time of one case."""
  config = model_config(name, args, length)
  model = models.ICLModel(config)
  key = jax.random.key(0)
  tokens = jax.random.normal(key, (args.batch, length, args.d_in))
  params = jax.jit(model.init)(key, tokens[:1])["params"]

  def loss(p, x):
    return jnp.mean(model.apply({"params": p}, x) ** 2)

  grad = jax.jit(jax.grad(loss))
  t0 = time.perf_counter()
  compiled = grad.lower(params, tokens).compile()
  compile_s = time.perf_counter() - t0
  temp = compiled.memory_analysis().temp_size_in_bytes
  row = {"model": name, "length": length, "compile_s": compile_s,
         "temp_mb": temp / _MB, "params": models.count_params(params)}
  if args.max_temp_gb and temp > args.max_temp_gb * 2**30:
    row["ms"] = float("nan")
    return row
  jax.block_until_ready(compiled(params, tokens))  # warm-up
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(params, tokens))
    times.append(time.perf_counter() - t0)
  row["ms"] = 1e3 * statistics.median(times)
  return row


def slope(rows: list[dict[str, float]], key: str, fit_from: int) -> float:
  """Least-squares slope of log(key) against log(length)."""
  pts = [(r["length"], r[key]) for r in rows
         if r["length"] >= fit_from and np.isfinite(r[key]) and r[key] > 0]
  if len(pts) < 2:
    return float("nan")
  x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
  return float(np.polyfit(x, y, 1)[0])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--lengths", default="128,256,512,1024,2048,4096")
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--d_model", type=int, default=64)
  parser.add_argument("--n_head", type=int, default=4)
  parser.add_argument("--n_layer", type=int, default=4)
  parser.add_argument("--d_in", type=int, default=20)
  parser.add_argument("--attn_impl", default="auto",
                      choices=("auto", "dense", "blocked"))
  parser.add_argument("--block_size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--fit_from", type=int, default=512,
                      help="fit the slopes over lengths >= this")
  parser.add_argument("--max_temp_gb", type=float, default=0.0,
                      help="compile only cases needing more temp memory")
  parser.add_argument("--quick", action="store_true",
                      help="lengths 128,256,512 and 1 repeat (a smoke run)")
  parser.add_argument("--out", default=None, help="write the rows as JSON")
  args = parser.parse_args()
  if args.quick:
    args.lengths, args.repeats, args.fit_from = "128,256,512", 1, 128
  lengths = [int(v) for v in args.lengths.split(",")]
  names = args.models.split(",")
  for name in names:
    if name not in MODELS:
      parser.error(f"--models: unknown {name!r}; expected some of {MODELS}.")
  device = jax.devices()[0]
  print(f"# {device.device_kind} ({device.platform}), JAX {jax.__version__}; "
        f"batch {args.batch}, d_model {args.d_model}, heads {args.n_head}, "
        f"attn_impl {args.attn_impl}; fwd+bwd median of {args.repeats}",
        flush=True)
  print(f"{'model':>12} {'length':>6} {'params':>8} {'ms':>10} "
        f"{'temp MB':>9} {'compile s':>9}", flush=True)
  rows = []
  for name in names:
    for length in lengths:
      row = measure(name, args, length)
      rows.append(row)
      print(f"{name:>12} {length:>6} {row['params']:>8,} {row['ms']:>10.1f} "
            f"{row['temp_mb']:>9.1f} {row['compile_s']:>9.1f}", flush=True)
  print(f"\nlog-log slopes over lengths >= {args.fit_from} "
        "(1 = linear, 2 = quadratic):")
  for name in names:
    mine = [r for r in rows if r["model"] == name]
    print(f"{name:>12}: time {slope(mine, 'ms', args.fit_from):.2f}, "
          f"temp memory {slope(mine, 'temp_mb', args.fit_from):.2f}")
  pairs = (("mamba_block", "attn_block"), ("mamba", "transformer"))
  for a, b in pairs:
    if a in names and b in names:
      ratios = [next(r["ms"] for r in rows if r["model"] == b
                     and r["length"] == n)
                / next(r["ms"] for r in rows if r["model"] == a
                       and r["length"] == n) for n in lengths]
      print(f"{b} / {a} time: " + ", ".join(
          f"{n}: {x:.2f}x" for n, x in zip(lengths, ratios)))
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
