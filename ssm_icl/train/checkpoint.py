"""Orbax checkpoints of the train state, with JSON metadata and safe resume.

Layout: `workdir/checkpoints/<step>/{state, meta}`. `state` is the unboxed
`TrainState` (a `StandardSave` of plain arrays, so it restores onto any mesh);
`meta` is JSON: the full config, the step, the `ssm_icl` version, the mesh
shape and the device/process counts.

The workdir may be local or gs:// (`ssm_icl.paths`); Orbax gets the
`epath.Path` unchanged and writes arrays through tensorstore.

Resume policy (`Checkpointer.restore_latest`):
* Orbax lists only complete checkpoints; a save cut short by a kill leaves a
  `<step>.orbax-checkpoint-tmp-*` directory (locally) or a `<step>` prefix
  without Orbax's commit file (on GCS, which has no rename), which is
  reported and ignored.
* The newest complete checkpoint whose config is compatible is restored. An
  incompatible config (different architecture, task, seed, batch size or
  optimiser structure) raises a ValueError naming every differing field.
* A checkpoint that fails to restore (corrupted files) is reported, and the
  previous one is tried. Once an older one restores, the unreadable newer ones
  are renamed `<step>.unreadable-<time>` (nothing is ever deleted), so that
  Orbax does not skip saving those steps again. If no checkpoint restores, the
  error is raised rather than silently starting from scratch.

Preemption: `SignalFlag` turns SIGTERM into a flag the loop polls (it then
saves and exits with status 0). Under `jax.distributed`, JAX's preemption
service owns SIGTERM instead, and `Checkpointer.reached_preemption` reports
the step at which all processes agreed to save.
"""

from __future__ import annotations

from collections.abc import Mapping
import datetime
import json
import signal
import threading
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

import ssm_icl
from ssm_icl import errors
from ssm_icl import paths

CHECKPOINT_DIR = "checkpoints"
_TMP_MARKER = ".orbax-checkpoint-tmp"

# Config fields that may change between a checkpoint and the run resuming it:
# run length, logging, checkpointing, the mesh (restores reshard), the
# learning-rate schedule and pure implementation choices that do not change
# the parameter tree.
RESUMABLE_FIELDS = (
    "train.steps", "train.log_every", "train.eval_every",
    "train.eval_prompts", "train.lr", "train.lr_schedule",
    "train.warmup_steps", "train.inject_nan_at_step", "train.b1",
    "train.b2", "train.eps", "train.matmul_precision",
    "train.length_buckets",
    "ckpt.", "mesh.",
    "model.remat", "model.scan_impl", "model.chunk_size", "model.attn_impl",
    "model.attn_block_size", "model.dtype",
)
# Fields that must match for a resume to continue the same run.
_CHECKED_SECTIONS = ("model.", "task.", "train.")


