r"""Train-step throughput and compile time of the paper's configurations.

  python benchmarks/train_step_bench.py            # all cases
  python benchmarks/train_step_bench.py --quick    # paper Transformer + Mamba
  python benchmarks/train_step_bench.py --json=/tmp/bench.json
  python benchmarks/train_step_bench.py --compile_grid   # compile times only

Cases (the same jitted, sharded, donated step the trainer runs, batch
generated on device, Adam + clipping):
  * transformer / mamba / mambaformer: the paper's linear-regression models
    (D=128; Transformer 2 layers, Mamba 4, MambaFormer 4), batch 64, 41
    points = 82 tokens, d = 20;
  * deep_mamba_1024: a 24-layer D=256 Mamba at 1024 tokens (512 points of
    many-outlier regression) with `scan_layers` and `remat`; its batch is
    `--deep_batch` (64 on an accelerator; reduce it on a CPU, where one step
    at batch 64 takes minutes);
  * mamba_pallas / mambaformer_pallas / deep_mamba_1024_pallas: the same with
    the fused Pallas selective scan (`scan_impl="pallas"`). On CPU they are
    reported as not measured (Pallas runs only in interpret mode there)
    unless named in `--cases`.
`--compile_grid` only compiles, and instead of the cases above: the train
step of every paper configuration (configs/<task>.py for each of the nine
tasks and six families, at its curriculum's final prompt length), printing
each compile time against the CPU target of 10 s.
`--precisions=default,highest` times every case at both matmul precisions
and prints the ratio (the paper configs train at "highest").

PyTorch peers (with the `interop` extra installed; `--nopeers` skips them):
the transformer and mamba cases are also timed as the reference code's
models in PyTorch on the same shapes (`torch_peers.py`: Hugging Face
`GPT2Model`, and a stack of Hugging Face `MambaMixer` blocks), in the same
invocation, and the step-time ratios are printed with the CPU targets (our
Transformer step >= 2x faster than GPT2Model's, Mamba >= 40x faster than
the MambaMixer stack's). Run it on an otherwise idle machine: PyTorch's
OpenMP threads slow down far more than XLA's under CPU contention, which
would flatter the ratios. `SSM_ICL_HOST_MALLOC` (ssm_icl/host_memory.py: the
default `heap`, or `1` for long steps) applies to the whole process, so to
the PyTorch peers too.
Reports compile time (lower + compile), median step time over `--steps`
timed steps after one warm-up step, steps/s and tokens/s, printed as a table
and optionally written as JSON, with the kernel's targets: the paper
Mamba-4 step with the kernel at most 1.5x the Transformer-2 step, and the
24-layer step at most 200 ms on an H200.
"""

# pylint: disable=g-import-not-at-top,wrong-import-position
from __future__ import annotations

import importlib
import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags
from flax import linen as nn
import jax
import numpy as np

# Run as a script from the repository root: make `configs` importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import torch_peers
from configs import common
from configs import linear_regression
from configs import many_outlier_regression
from ssm_icl import host_memory
from ssm_icl import models
from ssm_icl import tasks
from ssm_icl.ops import flops as flops_lib
from ssm_icl.parallel import mesh as mesh_lib
from ssm_icl.train import optim
from ssm_icl.train import state as state_lib
from ssm_icl.train import step as step_lib

_QUICK = flags.DEFINE_bool("quick", False,
                           "Only the paper Transformer and Mamba.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per case.")
_DEEP_STEPS = flags.DEFINE_integer("deep_steps", 2,
                                   "Timed steps of the 24-layer case.")
_DEEP_BATCH = flags.DEFINE_integer(
    "deep_batch", None, "Batch of the 24-layer case (default 64 on GPU/TPU, "
    "4 on CPU).")
_JSON = flags.DEFINE_string("json", None, "Write the results here as JSON.")
_CASES = flags.DEFINE_list("cases", None, "Run only these cases.")
_PEERS = flags.DEFINE_bool(
    "peers", True, "Also time the PyTorch peers of the transformer and mamba "
    "cases (needs the interop extra).")
_PEER_STEPS = flags.DEFINE_integer(
    "peer_steps", None, "Timed steps of each PyTorch peer (default: --steps "
    "for GPT2Model, 2 for the MambaMixer stack, whose CPU step takes ~40 s).")
