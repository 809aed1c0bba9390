"""Trains a suite's runs in parallel processes, each on its own CPUs.

`python -m ssm_icl.reproduce ... --workers=N` splits the unfinished runs of
the plan into N shares and trains each share in a child process (the same
command with `--worker_runs=<plan indices>`), pinned to its own slice of the
CPUs this process may use. The parent forwards every child's output line,
prefixed `[worker k]`, forwards SIGTERM / Ctrl-C to the children (each saves
its current step and stops, as a single suite does), waits for them and then
writes the suite's tables and figures once.

Why: the `mini` suite's models are small (D = 32: a training step is ~100-
200 XLA kernels of a few hundred microseconds), so a second thread inside
one step helps them little, while a second run on the other core does real
work. Measured on a 2-core CPU (2026-12-02, mini linear regression, steps
of 22 tokens): one process on both cores 30-38 ms per Transformer-4 step,
two processes on one core each 47 ms per step each, i.e. ~1.3-1.6x the
steps per second of the machine; ~1.15x for the longer-prompt Mamba runs
(sparse parity). On a many-core host the gain grows with the cores: one
worker per core (or per few cores for larger models).

A child's thread pools follow its CPU affinity (XLA:CPU sizes its pools by
the CPUs it may run on), so pinning alone makes a one-CPU worker single-
threaded. Pinning needs `os.sched_setaffinity` (Linux); elsewhere the
children share the CPUs. Each run is still trained by exactly one process
(its DONE marker and checkpoints are its own), so the workdir may be local
or gs:// as for one process. A run's floating-point results can differ at
the last bits from a run on another number of threads (different reduction
orders), as between machines.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Sequence

from ssm_icl import errors
from ssm_icl.train import metrics as metrics_lib

# update_build: ignore-strings (the children run `ssm_icl.reproduce`, whose
# __main__ imports this module: its target already holds both)

_print = functools.partial(print, flush=True)

# The child's flag: comma-separated indices into the plan (`plan_runs`).
WORKER_RUNS_FLAG = "worker_runs"


def check_workers(n_workers: int) -> None:
  """Raises UserError unless --workers is at least 1."""
  if n_workers < 1:
    raise errors.UserError(f"--workers={n_workers} must be >= 1.")


def partition(costs: Sequence[float], n_workers: int) -> list[list[int]]:
  """Splits runs into `n_workers` shares of about equal total cost.

  Longest-processing-time first: the costliest remaining run goes to the
  least-loaded share (ties: the lowest share), which is within 4/3 of the
  best split. Deterministic.

  Args:
    costs: [n_runs] a cost per run (e.g. training FLOPs).
    n_workers: number of shares; >= 1.

  Returns:
    `n_workers` lists of indices into `costs`, each ascending (plan order);
    some are empty when there are fewer runs than workers.
  """
  check_workers(n_workers)
  loads = [0.0] * n_workers
  shares = [[] for _ in range(n_workers)]
  for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
    k = min(range(n_workers), key=lambda k: (loads[k], k))
    shares[k].append(i)
    loads[k] += costs[i]
  return [sorted(s) for s in shares]


def available_cpus() -> list[int] | None:
  """The CPUs this process may run on, or None where that is unknown."""
  if not hasattr(os, "sched_getaffinity"):
    return None
  return sorted(os.sched_getaffinity(0))


def cpu_groups(cpus: Sequence[int] | None,
               n_workers: int) -> list[list[int] | None]:
  """Disjoint, contiguous slices of `cpus`, one per worker (None: no pinning).

  Raises:
    UserError: more workers than CPUs.
  """
  if cpus is None:
    return [None] * n_workers
  if n_workers > len(cpus):
    raise errors.UserError(
        f"--workers={n_workers} is more than the {len(cpus)} CPUs this "
        f"process may use ({', '.join(map(str, cpus))}); use at most "
        f"{len(cpus)}.")
  size, extra = divmod(len(cpus), n_workers)
  groups, start = [], 0
  for k in range(n_workers):
    end = start + size + (1 if k < extra else 0)
    groups.append(list(cpus[start:end]))
    start = end
  return groups


def worker_command(argv: Sequence[str], indices: Sequence[int]) -> list[str]:
  """The child's command line: this command, one worker, its share."""
  return [sys.executable, "-m", "ssm_icl.reproduce", *argv, "--workers=1",
          f"--{WORKER_RUNS_FLAG}={','.join(map(str, indices))}"]


