"""The train state, initialised directly into its shardings.

The model's parameters carry logical axis names (`nn.with_logical_partitioning`
in `ssm_icl.nn`). `jax.eval_shape` of the init gives the boxed abstract state
without allocating anything; the logical names are mapped to mesh axes by the
config's rule set; and `jax.jit(init, out_shardings=...)` then materialises
every array on the devices that own it, so no host ever holds a full replica
of a large model. The state is unboxed (plain arrays, the shardings kept
separately), which is what Orbax saves and restores onto any mesh.

Random streams are derived from the config seed with `fold_in`, never carried
in the state: the init uses `fold_in(key(seed), 0)`, the batch and dropout of
step s use `fold_in(fold_in(key(seed), 1), s)`, and evaluation batch i uses
`fold_in(fold_in(key(seed), 2), i)`. A resumed run therefore sees exactly the
batches an uninterrupted run sees.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

_INIT_STREAM, _TRAIN_STREAM, _EVAL_STREAM = 0, 1, 2


class TrainState(train_state.TrainState):
  """flax's TrainState: `step`, `params`, `opt_state`, `apply_fn`, `tx`.

  `step` counts completed optimiser steps; it also indexes the random stream
  of the next step's batch.
  """


def init_key(seed: int) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed), _INIT_STREAM)


def train_key(seed: int, step: jax.Array) -> jax.Array:
  """The key of training step `step` (batch and dropout are split from it)."""
  return jax.random.fold_in(
      jax.random.fold_in(jax.random.key(seed), _TRAIN_STREAM), step)


def eval_key(seed: int, index: jax.Array) -> jax.Array:
  """The key of evaluation batch `index` (the same at every evaluation)."""
  return jax.random.fold_in(
      jax.random.fold_in(jax.random.key(seed), _EVAL_STREAM), index)


@dataclasses.dataclass(frozen=True)
class ShardedState:
  """What `abstract_state` derives without allocating anything.

  Attributes:
    init_fn: () -> boxed TrainState (the function to jit).
    boxed: the abstract boxed state (leaves are ShapeDtypeStructs, the
      params wrapped in `nn.LogicallyPartitioned` with their axis names).
    shardings: the unboxed TrainState of `NamedSharding`s.
    target: the unboxed abstract state with shardings attached, as Orbax
      restores it.
  """
  init_fn: Any
  boxed: Any
  shardings: Any
  target: Any


def abstract_state(model: nn.Module, tx: optax.GradientTransformation,
                   token_shape: tuple[int, int, int], seed: int,
                   mesh: jax.sharding.Mesh, rules: Any) -> ShardedState:
  """Shapes, logical axes and shardings of the train state.

  Must run inside `jax.set_mesh(mesh)` and `nn.logical_axis_rules(rules)`.

  Args:
    model: the flax model.
    tx: the optimiser.
    token_shape: [batch, length, d_in] of the dummy input of `model.init`
      (parameter shapes do not depend on batch or length).
    seed: the config seed.
    mesh: the device mesh.
    rules: logical-axis rules.

  Returns:
    A `ShardedState`.
  """

  def init_fn():
    key = init_key(seed)
    tokens = jnp.zeros(token_shape, jnp.float32)
    variables = model.init({"params": key, "dropout": key}, tokens,
                           deterministic=True)
    state = TrainState.create(apply_fn=model.apply,
                              params=variables["params"], tx=tx)
    # A strong int32 step, as Orbax restores it: with flax's weakly typed 0
    # a fresh and a resumed run would lower different train steps (one
    # extra convert), so a resume could not reuse the persistent
    # compilation cache.
    return state.replace(step=jnp.zeros((), jnp.int32))

  boxed = jax.eval_shape(init_fn)
  shardings = nn.logical_to_mesh_sharding(
      nn.get_partition_spec(boxed), mesh, rules)
  shardings = nn.meta.unbox(shardings)
  target = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      strip_boxes(boxed), shardings)
  return ShardedState(init_fn=init_fn, boxed=boxed, shardings=shardings,
                      target=target)


def init_state(sharded: ShardedState) -> TrainState:
  """Materialises the state directly into its shardings (inside the mesh)."""
  init = jax.jit(lambda: nn.meta.unbox(sharded.init_fn()),
                 out_shardings=sharded.shardings)
  return init()


def strip_boxes(tree: Any) -> Any:
  """Replaces boxes by their values without a sharding constraint.

  (`nn.meta.unbox` constrains each value to its logical sharding, which only
  works on traced arrays, not on the ShapeDtypeStructs of `eval_shape`.)
  """
  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
  return jax.tree.map(lambda x: x.value if is_box(x) else x, tree,
                      is_leaf=is_box)


def param_axes(boxed_params: Any) -> Any:
  """The logical axis names of every parameter (a tree of tuples)."""
  return jax.tree.map(
      lambda x: tuple(x.names) if isinstance(x, nn.LogicallyPartitioned)
      else (), boxed_params,
      is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
