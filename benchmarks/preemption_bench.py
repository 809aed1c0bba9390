r"""SIGTERM-to-exit time of a training run, and what the compile cache saves.

  python benchmarks/preemption_bench.py                 # paper Mamba, CPU
  python benchmarks/preemption_bench.py \
      --config=configs/linear_regression.py:transformer

Starts `python -m ssm_icl.main` twice on the same workdir with an empty
compilation cache: the first start compiles (cold cache), the second
resumes from the checkpoint the first one saved at SIGTERM and loads its
programs (warm cache). Each start gets SIGTERM `--wait_s` seconds after its
first step finished (so the loop is in full flight, with the default
`log_every`), and the script reports:

  * first step: seconds from the loop's start to the end of its first step
    (compilation or cache load included), cold vs warm, and the trainer's
    own compile-cache line;
  * signal -> stop: the trainer's time from the signal to the stop (the
    in-flight steps finishing and the save starting);
  * save: the trainer's time to finish writing the checkpoint;
  * signal -> exit: measured here, from `kill` to the process's exit
    (stop + save + interpreter shutdown).

The targets: signal -> exit under 5 s plus the save, and a second start
that compiles nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CONFIG = flags.DEFINE_string("config", "configs/linear_regression.py:mamba",
                              "Training config to run.")
_WAIT_S = flags.DEFINE_float(
    "wait_s", 3.0, "Seconds between the end of the first step and SIGTERM.")
_OVERRIDES = flags.DEFINE_multi_string(
    "override", [], "Extra --config.* overrides, e.g. "
    "--override=--config.train.batch_size=32.")
_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 1, "CPU devices of the run (XLA host device count).")


def run_once(workdir: str, cache: str) -> dict[str, float | str]:
  """One start: waits for the first step, SIGTERMs it, times the exit."""
  env = dict(os.environ)
  env.update({"PYTHONPATH": REPO + os.pathsep + env.get("PYTHONPATH", ""),
              "XLA_FLAGS": "--xla_force_host_platform_device_count="
                           f"{_DEVICES.value}"})
  if "JAX_PLATFORMS" not in env:
    env["JAX_PLATFORMS"] = "cpu"
  args = [sys.executable, "-m", "ssm_icl.main", f"--config={_CONFIG.value}",
          f"--workdir={workdir}", f"--compile_cache={cache}",
          *_OVERRIDES.value]
  process = subprocess.Popen(args, cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
  lines, first_step = [], threading.Event()

  def read():
    for line in process.stdout:
      lines.append(line.rstrip("\n"))
      if line.startswith("Step ") and " done " in line:
        first_step.set()

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  while not first_step.wait(0.1):
    if process.poll() is not None:
      reader.join()
      raise RuntimeError("the run ended before its first step:\n"
                         + "\n".join(lines[-30:]))
  time.sleep(_WAIT_S.value)
  sent = time.perf_counter()
  process.send_signal(signal.SIGTERM)
  code = process.wait()
  exit_s = time.perf_counter() - sent
  reader.join()
  text = "\n".join(lines)
  if code != 0:
    raise RuntimeError(f"exit status {code}:\n" + "\n".join(lines[-30:]))
  first = re.search(r"Step (\d+) done ([\d.]+) s after the loop started"
                    r"[^\n]*?(Compilation cache [^\n]*)", text)
  stop = re.search(r"Stopping at step (\d+) \(SIGTERM\) ([\d.]+) s after "
                   r"the signal; .*\(([\d.]+) s to finish writing it\)", text)
  if not first or not stop:
    raise RuntimeError("unexpected output:\n" + text[-3000:])
  return {"first_step": int(first.group(1)),
          "first_step_s": float(first.group(2)),
          "cache_line": first.group(3),
          "stopped_at": int(stop.group(1)),
          "signal_to_stop_s": float(stop.group(2)),
          "save_s": float(stop.group(3)),
          "signal_to_exit_s": exit_s}


def main(argv):
  del argv
  root = tempfile.mkdtemp(prefix="preemption_bench_")
  try:
    workdir, cache = os.path.join(root, "run"), os.path.join(root, "cache")
    results = {}
    for name in ("cold cache", "warm cache"):
      results[name] = run_once(workdir, cache)
      print(f"done: {name}", flush=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(f"\n{_CONFIG.value}, {_DEVICES.value} CPU device(s), SIGTERM "
        f"{_WAIT_S.value:g} s after the first step")
  header = (f"{'start':<11} {'steps':>11} {'first step s':>12} "
            f"{'signal->stop s':>14} {'save s':>7} {'signal->exit s':>14}")
  print(header)
  print("-" * len(header))
  for name, r in results.items():
    steps = f"{r['first_step']}-{r['stopped_at']}"
    print(f"{name:<11} {steps:>11} {r['first_step_s']:>12.2f} "
          f"{r['signal_to_stop_s']:>14.2f} {r['save_s']:>7.2f} "
          f"{r['signal_to_exit_s']:>14.2f}")
  for name, r in results.items():
    print(f"{name}: {r['cache_line']}")
  cold, warm = results["cold cache"], results["warm cache"]
  print(f"\nFirst step, cold / warm cache: {cold['first_step_s']:.2f} s / "
        f"{warm['first_step_s']:.2f} s "
        f"({cold['first_step_s'] / warm['first_step_s']:.1f}x).")
  worst = max(r["signal_to_exit_s"] - r["save_s"] for r in results.values())
  print(f"Worst signal -> exit minus the save: {worst:.2f} s (target < 5 s).")


if __name__ == "__main__":
  app.run(main)
