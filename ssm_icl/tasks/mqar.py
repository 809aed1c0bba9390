"""Vector-valued multi-query associative recall (docs/PAPER.md §3.9).

The sequence is k_1, v_1, ..., k_n, v_n, q (2n + 1 tokens, not interleaved
with labels); the model reads the query's output (last token) and must return
the value whose key matches q. `n_points` in `sample` is the number of
key-value pairs n.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from ssm_icl.tasks import base
from ssm_icl.tasks import task as task_lib


def _to_sphere(v: jax.Array, radius: float) -> jax.Array:
  norm = jnp.linalg.norm(v, axis=-1, keepdims=True)
  return v * (radius / jnp.maximum(norm, 1e-12))


@dataclasses.dataclass(frozen=True)
class VectorMQAR(task_lib.Task):
  """Retrieve the value paired with the query's key.

  Keys, values and the query lie on the sphere of radius sqrt(d) (drawn
  N(0, I_d) and normalised, as the reference `GaussianRetrievalSampler`);
  truncated coordinates are zeroed after the normalisation, as there. The
  target is the value of the key with the largest inner product with q (exact
  when q copies a key). d_out = d, loss MSE over the d coordinates.

  Metric: squared error summed over the d coordinates with normalizer d, i.e.
  the per-coordinate MSE, so the zero predictor scores exactly 1.0 (the
  paper's "zero predictor MSE 1.0"). The reference's eval metric (a key-match
  error comparing values with keys) is not reproduced.

  Reference bug switches and notes:
  * By default the query copies a uniformly chosen key. With
    `reference_self_query=True` it copies position 2 * randint(0..n)
    inclusive, as the reference does, so with probability 1 / (n + 1) it is
    a fresh random vector and the target is the nearest key's value.
  * The reference zero-pads the [b, d] target as if it were a scalar label,
    which crashes; here targets are never zero-padded (no flag needed).

  Eval variants of the reference: `query_position` fixes the index of the
  copied key ("by_position"), `query_noise` adds query_noise * N(0, I) to the
  query and re-normalises it ("noisy_query").

  Attributes:
    n_dims: vector dimension d.
    n_pairs: the paper's number of key-value pairs (`default_n_points`).
    reference_self_query: allow the query to copy itself, as the reference.
    query_position: None (random key) or the index of the key to query.
    query_noise: standard deviation of the query perturbation (>= 0).
  """

  name: ClassVar[str] = "vector_mqar"
  n_dims: int = 20
  n_pairs: int = 64
  reference_self_query: bool = False
  query_position: int | None = None
  query_noise: float = 0.0

  def __post_init__(self):
    task_lib.check_positive_int("n_dims", self.n_dims)
    task_lib.check_positive_int("n_pairs", self.n_pairs)
    task_lib.check_non_negative("query_noise", self.query_noise)
    if self.query_position is not None:
      if (isinstance(self.query_position, bool)
          or not isinstance(self.query_position, int)
          or self.query_position < 0):
        raise ValueError(f"query_position={self.query_position!r} must be "
                         "None or an int >= 0.")

  @property
  def d_in(self) -> int:
    return self.n_dims

  @property
  def d_out(self) -> int:
    return self.n_dims

  @property
  def default_n_points(self) -> int:
    return self.n_pairs

  @property
  def normalizer(self) -> float:
    return float(self.n_dims)

  def seq_len(self, n_points: int) -> int:
    task_lib.check_positive_int("n_points", n_points)
    return 2 * n_points + 1

  def _query_index(self, key, batch_size, n_pairs):
    """[b] index of the copied key; n means "the query's own fresh vector"."""
    if self.query_position is not None:
      if self.query_position >= n_pairs:
        raise ValueError(
            f"query_position={self.query_position} must be < n_points="
            f"{n_pairs} (the number of key-value pairs).")
      return jnp.full((batch_size,), self.query_position, jnp.int32)
    high = n_pairs + 1 if self.reference_self_query else n_pairs
    return jax.random.randint(key, (batch_size,), 0, high, jnp.int32)

  def _sample(self, key, batch_size, n_points, n_dims_truncated):
    n, d = n_points, self.n_dims
    k_vec, k_idx, k_noise = jax.random.split(key, 3)
    # Keys at even and values at odd rows; the last row is the vector a
    # self-copying query takes (reference_self_query).
    vecs = jax.random.normal(k_vec, (batch_size, 2 * n + 1, d))
    keys, values, own = vecs[:, 0:2 * n:2], vecs[:, 1:2 * n:2], vecs[:, -1]
    idx = self._query_index(k_idx, batch_size, n)
    copied = jnp.take_along_axis(
        keys, jnp.minimum(idx, n - 1)[:, None, None], axis=1)[:, 0]
    query = jnp.where((idx < n)[:, None], copied, own)

    radius = math.sqrt(d)
    keys, values, query = (_to_sphere(v, radius) for v in (keys, values, query))
    if self.query_noise > 0:
      noise = jax.random.normal(k_noise, query.shape)
      query = _to_sphere(query + self.query_noise * noise, radius)
    mask = task_lib.dims_mask(d, n_dims_truncated)
    keys, values, query = keys * mask, values * mask, query * mask

    match = jnp.argmax(jnp.einsum("bd,bnd->bn", query, keys), axis=-1)
    target = jnp.take_along_axis(values, match[:, None, None], axis=1)
    tokens = jnp.concatenate(
        [task_lib.interleave(keys, values), query[:, None]], axis=1)
    # Baselines see the pairs plus the query (with its target) as the last
    # row, which is not an in-context example.
    example_mask = jnp.concatenate(
        [jnp.ones((batch_size, n)), jnp.zeros((batch_size, 1))], axis=1)
    return base.Prompt(
        tokens=tokens.astype(jnp.float32),
        predict_positions=jnp.array([2 * n], jnp.int32),
        targets=target.astype(jnp.float32),
        loss_mask=jnp.ones((batch_size, 1, d), jnp.float32),
        metric_mask=jnp.ones((batch_size, 1), jnp.float32),
        example_index=jnp.array([n], jnp.int32),
        loss=base.LOSS_MSE,
        metric=base.METRIC_SQUARED_ERROR,
        normalizer=self.normalizer,
        metric_coords=None,
        xs=jnp.concatenate([keys, query[:, None]], axis=1),
        ys=jnp.concatenate([values, target], axis=1),
        example_mask=example_mask.astype(jnp.float32),
    )