def flatten_config(config: Mapping[str, Any],
                   prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}, with tuples as lists (JSON form)."""
  flat = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten_config(value, name + "."))
    else:
      flat[name] = json.loads(json.dumps(value))
  return flat


def incompatible_fields(saved: Mapping[str, Any],
                        current: Mapping[str, Any]) -> list[str]:
  """Describes every field that differs and forbids resuming.

  Args:
    saved: the config dict stored in a checkpoint's metadata.
    current: the config dict of the run that wants to resume.

  Returns:
    Lines like "model.d_model: checkpoint 128, config 64", sorted.
  """
  a, b = flatten_config(saved), flatten_config(current)
  lines = []
  for key in sorted(set(a) | set(b)):
    if not key.startswith(_CHECKED_SECTIONS):
      continue
    if any(key == f or (f.endswith(".") and key.startswith(f))
           for f in RESUMABLE_FIELDS):
      continue
    if a.get(key, "<absent>") != b.get(key, "<absent>"):
      lines.append(f"{key}: checkpoint {a.get(key, '<absent>')!r}, "
                   f"config {b.get(key, '<absent>')!r}")
  # Clipping and weight decay add optimiser-state entries when switched on.
  for key in ("train.grad_clip", "train.weight_decay"):
    on_a, on_b = (float(x.get(key) or 0) > 0 for x in (a, b))
    if on_a != on_b and not any(line.startswith(key) for line in lines):
      lines.append(f"{key}: checkpoint {a.get(key)!r}, config {b.get(key)!r}")
  return lines


def make_meta(config: Mapping[str, Any], step: int,
              mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """The JSON metadata stored next to every checkpoint."""
  return {
      "config": json.loads(json.dumps(config)),
      "step": int(step),
      "ssm_icl_version": ssm_icl.__version__,
      "mesh_shape": {str(k): int(v) for k, v in mesh.shape.items()},
      "device_count": jax.device_count(),
      "process_count": jax.process_count(),
      "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
  }


class Checkpointer:
  """An Orbax `CheckpointManager` with the resume policy of this module.

  Every process must create it and call `save`/`restore_latest` in step.

  Attributes:
    directory: `workdir/checkpoints` (an `epath.Path`, local or gs://).
    manager: the underlying `ocp.CheckpointManager`.
  """

  def __init__(self, workdir: paths.PathLike, *, every: int,
               max_to_keep: int | None, async_save: bool = True):
    if every <= 0:
      raise errors.UserError(f"ckpt.every={every} must be positive.")
    if max_to_keep is not None and max_to_keep <= 0:
      raise errors.UserError(
          f"ckpt.max_to_keep={max_to_keep} must be positive (or None to keep "
          "every checkpoint).")
    self.every = every
    self.directory = paths.workdir_path(workdir) / CHECKPOINT_DIR
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=every, max_to_keep=max_to_keep,
        enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "meta"))

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def should_save(self, step: int) -> bool:
    """True at multiples of `every` and at a preemption sync point.

    (Orbax's own `should_save` also saves the first step it sees, which would
    write an extra checkpoint at every start.)
    """
    return step % self.every == 0 or self.reached_preemption(step)

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def save(self, step: int, state: Any, meta: Mapping[str, Any]) -> bool:
    """Starts an (async) save of `state` at `step`; returns whether it did.

    The caller decides when to save (`should_save`, a signal, the last step);
    a step that already has a checkpoint is not saved again. The
    device-to-host copy finishes before this returns, so the caller may
    donate `state` to the next step right away.
    """
    if step in self.manager.all_steps():
      return False
    return self.manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                meta=ocp.args.JsonSave(dict(meta))),
        force=True)

  def partial_saves(self) -> list[str]:
    """Names of directories left by saves that never completed.

    Locally those are Orbax's `<step>.orbax-checkpoint-tmp-*` directories;
    on GCS, saves write `<step>` in place and finish with a commit file, so
    a step directory that Orbax does not list is a partial save.
    """
    if not self.directory.is_dir():
      return []
    complete = {str(s) for s in self.all_steps()}
    return sorted(p.name for p in self.directory.iterdir()
                  if _TMP_MARKER in p.name
                  or (p.name.isdigit() and p.name not in complete))

  def read_meta(self, step: int) -> dict[str, Any]:
    """The JSON metadata of the checkpoint at `step`."""
    restored = self.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored.meta)

  def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
    """Restores the checkpoint at `step` onto `target`: (state, meta)."""
    if step not in self.all_steps():
      raise errors.UserError(
          f"step={step} has no checkpoint in {self.directory}; available "
          f"steps: {self.all_steps()}.")
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                      meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta)

  def restore_latest(
      self, target: Any, config: Mapping[str, Any] | None = None, *,
      set_aside: bool = True
  ) -> tuple[Any, dict[str, Any], int] | None:
    """Restores the newest readable, compatible checkpoint.

    Args:
      target: the abstract state (ShapeDtypeStructs carrying the shardings to
        restore onto; any mesh works).
      config: the current config dict; when given, a checkpoint whose config
        differs in a field outside `RESUMABLE_FIELDS` raises ValueError.
      set_aside: rename unreadable checkpoints newer than the restored one
        (False for read-only use, e.g. evaluation).

    Returns:
      (state, meta, step), or None when the directory has no checkpoint.

    Raises:
      ValueError: incompatible config.
      RuntimeError: checkpoints exist but none can be restored.
    """
    for name in self.partial_saves():
      logging.warning(
          "Ignoring %s in %s: a checkpoint save that never completed (the "
          "process was probably killed while saving).", name, self.directory)
    steps = sorted(self.all_steps(), reverse=True)
    unreadable = []
    for step in steps:
      meta, error = None, None
      try:
        meta = self.read_meta(step)
      except Exception as e:  # pylint: disable=broad-exception-caught
        error = e
      if not self._all_agree(error is None):
        error = error or RuntimeError("another process could not read it")
        unreadable.append((step, error))
        self._report_unreadable(step, error)
        continue
      if config is not None:
        diff = incompatible_fields(meta.get("config", {}), config)
        if diff:
          raise errors.UserError(
              f"The checkpoint at step {step} in {self.directory} was written "
              "with an incompatible config; these fields differ:\n  "
              + "\n  ".join(diff) + "\nUse a fresh --workdir, or set these "
              "fields back to the checkpoint's values.")
      restored = None
      try:
        restored = self.manager.restore(
            step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target)))
      except Exception as e:  # pylint: disable=broad-exception-caught
        error = e
      if not self._all_agree(error is None):
        error = error or RuntimeError("another process could not restore it")
        unreadable.append((step, error))
        self._report_unreadable(step, error)
        continue
      for bad_step, _ in unreadable if set_aside else ():
        self._set_aside(bad_step)
      return restored.state, meta, step
    if unreadable:
      details = "; ".join(f"step {s}: {type(e).__name__}: {e}"[:400]
                          for s, e in unreadable)
      raise RuntimeError(
          f"None of the checkpoints {steps} in {self.directory} can be "
          f"restored ({details}). Nothing was deleted. If the code changed "
          "the parameter tree, use a fresh --workdir.")
    return None

  def _report_unreadable(self, step: int, error: Exception) -> None:
    logging.warning(
        "Checkpoint at step %d in %s cannot be restored (%s: %s); it is kept "
        "on disk and the previous checkpoint is tried.", step,
        self.directory, type(error).__name__, str(error)[:300])

  def _all_agree(self, ok: bool) -> bool:
    """True iff `ok` on every process (restores must succeed everywhere)."""
    if jax.process_count() == 1:
      return ok
    flags = multihost_utils.process_allgather(np.int32(ok))
    return bool(np.all(flags))

  def _set_aside(self, step: int) -> None:
    """Renames an unreadable checkpoint so Orbax can save that step again."""
    if jax.process_index() == 0:
      stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
      src = self.directory / str(step)
      dst = src.parent / f"{src.name}.unreadable-{stamp}"
      src.rename(dst)
      logging.warning("Renamed unreadable checkpoint %s to %s.", src, dst)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"ssm_icl_set_aside_{step}")
    self.manager.reload()

  def wait(self) -> None:
    """Blocks until pending async saves are on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


class SignalFlag:
  """Turns SIGTERM into a flag that the training loop polls.

  The loop then saves a checkpoint of the current step and returns, so the
  process exits with status 0 and a restart resumes there. Use as a context
  manager; the previous handler is restored on exit.
  """

  def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
    self._signals = signals
    self._previous = {}
    self._event = threading.Event()
    self.signal_name = None
    self.received_at = None  # time.monotonic() of the first signal

  @property
  def requested(self) -> bool:
    return self._event.is_set()

  def _handle(self, signum, frame):
    del frame
    if self.received_at is None:
      self.received_at = time.monotonic()
    self.signal_name = signal.Signals(signum).name
    self._event.set()

  def __enter__(self) -> "SignalFlag":
    # Handlers can only be installed from the main thread.
    if threading.current_thread() is threading.main_thread():
      for s in self._signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()
