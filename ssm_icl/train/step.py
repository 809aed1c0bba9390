"""The pure train and eval steps; batches are generated on device.

A step draws its own batch inside the jitted function with
`task.sample(fold_in(seed, step), ...)`, constrains every batch-major field
of the prompt to the mesh's "data" axis (so each device generates only its
shard; with `jax_threefry_partitionable` the values do not depend on the
sharding), runs the model and the masked loss of `ssm_icl.tasks.base`, and
applies the optimiser. `n_points` is static (one compile per distinct value of
the curriculum); `n_dims_truncated` is a traced scalar.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from ssm_icl.parallel import mesh as mesh_lib
from ssm_icl.tasks import base
from ssm_icl.train import state as state_lib

Metrics = dict[str, jax.Array]
_BATCH_FIELDS = ("tokens", "targets", "loss_mask", "metric_mask", "xs", "ys",
                 "example_mask")


def shard_prompt(prompt: base.Prompt, mesh: jax.sharding.Mesh) -> base.Prompt:
  """Constrains the batch axis of every batch-major field to "data"."""
  sharding = mesh_lib.batch_sharding(mesh)
  changes = {
      name: jax.lax.with_sharding_constraint(getattr(prompt, name), sharding)
      for name in _BATCH_FIELDS if getattr(prompt, name) is not None}
  return prompt.replace(**changes)


def train_step(state: state_lib.TrainState, n_dims: jax.Array,
               nan_step: jax.Array, *, task: Any, mesh: jax.sharding.Mesh,
               batch_size: int, n_points: int, seed: int,
               schedule: optax.Schedule | None = None
               ) -> tuple[state_lib.TrainState, Metrics]:
  """One optimiser step on a freshly sampled batch.

  Args:
    state: the train state (donated by the jitted caller).
    n_dims: [] int32, the curriculum's n_dims_truncated.
    nan_step: [] int32, testing only: the step (counted from 1, as in
      metrics.jsonl) whose loss and gradients are replaced by NaN; -1 never.
      It is an argument rather than a constant so that tests injecting a NaN
      reuse the compiled step (multiplying by 1.0 changes no value).
    task: the task (static).
    mesh: the device mesh (static).
    batch_size: global prompts per step (static).
    n_points: examples per prompt (static).
    seed: the config seed (static).
    schedule: the learning-rate schedule, for the `train/lr` metric.

  Returns:
    The new state and scalar metrics `train/loss`, `train/grad_norm` (before
    clipping), `train/param_norm` and `train/lr`.
  """
  key = state_lib.train_key(seed, state.step)
  data_key = jax.random.fold_in(key, 0)
  dropout_key = jax.random.fold_in(key, 1)
  prompt = task.sample(data_key, batch_size, n_points, n_dims)
  prompt = shard_prompt(prompt, mesh)

  def loss_fn(params):
    outputs = state.apply_fn({"params": params}, prompt.tokens,
                             deterministic=False, rngs={"dropout": dropout_key})
    return base.masked_loss(base.gather_predictions(outputs, prompt), prompt)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  poison = jnp.where(state.step + 1 == nan_step, jnp.nan, 1.0)
  loss = loss * poison
  grads = jax.tree.map(lambda g: g * poison, grads)
  metrics = {
      "train/loss": loss,
      "train/grad_norm": optax.tree.norm(grads),
      "train/param_norm": optax.tree.norm(state.params),
  }
  if schedule is not None:
    metrics["train/lr"] = jnp.asarray(schedule(state.step), jnp.float32)
  return state.apply_gradients(grads=grads), metrics


def eval_step(params: Any, index: jax.Array, *, apply_fn: Callable[..., Any],
              task: Any, mesh: jax.sharding.Mesh, batch_size: int,
              n_points: int, seed: int) -> Metrics:
  """Sums of the loss and the normalised metric over one evaluation batch.

  Evaluation uses all d coordinates (no curriculum truncation), as the
  reference's `eval_model` does, and the same prompts at every evaluation.

  Args:
    params: model parameters.
    index: [] int32, the evaluation batch number.
    apply_fn: the model's `apply`.
    task: the task (static).
    mesh: the device mesh (static).
    batch_size: prompts in the batch (static).
    n_points: examples per prompt (static).
    seed: the config seed (static).

  Returns:
    `loss_sum` (batch mean loss x batch size), `metric_sum`/`metric_count`
    over every scored slot, and `last_sum`/`last_count` for the last slot.
  """
  prompt = task.sample(state_lib.eval_key(seed, index), batch_size, n_points,
                       None)
  prompt = shard_prompt(prompt, mesh)
  outputs = apply_fn({"params": params}, prompt.tokens, deterministic=True)
  preds = base.gather_predictions(outputs, prompt)
  metric = base.pointwise_metric(preds, prompt)  # [b, p]
  mask = prompt.metric_mask
  return {
      "loss_sum": base.masked_loss(preds, prompt) * batch_size,
      "metric_sum": jnp.sum(metric * mask),
      "metric_count": jnp.sum(mask),
      "last_sum": jnp.sum(metric[:, -1] * mask[:, -1]),
      "last_count": jnp.sum(mask[:, -1]),
  }


def jit_train_step(shardings: Any, mesh: jax.sharding.Mesh, *,
                   on_trace: Callable[[], None] | None = None,
                   **static: Any) -> Callable[..., Any]:
  """`train_step` jitted with in/out shardings and the state donated.

  Args:
    shardings: the train state's shardings.
    mesh: the device mesh.
    on_trace: called each time the step is traced (i.e. compiled), so the
      loop can report how many programs it built.
    **static: the keyword-only arguments of `train_step`.

  Returns:
    `fn(state, n_dims, nan_step) -> (state, metrics)`.
  """
  replicated = mesh_lib.replicated(mesh)

  def fn(state, n_dims, nan_step):
    if on_trace is not None:
      on_trace()
    return train_step(state, n_dims, nan_step, mesh=mesh, **static)

  return jax.jit(
      fn,
      in_shardings=(shardings, replicated, replicated),
      out_shardings=(shardings, replicated),
      donate_argnums=0)


def jit_eval_step(param_shardings: Any, mesh: jax.sharding.Mesh,
                  **static: Any) -> Callable[..., Any]:
  """`eval_step` jitted with the params' shardings; metrics replicated."""
  replicated = mesh_lib.replicated(mesh)
  return jax.jit(
      functools.partial(eval_step, mesh=mesh, **static),
      in_shardings=(param_shardings, replicated),
      out_shardings=replicated)
