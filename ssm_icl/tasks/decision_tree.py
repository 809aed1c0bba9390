"""Random decision-tree task (docs/PAPER.md §3.4)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from ssm_icl.tasks import regression
from ssm_icl.tasks import task as task_lib


def traverse(x: jax.Array, split_coords: jax.Array,
             node_values: jax.Array, depth: int) -> jax.Array:
  """Evaluates full binary trees stored as arrays.

  Node j has children 2j + 1 (taken when x[split_coords[j]] <= 0) and 2j + 2
  (when it is > 0), as in the reference `DecisionTree.evaluate`.

  Args:
    x: [b, n, d] inputs.
    split_coords: [b, 2^(depth+1) - 1] int32 split coordinate of every node.
    node_values: [b, 2^(depth+1) - 1] value of every node (leaves matter).
    depth: number of splits from the root to a leaf.

  Returns:
    [b, n] the value of the leaf each input reaches.
  """
  b, n, _ = x.shape
  node = jnp.zeros((b, n), jnp.int32)
  for _ in range(depth):  # static depth: unrolled, a handful of gathers
    coord = jnp.take_along_axis(split_coords, node, axis=1)  # [b, n]
    value = jnp.take_along_axis(x, coord[..., None], axis=2)[..., 0]
    node = 2 * node + 1 + (value > 0).astype(jnp.int32)
  return jnp.take_along_axis(node_values, node, axis=1)


@dataclasses.dataclass(frozen=True)
class DecisionTree(task_lib.Task):
  """Random full binary decision tree of the given depth per prompt.

  Every node draws a split coordinate uniform in {0..d-1} and a value
  N(0, 1); an input goes right when its split coordinate is > 0 and outputs
  the value of the leaf it reaches. As in the reference, splits ignore the
  curriculum: they may use a zeroed (truncated) coordinate, where x = 0 goes
  left. Metric not normalised (leaf values have unit variance).

  Attributes:
    n_dims: input dimension d.
    depth: tree depth (2^depth leaves).
  """

  name: ClassVar[str] = "decision_tree"
  n_dims: int = 20
  depth: int = 4

  def __post_init__(self):
    task_lib.check_positive_int("n_dims", self.n_dims)
    task_lib.check_positive_int("depth", self.depth)

  @property
  def d_in(self) -> int:
    return self.n_dims

  @property
  def d_out(self) -> int:
    return 1

  @property
  def default_n_points(self) -> int:
    return 101

  @property
  def normalizer(self) -> float:
    return 1.0

  @property
  def n_nodes(self) -> int:
    return 2**(self.depth + 1) - 1

  def draw_trees(self, key: jax.Array, batch_size: int):
    """Returns ([b, n_nodes] int32 split coordinates, [b, n_nodes] values)."""
    k_coord, k_value = jax.random.split(key)
    coords = jax.random.randint(k_coord, (batch_size, self.n_nodes), 0,
                                self.n_dims, jnp.int32)
    values = jax.random.normal(k_value, (batch_size, self.n_nodes))
    return coords, values

  def _sample(self, key, batch_size, n_points, n_dims_truncated):
    k_tree, k_x = jax.random.split(key)
    coords, values = self.draw_trees(k_tree, batch_size)
    x = regression.gaussian_inputs(k_x, batch_size, n_points, self.n_dims,
                                   n_dims_truncated)
    y = traverse(x, coords, values, self.depth)
    return task_lib.interleaved_prompt(
        x, task_lib.pad_scalar(y, self.n_dims), y, xs=x, ys=y[..., None],
        normalizer=self.normalizer)