def run_workers(argv: Sequence[str], shares: Sequence[Sequence[int]],
                groups: Sequence[Sequence[int] | None],
                out: Callable[[str], None] = _print) -> dict[int, int]:
  """Runs one child per non-empty share and waits for all of them.

  SIGTERM or Ctrl-C (SIGINT) received meanwhile are forwarded to every
  child as one SIGTERM (the children then save and stop); the parent keeps
  waiting for them.

  Args:
    argv: this command's arguments (without the program), repeated in each
      child.
    shares: per worker, its plan indices (`partition`).
    groups: per worker, its CPUs (`cpu_groups`) or None.
    out: prints one line (called from several threads, one at a time).

  Returns:
    {worker k: its exit status} for every non-empty share.
  """
  lock = threading.Lock()

  def say(line):
    with lock:
      out(line)

  children, readers = {}, []
  jobs = [(k, s, g) for k, (s, g) in enumerate(zip(shares, groups)) if s]
  for k, share, cpus in jobs:
    where = "any CPU" if cpus is None else (
        "CPU" + ("s " if len(cpus) > 1 else " ") + ", ".join(map(str, cpus)))
    say(f"[worker {k}] {len(share)} run(s) (plan indices "
        f"{', '.join(map(str, share))}) on {where}.")
    # The child gets its affinity before Python starts, so every thread
    # pool it creates is sized by it. Its own session: a terminal's Ctrl-C
    # reaches only the parent, which forwards one SIGTERM.
    preexec = (None if cpus is None else
               (lambda cpus=cpus: os.sched_setaffinity(0, cpus)))
    child = subprocess.Popen(
        worker_command(argv, share), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, bufsize=1,
        preexec_fn=preexec, start_new_session=True)
    children[k] = child
    reader = threading.Thread(target=_forward, args=(child, k, say),
                              daemon=True)
    reader.start()
    readers.append(reader)

  stopping = threading.Event()

  def stop(signum, frame):
    del signum, frame
    if not stopping.is_set():
      stopping.set()
      say("Stop requested: asking every worker to save and stop.")
      for child in children.values():
        if child.poll() is None:
          child.send_signal(signal.SIGTERM)

  previous = {}
  if threading.current_thread() is threading.main_thread():
    for s in (signal.SIGTERM, signal.SIGINT):
      previous[s] = signal.signal(s, stop)
  start = time.perf_counter()
  try:
    while any(c.poll() is None for c in children.values()):
      time.sleep(0.2)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  for reader in readers:
    reader.join()
  codes = {k: c.wait() for k, c in children.items()}
  say(f"Workers finished in "
      f"{metrics_lib.format_duration(time.perf_counter() - start)}; exit "
      f"statuses {list(codes.values())}.")
  return codes


def run_parallel(suite, workdir, argv: Sequence[str], n_workers: int, *,
                 sweep=(), tasks=None, families=None,
                 out: Callable[[str], None] = _print):
  """`runner.run_suite` with the unfinished runs split over `n_workers`.

  Args:
    suite, workdir, sweep, tasks, families: as `runner.run_suite`.
    argv: this command's arguments (repeated in each child).
    n_workers: processes; at most the CPUs this process may use.
    out: prints a line.

  Returns:
    [(worker, exit status)] of the workers that failed (their output, above,
    says why); `failure_message` words it.

  Raises:
    UserError: too many workers.
  """
  # pylint: disable=g-import-not-at-top
  from ssm_icl.reproduce import runner
  # pylint: enable=g-import-not-at-top
  groups = cpu_groups(available_cpus(), n_workers)
  plan = runner.prepare(suite, workdir, sweep=sweep, tasks=tasks,
                        families=families)
  todo = [i for i, m in enumerate(plan.markers) if m is None]
  out(f"Suite {suite.name!r}: {len(plan.runs)} runs in {plan.workdir}, "
      f"{len(plan.runs) - len(todo)} finished earlier; {len(todo)} to train "
      f"in {min(n_workers, len(todo))} worker process(es).")
  if not todo:
    return []
  shares = [[todo[j] for j in share] for share in partition(
      [plan.costs[i]["train_flops"] for i in todo], n_workers)]
  codes = run_workers(argv, shares, groups, out=out)
  return [(k, c) for k, c in codes.items() if c != 0]


def failure_message(failed: Sequence[tuple[int, int]]) -> str:
  """One line for the workers that failed (`run_parallel`)."""
  return ("; ".join(f"worker {k} exited with status {c}" for k, c in failed)
          + " (its [worker k] lines above say why). Every run the workers "
          "finished is kept; the same command resumes the others.")


def _forward(child: subprocess.Popen, k: int, say: Callable[[str], None]
             ) -> None:
  for line in child.stdout:
    say(f"[worker {k}] {line.rstrip()}")
