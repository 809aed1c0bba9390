"""Guarded multi-process initialisation and process-0 helpers.

`jax.distributed.initialize()` must run before any JAX computation, and a
bare call raises off-cluster ("coordinator_address should be defined"), so it
is only made when asked for:

* `SSM_ICL_DIST_INIT=1` in the environment (what `launch/tpu.sh` sets on every
  TPU-VM worker): auto-detection of the coordinator, process count and id
  (Cloud TPU metadata, GKE, Slurm, Open MPI);
* an explicit `coordinator_address`/`num_processes`/`process_id` triple, e.g.
  for several local processes on 127.0.0.1 (CPU tests, one multi-GPU host).

Logging and metric writing happen on process 0 only; every process runs the
same program, builds the same mesh and calls Orbax.
"""

from __future__ import annotations

from collections.abc import Mapping
import os

import jax

from ssm_icl import errors

ENV_VAR = "SSM_ICL_DIST_INIT"
_TRUE = ("1", "true", "yes")


def maybe_initialize(coordinator_address: str | None = None,
                     num_processes: int | None = None,
                     process_id: int | None = None,
                     *,
                     environ: Mapping[str, str] | None = None) -> bool:
  """Calls `jax.distributed.initialize` when asked to; returns whether it did.

  Args:
    coordinator_address: "host:port" of process 0's coordinator service.
    num_processes: total number of processes.
    process_id: index of this process in [0, num_processes).
    environ: environment to read `SSM_ICL_DIST_INIT` from (default os.environ).

  Returns:
    True if the distributed system was initialised by this call.

  Raises:
    ValueError: an incomplete triple or an out-of-range process id.
  """
  environ = os.environ if environ is None else environ
  given = {"coordinator_address": coordinator_address,
           "num_processes": num_processes, "process_id": process_id}
  explicit = {k: v for k, v in given.items() if v is not None}
  if explicit and len(explicit) != len(given):
    missing = sorted(set(given) - set(explicit))
    raise errors.UserError(
        f"Distributed initialisation needs coordinator_address, "
        f"num_processes and process_id together; missing {missing}.")
  if explicit:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise errors.UserError(
          f"process_id={process_id} must be in [0, num_processes="
          f"{num_processes}).")
  elif environ.get(ENV_VAR, "").lower() not in _TRUE:
    return False
  if jax.distributed.is_initialized():
    return False
  jax.distributed.initialize(**explicit)
  return True


def is_main_process() -> bool:
  """True on the process that logs, writes metrics and prints progress."""
  return jax.process_index() == 0
