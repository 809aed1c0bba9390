"""Selective-scan micro-benchmark: every schedule against same-run peers.

For b=64, d_model=128 (e=256), n=16 and l in {82, 512, 2048}, times the
forward and forward+backward pass (median of `--repeats` calls after a
warm-up, `block_until_ready`) and reads XLA's temp memory
(`compiled.memory_analysis()`) and compile time of:

* `selective_scan` with impl SEQUENTIAL, ASSOCIATIVE, CHUNKED, NATIVE (the
  C++ CPU kernel; CPU only) and AUTO (NATIVE on CPU, CHUNKED elsewhere),
* the fused Pallas kernel (PALLAS) on GPU/TPU; on CPU, where Pallas runs
  only in interpret mode, its row says "not measured" unless `--interpret`
  asks for the (meaningless for speed) interpreted kernel,
* `selective_scan_naive` (materialised [b, l, e, n] + associative scan, no
  remat): the baseline,
* an exp-throughput floor, `sum(exp(x))` over b * l * e * n elements: the
  scan needs that many exponentials, so no schedule can beat it.

Variants whose compiled temp memory exceeds `--max-run-gb` are compiled only
(their memory is reported, their time is not). Every claim is a ratio to
peers measured in the same process; absolute times depend on the machine and
its load. Uses JAX's default backend (CPU, GPU or TPU).

  python benchmarks/scan_bench.py [--quick] [--out FILE.json]

The kernel's targets (issue: fused kernels) are printed as ratios when the
PALLAS and CHUNKED rows are both measured: forward+backward at least 5x
faster than CHUNKED with no more temp memory (b=64, l=2048, e=512, n=16:
`--lengths 2048 --d-model 256`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from ssm_icl.ops import selective_scan as selective_scan_lib

_IMPLS = ("sequential", "associative", "chunked", "native", "auto", "pallas")
_NAIVE = "naive"
_PALLAS = "pallas"
_NOT_MEASURED = ("not measured: Pallas runs only in interpret mode on CPU "
                 "(pass --interpret to time the interpreter anyway)")
_NATIVE = "native"
_CPU_ONLY = "not measured: the native kernel is the CPU schedule"
_MB = 1e6


def make_inputs(key, batch, length, d_inner, d_state):
  """Random inputs with Mamba-like scales (A = -[1..n], softplus'd delta)."""
  keys = jax.random.split(key, 6)
  normal = jax.random.normal
  return dict(
      u=normal(keys[0], (batch, length, d_inner)),
      delta=normal(keys[1], (batch, length, d_inner)) - 3.0,
      A_log=jnp.log(jnp.broadcast_to(
          jnp.arange(1, d_state + 1, dtype=jnp.float32), (d_inner, d_state))),
      B=normal(keys[2], (batch, length, d_state)),
      C=normal(keys[3], (batch, length, d_state)),
      D=jnp.ones((d_inner,)),
      dt_bias=jnp.zeros((d_inner,)),
      z=normal(keys[4], (batch, length, d_inner)),
  )


def make_variant(name, chunk_size=None):
  """Returns f(u, delta, A_log, B, C, D, dt_bias, z) -> y for a variant."""
  if name == _NAIVE:
    def f(u, delta, A_log, B, C, D, dt_bias, z):
      return selective_scan_lib.selective_scan_naive(
          u, delta, A_log, B, C, D, dt_bias=dt_bias, z=z)
  else:
    def f(u, delta, A_log, B, C, D, dt_bias, z):
      return selective_scan_lib.selective_scan(
          u, delta, A_log, B, C, D, dt_bias=dt_bias, z=z, impl=name,
          chunk_size=chunk_size)
  return f


def _grad_fn(f):
  """Gradient of <f(...), cotangent> w.r.t. u, delta, A_log, B, C."""
  def loss(u, delta, A_log, B, C, D, dt_bias, z, cotangent):
    return jnp.sum(f(u, delta, A_log, B, C, D, dt_bias, z) * cotangent)
  return jax.grad(loss, argnums=(0, 1, 2, 3, 4))


def _compile(fn, args):
  """(compiled, compile seconds, temp bytes)."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  temp = memory.temp_size_in_bytes if memory is not None else float("nan")
  return compiled, seconds, temp


def _time(compiled, args, repeats):
  """Median wall seconds of `repeats` calls after one warm-up call."""
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure(fn, args, repeats, max_run_bytes):
  """Compile, read memory and (if it fits) time `fn`; a JSON-able dict."""
  compiled, compile_s, temp = _compile(fn, args)
  out = {"compile_s": compile_s, "temp_mb": temp / _MB, "ms": None}
  if temp <= max_run_bytes:
    out["ms"] = 1e3 * _time(compiled, args, repeats)
  return out


def exp_floor_ms(n_elements, repeats):
  """Median ms of sum(exp(x)) over `n_elements` float32 values."""
  x = jax.random.normal(jax.random.PRNGKey(1), (n_elements,), jnp.float32)
  compiled = jax.jit(lambda x: jnp.sum(jnp.exp(x))).lower(x).compile()
  return 1e3 * _time(compiled, (x,), repeats)


def run(lengths, batch, d_inner, d_state, repeats, max_run_bytes, variants,
        log=print, interpret=False):
  """Benchmarks `variants` at each length; returns a list of result rows.

  On CPU the PALLAS variant gets a row with a "note" and no numbers unless
  `interpret` is set.
  """
  rows = []
  for length in lengths:
    inputs = make_inputs(jax.random.PRNGKey(0), batch, length, d_inner,
                         d_state)
    args = tuple(inputs[k] for k in ("u", "delta", "A_log", "B", "C", "D",
                                     "dt_bias", "z"))
    cotangent = jax.random.normal(jax.random.PRNGKey(2), inputs["u"].shape)
    floor = exp_floor_ms(batch * length * d_inner * d_state, repeats)
    rows.append({"variant": "exp_floor", "length": length,
                 "fwd": {"ms": floor}, "grad": None})
    log(f"l={length}: exp floor {floor:.1f} ms")
    for name, chunk_size in variants:
      f = make_variant(name, chunk_size)
      label = name if chunk_size is None else f"{name}[t={chunk_size}]"
      if name == _NATIVE and jax.default_backend() != "cpu":
        rows.append({"variant": label, "length": length, "fwd": None,
                     "grad": None, "note": _CPU_ONLY})
        continue
      if name == _PALLAS and jax.default_backend() == "cpu":
        if not interpret:
          rows.append({"variant": label, "length": length, "fwd": None,
                       "grad": None, "note": _NOT_MEASURED})
          log(f"l={length} {label}: {_NOT_MEASURED}")
          continue
        label += "[interpret]"
      fwd = measure(f, args, repeats, max_run_bytes)
      grad = measure(_grad_fn(f), args + (cotangent,), repeats,
                     max_run_bytes)
      rows.append({"variant": label, "length": length, "fwd": fwd,
                   "grad": grad})
      log(f"l={length} {label}: fwd {fwd}, grad {grad}")
  return rows


def _ratio(num, den):
  return None if num is None or den is None else num / den


def table(rows):
  """Formats rows as a text table with ratios to naive and to the floor."""
  header = (f"{'variant':<18} {'l':>5} {'fwd ms':>9} {'grad ms':>9} "
            f"{'fwd MB':>8} {'grad MB':>8} {'cmp fwd/grad s':>15} "
            f"{'naive/fwd':>9} {'naive/grad':>10} {'fwd/floor':>9}")
  lines = [header, "-" * len(header)]
  def fmt(x, spec):  # "-" for "not run", right-aligned like the numbers
    return format("-", ">" + spec.split(".")[0]) if x is None else format(
        x, spec)
  by_length = {}
  for row in rows:
    by_length.setdefault(row["length"], {})[row["variant"]] = row
  for length, group in by_length.items():
    floor = group["exp_floor"]["fwd"]["ms"]
    naive = group.get(_NAIVE)
    for name, row in group.items():
      if name == "exp_floor":
        lines.append(f"{name:<18} {length:>5} {floor:>9.1f}")
        continue
      if row.get("note"):
        lines.append(f"{name:<18} {length:>5} {row['note']}")
        continue
      fwd, grad = row["fwd"], row["grad"]
      lines.append(
          f"{name:<18} {length:>5} {fmt(fwd['ms'], '9.1f')} "
          f"{fmt(grad['ms'], '9.1f')} {fwd['temp_mb']:>8.0f} "
          f"{grad['temp_mb']:>8.0f} "
          f"{fwd['compile_s']:>7.1f}/{grad['compile_s']:<7.1f} "
          f"{fmt(_ratio(naive and naive['fwd']['ms'], fwd['ms']), '9.1f')} "
          f"{fmt(_ratio(naive and naive['grad']['ms'], grad['ms']), '10.1f')} "
          f"{fmt(_ratio(fwd['ms'], floor), '9.2f')}")
    lines += _kernel_targets(length, group)
  return "\n".join(lines)


def _kernel_targets(length, group):
  """The PALLAS-vs-CHUNKED target lines, when both were timed."""
  pallas, chunked = group.get(_PALLAS), group.get("chunked")
  if not (pallas and chunked and pallas.get("grad") and chunked.get("grad")
          and pallas["grad"]["ms"] and chunked["grad"]["ms"]):
    return []
  speedup = chunked["grad"]["ms"] / pallas["grad"]["ms"]
  memory = pallas["grad"]["temp_mb"] / max(chunked["grad"]["temp_mb"], 1e-9)
  return [f"  l={length}: PALLAS fwd+bwd {speedup:.2f}x faster than CHUNKED "
          f"(target >= 5), temp memory {memory:.2f}x CHUNKED's (target <= 1)"]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="l=82 only, 3 repeats")
  parser.add_argument("--out", help="write the results as JSON here")
  parser.add_argument("--lengths", type=int, nargs="+",
                      default=[82, 512, 2048])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--d-model", type=int, default=128,
                      help="d_inner = 2 * d_model")
  parser.add_argument("--d-state", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--max-run-gb", type=float, default=None,
                      help="compile only above this temp memory (default "
                      "4 on CPU, 32 elsewhere)")
  parser.add_argument("--impls", nargs="+", default=list(_IMPLS) + [_NAIVE],
                      help="variants to run")
  parser.add_argument("--interpret", action="store_true",
                      help="on CPU, time the Pallas kernel in interpret mode "
                      "(slow; says nothing about GPU/TPU speed)")
  parser.add_argument("--chunk-sizes", type=int, nargs="*", default=[],
                      help="also time the SEQUENTIAL, CHUNKED, NATIVE and "
                      "PALLAS variants among --impls at these chunk sizes")
  args = parser.parse_args(argv)

  lengths = [82] if args.quick else args.lengths
  repeats = 3 if args.quick else max(args.repeats, 1)
  backend = jax.default_backend()
  max_gb = args.max_run_gb
  if max_gb is None:
    max_gb = 4.0 if backend == "cpu" else 32.0
  variants = [(name, None) for name in args.impls]
  variants += [(name, t) for t in args.chunk_sizes for name in args.impls
               if name in ("sequential", "chunked", _NATIVE, _PALLAS)]
  print(f"backend {backend}, devices {jax.devices()}, b={args.batch}, "
        f"e={2 * args.d_model}, n={args.d_state}, lengths {lengths}, "
        f"repeats {repeats}, run if temp <= {max_gb} GB", flush=True)
  rows = run(lengths, args.batch, 2 * args.d_model, args.d_state, repeats,
             max_gb * 1e9, variants,
             log=lambda s: print(s, file=sys.stderr, flush=True),
             interpret=args.interpret)
  print(table(rows))
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"backend": backend, "device": str(jax.devices()[0]),
                 "batch": args.batch, "d_inner": 2 * args.d_model,
                 "d_state": args.d_state, "repeats": repeats,
                 "max_run_gb": max_gb, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