_GRID = flags.DEFINE_bool(
    "compile_grid", False, "Only compile the train step of every paper "
    "configuration (task x family), against COMPILE_TARGET_S.")
# Compile time (sampler + trace + XLA compile, no persistent cache) that
# every paper configuration must stay under on the 2-core CPU.
COMPILE_TARGET_S = 10.0
# Side of the square fp32 matmul whose rate a step's GFLOP/s is set against.
MATMUL_N = 1024
# Step-time targets on a CPU: peer step / our step must reach these.
PEER_TARGETS = {"transformer": 2.0, "mamba": 40.0}
_PALLAS_SUFFIX = "_pallas"
_PRECISIONS = flags.DEFINE_list(
    "precisions", None, "Matmul precisions to time each case at, e.g. "
    "default,highest (default: the config's train.matmul_precision, "
    "'highest' for the paper configs); with two, their step-time ratio is "
    "printed.")


def cases(deep_batch: int) -> dict:
  """name -> (config, n_points)."""
  result = {}
  for family in ("transformer", "mamba", "mambaformer"):
    config = linear_regression.get_config(family)
    result[family] = (config, 41)
  deep = many_outlier_regression.get_config("mamba")
  deep.model.update(d_model=256, n_layer=24, scan_layers=True, remat=True)
  deep.train.batch_size = deep_batch
  result["deep_mamba_1024"] = (deep, 512)
  for name in ("mamba", "mambaformer", "deep_mamba_1024"):
    config, n_points = result[name]
    config = config.copy_and_resolve_references()
    config.model.scan_impl = "pallas"
    result[name + _PALLAS_SUFFIX] = (config, n_points)
  return result


def paper_grid() -> dict:
  """name -> (config, n_points): every task x family at the paper's size,
  at its curriculum's final prompt length (the longest program it builds)."""
  result = {}
  for task in tasks.TASKS:
    module = importlib.import_module(f"configs.{task}")
    for family in common.FAMILIES:
      config = module.get_config(family)
      result[f"{task}:{family}"] = (config, config.task.curriculum.points.end)
  return result


def _build(config):
  """(task, ModelConfig) of a config (as `loop.build`, without importing the
  checkpointing stack, so the script runs where Orbax is not installed)."""
  task = tasks.get_task(config.task.name, **config.task.kwargs.to_dict())
  model = config.model.to_dict()
  model.update(d_in=task.d_in, d_out=task.d_out)
  return task, models.ModelConfig.from_config_dict(model)


