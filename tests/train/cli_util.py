"""Helpers for tests that run `python -m ssm_icl.main` in subprocesses.

Subprocesses get the same fake device count as the pytest process and
inherit its persistent compilation cache (tests/conftest.py exports
JAX_COMPILATION_CACHE_DIR), so programs compiled by one test are reused by
the others.
"""

import os
import subprocess
import sys
import time

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TINY = "configs/linear_regression.py:mamba,tiny"


def env(n_devices: int = 8, **overrides: str) -> dict[str, str]:
  """Environment of a subprocess with `n_devices` fake CPU devices."""
  result = dict(os.environ)
  result.update({
      "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}",
      "JAX_PLATFORMS": "cpu",
      "PYTHONPATH": REPO + os.pathsep + result.get("PYTHONPATH", ""),
  })
  result.update(overrides)
  return result


def main_args(workdir: str, *overrides: str, config: str = TINY) -> list[str]:
  return [sys.executable, "-m", "ssm_icl.main", f"--config={config}",
          f"--workdir={workdir}", *overrides]


def run(args: list[str], timeout: float = 300, n_devices: int = 8
        ) -> subprocess.CompletedProcess:
  """Runs to completion, capturing text output."""
  return subprocess.run(args, cwd=REPO, env=env(n_devices), text=True,
                        capture_output=True, timeout=timeout, check=False)


def start(args: list[str], n_devices: int = 8,
          env_overrides: dict[str, str] | None = None,
          **kwargs) -> subprocess.Popen:
  return subprocess.Popen(args, cwd=REPO,
                          env=env(n_devices, **(env_overrides or {})),
                          text=True, **kwargs)


def wait_for(predicate, process: subprocess.Popen, timeout: float = 300,
             interval: float = 0.002) -> bool:
  """Polls `predicate()` until True; False if the process ended first."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if predicate():
      return True
    if process.poll() is not None:
      return bool(predicate())
    time.sleep(interval)
  raise TimeoutError("condition not reached within the timeout")


def logged_steps(workdir: str) -> list[int]:
  """Steps of the complete training records in metrics.jsonl."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  steps = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.endswith("\n") and '"train/loss"' in line:
        steps.append(int(line.split('"step": ')[1].split(",")[0]))
  return steps


def checkpoint_names(workdir: str) -> list[str]:
  directory = os.path.join(workdir, "checkpoints")
  return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def saved_params(workdir: str, step: int) -> dict[str, np.ndarray]:
  """The parameters saved at `step`, as flat {path: numpy array}.

  `workdir` may be local or gs:// (see tests/gcs_emulator.py).
  """
  path = epath.Path(workdir) / "checkpoints" / str(step) / "state"
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with ocp.StandardCheckpointer() as checkpointer:
    # Restore onto one local device, whatever mesh wrote the checkpoint.
    metadata = checkpointer.metadata(path).item_metadata
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        metadata)
    tree = checkpointer.restore(path, target)
  flat = {}

  def visit(prefix, node):
    if isinstance(node, dict):
      for key, value in node.items():
        visit(f"{prefix}/{key}" if prefix else str(key), value)
    else:
      flat[prefix] = np.asarray(node)

  visit("", tree["params"])
  return flat
