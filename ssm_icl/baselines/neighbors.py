"""k-nearest-neighbour regression on the prefix, batched over all slots in JAX.

As in Garg et al.'s `NNModel`: the k = min(n_neighbors, #prefix) examples
closest to the query in Euclidean distance vote with uniform weights, or with
weights 1 / distance; an exact match (distance 0) takes all the weight.

Shapes: b prompts, n examples, d input width, d_y label width, p slots.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from ssm_icl.baselines import prefix
from ssm_icl.tasks import base

UNIFORM = "uniform"
DISTANCE = "distance"


@functools.partial(jax.jit, static_argnames=("k", "weights"))
def _knn(view: prefix.PrefixView, k: int, weights: str) -> jax.Array:
  """k-NN predictions of every slot, [b, p, d_y]."""
  k = min(k, view.xs.shape[1])

  def one_slot(query, mask):                           # [b, d], [b, n]
    # Differences rather than the |q|^2 - 2 q.x + |x|^2 expansion, so that an
    # exact match has distance exactly 0.
    diff = query[:, None, :] - view.xs                 # [b, n, d]
    dist = jnp.sqrt(jnp.sum(jnp.square(diff), -1))     # [b, n]
    # Examples outside the prefix get distance +inf: top_k picks them only
    # when fewer than k examples precede the slot, and `valid` drops them.
    dist = jnp.where(mask > 0, dist, jnp.inf)
    neg, idx = jax.lax.top_k(-dist, k)                 # [b, k]
    near = -neg
    valid = jnp.isfinite(near)
    if weights == UNIFORM:
      w = valid.astype(jnp.float32)
    else:
      exact = valid & (near == 0)
      # Mask before dividing: 1 / 0 would poison the weighted sum with inf.
      safe = jnp.where(near > 0, near, 1.0)
      inv = jnp.where(valid & (near > 0), 1.0 / safe, 0.0)
      w = jnp.where(exact.any(-1, keepdims=True), exact.astype(jnp.float32),
                    inv)
    labels = jnp.take_along_axis(view.ys, idx[..., None], axis=1)  # [b, k, y]
    total = jnp.einsum("bk,bky->by", w, labels)
    norm = w.sum(-1, keepdims=True)
    return jnp.where(norm > 0, total / jnp.where(norm > 0, norm, 1.0), 0.0)

  return prefix.map_slots(one_slot, view)


@dataclasses.dataclass(frozen=True)
class KNearestNeighbors(prefix.Baseline):
  """k-NN regression on the prefix; predicts 0 with no examples.

  Attributes:
    n_neighbors: k, >= 1.
    weights: "uniform" or "distance" (1 / distance).
  """

  n_neighbors: int = 3
  weights: str = UNIFORM

  def __post_init__(self):
    if not (isinstance(self.n_neighbors, int) and self.n_neighbors >= 1):
      raise ValueError(
          f"KNearestNeighbors.n_neighbors must be an int >= 1, got "
          f"{self.n_neighbors!r}.")
    if self.weights not in (UNIFORM, DISTANCE):
      raise ValueError(
          f"KNearestNeighbors.weights={self.weights!r} is unknown; expected "
          f"one of {[UNIFORM, DISTANCE]}.")

  def __call__(self, prompt: base.Prompt) -> jax.Array:
    view = prefix.prefix_view(prompt, name="knn")
    return prefix.to_targets(
        _knn(view, self.n_neighbors, self.weights), prompt)