def bench(config, n_points: int, steps: int,
          precision: str | None = None, with_peer: bool = True,
          compile_only: bool = False) -> dict:
  """Compiles and times the train step of `config` at `n_points`.

  The step runs under `precision` (default: the config's
  `train.matmul_precision`), as the trainer does. With `with_peer` (and
  --peers, the interop extra, a transformer or mamba case), the PyTorch peer
  is timed too, under result["peer"]. With `compile_only`, nothing runs:
  the result has the compile time and the shapes only.
  """
  precision = precision or config.train.matmul_precision
  task, model_cfg = _build(config)
  model = models.build_model(model_cfg)
  tx = optim.make_optimizer(config.train)
  mesh = mesh_lib.make_mesh(config.mesh.shape, config.mesh.axes)
  rules = mesh_lib.axis_rules(config.mesh.rules, mesh)
  batch = config.train.batch_size
  mesh_lib.check_batch_divisible(batch, mesh)
  with (jax.set_mesh(mesh), nn.logical_axis_rules(rules),
        jax.default_matmul_precision(precision)):
    sharded = state_lib.abstract_state(
        model, tx, (1, task.seq_len(n_points), task.d_in), 0, mesh, rules)
    state = state_lib.init_state(sharded)
    sample = step_lib.jit_sampler(
        step_lib.sample_train_prompt, mesh, task=task, batch_size=batch,
        n_points=n_points, pad_points=n_points, seed=0)
    fn = step_lib.jit_train_step(
        sharded.shardings,
        step_lib.prompt_shardings(task, mesh, batch, n_points), mesh, seed=0)
    replicated = mesh_lib.replicated(mesh)
    n_dims = jax.device_put(np.int32(task.n_dims), replicated)
    no_nan = jax.device_put(np.int32(-1), replicated)
    start = time.perf_counter()
    sample = sample.lower(state.step, n_dims).compile()
    prompt = sample(state.step, n_dims)
    compiled = fn.lower(state, prompt, no_nan).compile()
    compile_s = time.perf_counter() - start
    shapes = {
        "family": model_cfg.family, "n_layer": model_cfg.n_layer,
        "d_model": model_cfg.d_model, "batch": batch, "precision": precision,
        "tokens_per_prompt": task.seq_len(n_points),
        "params": int(sum(x.size for x in jax.tree.leaves(state.params))),
        # Analytic forward + backward FLOPs of the step (ssm_icl.ops.flops).
        "step_gflop": flops_lib.model_flops(
            model_cfg, task.seq_len(n_points), batch=batch,
            training=True)["total"] / 1e9,
        "compile_s": compile_s}
    if compile_only:
      return shapes
    # Each timed step samples its batch on device, as the training loop does.
    state, metrics = compiled(state, sample(state.step, n_dims), no_nan)
    jax.block_until_ready(metrics)  # warm-up
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      state, metrics = compiled(state, sample(state.step, n_dims), no_nan)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  peer = None
  if (with_peer and _PEERS.value and model_cfg.family in PEER_TARGETS
      and model_cfg.scan_impl != "pallas" and torch_peers.available()):
    peer_steps = _PEER_STEPS.value or (
        steps if model_cfg.family == "transformer" else 2)
    peer = torch_peers.bench(
        model_cfg, batch=batch, n_tokens=task.seq_len(n_points),
        n_positions=config.model.n_positions,
        grad_clip=config.train.grad_clip, lr=config.train.lr,
        steps=peer_steps)
  tokens = batch * task.seq_len(n_points)
  return {
      **shapes, "step_ms": 1e3 * step_s,
      "steps_per_s": 1.0 / step_s, "tokens_per_s": tokens / step_s,
      "gflops_per_s": shapes["step_gflop"] / step_s,
      "loss": float(metrics["train/loss"]), "peer": peer,
  }


def matmul_gflops(n: int = MATMUL_N, repeats: int = 10) -> float:
  """GFLOP/s of one jitted fp32 [n, n] x [n, n] matmul here (best of
  `repeats`): the most a step made of matmuls could sustain on this
  machine, to set a step's GFLOP/s against."""
  a = jax.numpy.ones((n, n), jax.numpy.float32)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best / 1e9


def compile_grid(backend: str) -> None:
  """--compile_grid: compiles and prints every paper configuration."""
  results = {}
  print(f"{'config':<42} {'tokens':>6} {'layers':>6} {'compile s':>9}",
        flush=True)
  for name, (config, n_points) in paper_grid().items():
    r = results[name] = bench(config, n_points, 0, compile_only=True)
    print(f"{name:<42} {r['tokens_per_prompt']:>6} {r['n_layer']:>6} "
          f"{r['compile_s']:>9.2f}", flush=True)
  worst = max(results, key=lambda n: results[n]["compile_s"])
  over = [n for n, r in results.items() if r["compile_s"] >= COMPILE_TARGET_S]
  print(f"\n{len(results)} configs on {backend}, jax {jax.__version__}: the "
        f"longest compile {results[worst]['compile_s']:.2f} s ({worst}); "
        f"target < {COMPILE_TARGET_S:g} s on the 2-core CPU: "
        + (f"NOT met by {over}" if over else "met by every config"))
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump({"backend": backend, "jax": jax.__version__,
                 "compile_grid": results}, f, indent=1)


