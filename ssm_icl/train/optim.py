"""The optimiser: Adam with global-norm clipping, as the paper trains.

The reference trains with `torch.optim.Adam` at a constant learning rate, no
weight decay, no warm-up, and `clip_grad_norm_` (10, or 100 for MQAR)
(docs/PAPER.md §7.1). Those are the defaults here; a warm-up, a cosine decay
and decoupled weight decay are available for other experiments. When weight
decay is on, it skips the parameters that Mamba and S4 keep out of it: A_log,
D, the dt bias and every other bias, the norm scales, and S4's log_dt,
log_A_real and A_imag; only matrices (Dense and conv kernels), the position
table and S4's C decay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax

from ssm_icl import errors

SCHEDULES = ("constant", "cosine")
# Leaf names that weight decay applies to; everything else is exempt.
DECAY_NAMES = frozenset({"kernel", "wpe", "embedding", "C"})


def _get(cfg: Any, key: str, default: Any = None) -> Any:
  """Reads `key` from a ConfigDict or Mapping, with a default."""
  if isinstance(cfg, Mapping):
    return cfg.get(key, default)
  return getattr(cfg, key, default) if key in cfg else default


def learning_rate_schedule(train_cfg: Any) -> optax.Schedule:
  """The learning rate as a function of the step.

  Args:
    train_cfg: the config's `train` section: lr, lr_schedule ("constant" or
      "cosine"), warmup_steps, steps.

  Returns:
    An optax schedule (linear warm-up from 0 when warmup_steps > 0).
  """
  lr = float(_get(train_cfg, "lr"))
  kind = _get(train_cfg, "lr_schedule", "constant")
  warmup = int(_get(train_cfg, "warmup_steps", 0))
  steps = int(_get(train_cfg, "steps"))
  if lr <= 0:
    raise errors.UserError(f"train.lr={lr} must be positive.")
  if kind not in SCHEDULES:
    raise errors.UserError(
        f"train.lr_schedule={kind!r} is unknown; expected one of {SCHEDULES}.")
  if warmup < 0:
    raise errors.UserError(f"train.warmup_steps={warmup} must be >= 0.")
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=warmup, decay_steps=max(steps, warmup + 1))
  if warmup == 0:
    return optax.constant_schedule(lr)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)],
      boundaries=[warmup])


def _leaf_name(path: tuple[Any, ...]) -> str:
  """The last dict key on a pytree path (skips box attributes like .value)."""
  for entry in reversed(path):
    if isinstance(entry, jax.tree_util.DictKey):
      return str(entry.key)
  return ""


def weight_decay_mask(params: Any) -> Any:
  """A pytree of bools, True where weight decay applies.

  Works on boxed (`nn.LogicallyPartitioned`) and plain params alike, since it
  looks at names rather than at ranks (scanned layers stack a leading axis, so
  a stacked LayerNorm scale is 2-D).

  Args:
    params: the model parameters.

  Returns:
    The mask, with the structure of `params`.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: _leaf_name(path) in DECAY_NAMES, params)


def make_optimizer(train_cfg: Any) -> optax.GradientTransformation:
  """Adam (or AdamW when weight_decay > 0) behind global-norm clipping.

  Args:
    train_cfg: the config's `train` section: lr, lr_schedule, warmup_steps,
      steps, b1, b2, eps, weight_decay, grad_clip (<= 0 disables clipping).

  Returns:
    The optax transformation.
  """
  schedule = learning_rate_schedule(train_cfg)
  b1 = float(_get(train_cfg, "b1", 0.9))
  b2 = float(_get(train_cfg, "b2", 0.999))
  eps = float(_get(train_cfg, "eps", 1e-8))
  weight_decay = float(_get(train_cfg, "weight_decay", 0.0))
  grad_clip = _get(train_cfg, "grad_clip", 0.0)
  if not 0.0 <= b1 < 1.0 or not 0.0 <= b2 < 1.0:
    raise errors.UserError(
        f"train.b1={b1} and train.b2={b2} must both be in [0, 1).")
  if weight_decay < 0:
    raise errors.UserError(f"train.weight_decay={weight_decay} must be >= 0.")
  parts = []
  if grad_clip is not None and float(grad_clip) > 0:
    parts.append(optax.clip_by_global_norm(float(grad_clip)))
  if weight_decay > 0:
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps,
                             weight_decay=weight_decay,
                             mask=weight_decay_mask))
  else:
    parts.append(optax.adam(schedule, b1=b1, b2=b2, eps=eps))
  return optax.chain(*parts)
