"""Sparse parity (docs/PAPER.md §3.7; Bhattamishra et al. 2023)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from ssm_icl.tasks import base
from ssm_icl.tasks import task as task_lib


@dataclasses.dataclass(frozen=True)
class SparseParity(task_lib.Task):
  """y = product of x over a secret k-subset of the d coordinates.

  x is uniform in {-1, +1}^d (float32; the reference's integer tensor is cast)
  with truncated coordinates zeroed, y in {-1, +1}. The loss is logistic
  (BCE on sigmoid(pred) against (y + 1) / 2) and the metric accuracy
  1[sign(pred) == y]; chance is 0.5. The subset is uniform among the first
  n_dims_truncated coordinates (the paper keeps d = 10 fixed, so all of them).

  Reference bug switch: by default every prompt draws its own subset (the
  paper's task). `reference_shared_subset=True` draws one subset per call and
  shares it across the batch, as the released code does (one
  `torch.randperm` per training step for all 64 prompts).

  Attributes:
    n_dims: input dimension d.
    k: subset size (<= n_dims).
    reference_shared_subset: one subset for the whole batch.
  """

  name: ClassVar[str] = "sparse_parity"
  n_dims: int = 10
  k: int = 2
  reference_shared_subset: bool = False

  def __post_init__(self):
    task_lib.check_positive_int("n_dims", self.n_dims)
    task_lib.check_positive_int("k", self.k)
    task_lib.check_at_most("k", self.k, "n_dims", self.n_dims)

  @property
  def d_in(self) -> int:
    return self.n_dims

  @property
  def d_out(self) -> int:
    return 1

  @property
  def default_n_points(self) -> int:
    return 140

  @property
  def normalizer(self) -> float:
    return 1.0

  def subsets(self, key: jax.Array, batch_size: int,
              n_dims_truncated=None) -> jax.Array:
    """[b, d] float32 0/1 masks of each prompt's secret subset."""
    if self.reference_shared_subset:
      mask = task_lib.random_subset_mask(key, (1,), self.n_dims, self.k,
                                         n_dims_truncated)
      return jnp.broadcast_to(mask, (batch_size, self.n_dims))
    return task_lib.random_subset_mask(key, (batch_size,), self.n_dims,
                                       self.k, n_dims_truncated)

  def _sample(self, key, batch_size, n_points, n_dims_truncated):
    k_subset, k_x = jax.random.split(key)
    subset = self.subsets(k_subset, batch_size, n_dims_truncated)
    x = jax.random.rademacher(k_x, (batch_size, n_points, self.n_dims),
                              jnp.float32)
    x = x * task_lib.dims_mask(self.n_dims, n_dims_truncated)
    # Coordinates outside the subset contribute a factor of 1.
    y = jnp.prod(jnp.where(subset[:, None] > 0, x, 1.0), axis=-1)
    return task_lib.interleaved_prompt(
        x, task_lib.pad_scalar(y, self.n_dims), y, xs=x, ys=y[..., None],
        loss=base.LOSS_LOGISTIC, metric=base.METRIC_ACCURACY,
        normalizer=self.normalizer)
