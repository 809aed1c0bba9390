"""Trivial predictors: the references every task's errors are judged against.

The zero predictor scores about 1 on every normalised regression task (the
paper's normalisation, docs/PAPER.md §2.4) and 0 accuracy (sign(0) counts
as wrong); a uniformly random sign scores chance accuracy 0.5 on sparse parity.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssm_icl.baselines import prefix
from ssm_icl.tasks import base


@dataclasses.dataclass(frozen=True)
class ZeroPredictor(prefix.Baseline):
  """Predicts 0 for every coordinate of every slot."""

  def __call__(self, prompt: base.Prompt) -> jax.Array:
    return jnp.zeros_like(prompt.targets, dtype=jnp.float32)


@dataclasses.dataclass(frozen=True)
class RandomSign(prefix.Baseline):
  """Predicts an independent uniformly random sign (+1 or -1) per coordinate.

  The signs depend only on `seed` and the slot, never on the prompt, so the
  predictor is a chance-level reference for accuracy metrics.

  Attributes:
    seed: PRNG seed of the signs.
  """

  seed: int = 0

  def __call__(self, prompt: base.Prompt) -> jax.Array:
    key = jax.random.key(self.seed)
    return jax.random.rademacher(key, prompt.targets.shape, jnp.float32)