def main(argv):
  del argv
  # Honours SSM_ICL_HOST_MALLOC as the CLIs do; before the backend starts.
  host_memory.configure()
  backend = jax.default_backend()
  if _GRID.value:
    compile_grid(backend)
    return
  deep_batch = _DEEP_BATCH.value or (4 if backend == "cpu" else 64)
  selected = cases(deep_batch)
  names = _CASES.value or (["transformer", "mamba"] if _QUICK.value
                           else list(selected))
  not_measured = []
  if backend == "cpu" and not _CASES.value:
    # The interpreted kernel's speed says nothing about GPU/TPU speed.
    not_measured = [n for n in names if n.endswith(_PALLAS_SUFFIX)]
    names = [n for n in names if n not in not_measured]
  results = {}
  precisions = _PRECISIONS.value or [None]
  for name in names:
    config, n_points = selected[name]
    steps = _DEEP_STEPS.value if name.startswith("deep") else _STEPS.value
    for i, precision in enumerate(precisions):
      key = name if len(precisions) == 1 else f"{name}@{precision}"
      # The PyTorch peer (fp32 either way) is timed once per case.
      results[key] = bench(config, n_points, steps, precision,
                           with_peer=i == 0)
      print(f"done {key}", flush=True)
  device = jax.devices()[0]
  header = (f"{'case':<26} {'precision':>9} {'layers':>6} {'D':>4} "
            f"{'batch':>5} {'tokens':>6} {'params':>10} {'compile s':>9} "
            f"{'step ms':>9} {'steps/s':>8} {'tokens/s':>10}")
  print(f"\n{device.device_kind} x {jax.device_count()} ({backend}), "
        f"jax {jax.__version__}")
  print(header)
  print("-" * len(header))
  for name, r in results.items():
    print(f"{name:<26} {r['precision']:>9} {r['n_layer']:>6} "
          f"{r['d_model']:>4} {r['batch']:>5} {r['tokens_per_prompt']:>6} "
          f"{r['params']:>10,} {r['compile_s']:>9.2f} {r['step_ms']:>9.2f} "
          f"{r['steps_per_s']:>8.2f} {r['tokens_per_s']:>10,.0f}")
  for name in not_measured:
    print(f"{name:<18} not measured: Pallas runs only in interpret mode on "
          "CPU (name the case in --cases to time the interpreter anyway)")
  for mamba in ("mamba", "mamba" + _PALLAS_SUFFIX):
    if mamba in results and "transformer" in results:
      ratio = results[mamba]["step_ms"] / results["transformer"]["step_ms"]
      target = " (target <= 1.5)" if mamba.endswith(_PALLAS_SUFFIX) else ""
      print(f"\n{mamba} / transformer step-time ratio: {ratio:.2f}{target}")
  for name, r in results.items():
    peer = r.get("peer")
    if peer:
      family = r["family"]
      ratio = peer["step_ms"] / r["step_ms"]
      r["peer_ratio"] = ratio
      print(f"\n{name}: PyTorch {peer['impl']} step {peer['step_ms']:.0f} ms "
            f"({peer['threads']} threads, torch {peer['torch']}, "
            f"transformers {peer['transformers']}) / ours "
            f"{r['step_ms']:.0f} ms = {ratio:.2f}x (target >= "
            f"{PEER_TARGETS[family]:g}x: "
            f"{'met' if ratio >= PEER_TARGETS[family] else 'NOT met'})")
  if any(r.get("peer") for r in results.values()):
    # What a target asks of the machine: the GFLOP/s the whole step would
    # have to sustain, beside a large matmul's (the ceiling for a step).
    peak = matmul_gflops()
    for name, r in results.items():
      if r.get("peer"):
        need = r["step_gflop"] * PEER_TARGETS[r["family"]] / (
            r["peer"]["step_ms"] / 1e3)
        r["needed_gflops_per_s"] = need
        print(f"{name}: {r['step_gflop']:.1f} GFLOP per step; ours "
              f"{r['gflops_per_s']:.0f} GFLOP/s, the peer "
              f"{r['step_gflop'] / r['peer']['step_ms'] * 1e3:.0f}, the "
              f"target needs {need:.0f}; a {MATMUL_N}^2 fp32 matmul here: "
              f"{peak:.0f} GFLOP/s")
  if _PEERS.value and not torch_peers.available():
    print("\nPyTorch peers not measured: install the interop extra "
          "(pip install -e .[interop]).")
  deep = "deep_mamba_1024" + _PALLAS_SUFFIX
  if deep in results:
    print(f"{deep} step: {results[deep]['step_ms']:.0f} ms (target <= 200 "
          f"ms on an H200, batch 64; this run: {device.device_kind}, batch "
          f"{results[deep]['batch']})")
  if len(precisions) == 2:
    a, b = precisions
    for name in names:
      ratio = (results[f"{name}@{b}"]["step_ms"]
               / results[f"{name}@{a}"]["step_ms"])
      print(f"{name}: step time {b} / {a} = {ratio:.2f}")
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump({"device": device.device_kind, "backend": backend,
                 "not_measured": not_measured,
                 "device_count": jax.device_count(),
                 "jax": jax.__version__, "results": results}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
