"""The pure train and eval steps and their on-device batch samplers.

A batch is drawn on device by a small sampler program,
`task.sample_padded(fold_in(seed, step), ...)`: the prompt of the curriculum's
`n_points` examples (static, one sampler per value), zero-padded to its length
bucket `pad_points` (see `ssm_icl.train.buckets`), with every batch-major
field constrained to the mesh's "data" axis (each device generates only its
shard; with `jax_threefry_partitionable` the values do not depend on the
sharding). The train and eval steps take that prompt, so they compile once
per bucket; they run the model and the masked loss of `ssm_icl.tasks.base`
and apply the optimiser. `n_dims_truncated` is a traced scalar.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from ssm_icl.parallel import mesh as mesh_lib
from ssm_icl.tasks import base
from ssm_icl.tasks import task as task_lib
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


def sample_train_prompt(step: jax.Array, n_dims: jax.Array, *, task: Any,
                        mesh: jax.sharding.Mesh, batch_size: int,
                        n_points: int, pad_points: int,
                        seed: int) -> base.Prompt:
  """The batch of training step `step`, padded to its length bucket.

  Args:
    step: [] int32, the step (the state's `step` before it is applied).
    n_dims: [] int32, the curriculum's n_dims_truncated.
    task: the task (static).
    mesh: the device mesh (static).
    batch_size: global prompts per step (static).
    n_points: real examples per prompt (static).
    pad_points: the bucket the prompt is padded to (static).
    seed: the config seed (static).

  Returns:
    The batch-sharded prompt of `task.sample_padded`.
  """
  data_key = jax.random.fold_in(state_lib.train_key(seed, step), 0)
  prompt = task.sample_padded(data_key, batch_size, n_points, pad_points,
                              n_dims)
  return shard_prompt(prompt, mesh)


def train_step(state: state_lib.TrainState, prompt: base.Prompt,
               nan_step: jax.Array, *, seed: int,
               schedule: optax.Schedule | None = None
               ) -> tuple[state_lib.TrainState, Metrics]:
  """One optimiser step on a (padded) batch.

  Args:
    state: the train state (donated by the jitted caller).
    prompt: the batch of step `state.step` (`sample_train_prompt`).
    nan_step: [] int32, testing only: the step (counted from 1, as in
      metrics.jsonl) whose loss and gradients are replaced by NaN; -1 never.
      It is an argument rather than a constant so that tests injecting a NaN
      reuse the compiled step (multiplying by 1.0 changes no value).
    seed: the config seed (static).
    schedule: the learning-rate schedule, for the `train/lr` metric.

  Returns:
    The new state and scalar metrics `train/loss`, `train/grad_norm` (before
    clipping), `train/param_norm` and `train/lr`.
  """
  dropout_key = jax.random.fold_in(state_lib.train_key(seed, state.step), 1)

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


def sample_eval_prompt(index: jax.Array, *, task: Any,
                       mesh: jax.sharding.Mesh, batch_size: int,
                       n_points: int, pad_points: int,
                       seed: int) -> base.Prompt:
  """Evaluation batch `index`, padded to its length bucket.

  Evaluation uses all d coordinates (no curriculum truncation), as the
  reference's `eval_model` does, and the same prompts at every evaluation.
  """
  prompt = task.sample_padded(state_lib.eval_key(seed, index), batch_size,
                              n_points, pad_points, None)
  return shard_prompt(prompt, mesh)


def eval_step(params: Any, prompt: base.Prompt, last_slot: jax.Array, *,
              apply_fn: Callable[..., Any]) -> Metrics:
  """Sums of the loss and the normalised metric over one evaluation batch.

  Args:
    params: model parameters.
    prompt: the batch (`sample_eval_prompt`).
    last_slot: [] int32, the index of the prompt's last real prediction slot
      (padded slots follow it).
    apply_fn: the model's `apply`.

  Returns:
    `loss_sum` (batch mean loss x batch size), `metric_sum`/`metric_count`
    over every scored slot, and `last_sum`/`last_count` for the last slot.
  """
  outputs = apply_fn({"params": params}, prompt.tokens, deterministic=True)
  preds = base.gather_predictions(outputs, prompt)
  metric = base.pointwise_metric(preds, prompt)  # [b, p]
  mask = prompt.metric_mask
  last = lambda x: jax.lax.dynamic_index_in_dim(x, last_slot, axis=1,
                                                 keepdims=False)
  return {
      "loss_sum": base.masked_loss(preds, prompt) * prompt.batch_size,
      "metric_sum": jnp.sum(metric * mask),
      "metric_count": jnp.sum(mask),
      "last_sum": jnp.sum(last(metric) * last(mask)),
      "last_count": jnp.sum(last(mask)),
  }


def prompt_shardings(task: Any, mesh: jax.sharding.Mesh, batch_size: int,
                     n_points: int) -> base.Prompt:
  """Shardings of the task's prompts of `n_points` (batch over "data")."""
  abstract = jax.eval_shape(
      functools.partial(task.sample, batch_size=batch_size,
                        n_points=n_points), jax.random.key(0))
  return task_lib.prompt_shardings(abstract, mesh, mesh_lib.DATA_AXIS)


# XLA:CPU options of the sampler programs. At the default LLVM level the
# threefry random bits took most of a sampler's compile: sparse parity's
# (batch 64, 140 points) 10.8 s against 1.2 s at level 1, which samples in
# 4.2 ms instead of 3.9 ms (busy 2-core CPU, 2026-12-02). The samples are
# bitwise the same on eight of the nine tasks; orthogonal-outlier
# regression's differ by ~1 ulp (float ops fused differently).
SAMPLER_CPU_OPTIONS = {"xla_backend_optimization_level": 1}


def jit_sampler(sample_fn: Callable[..., base.Prompt],
                mesh: jax.sharding.Mesh, **static: Any
                ) -> Callable[..., base.Prompt]:
  """`sample_train_prompt` or `sample_eval_prompt`, jitted.

  One small program (no model) per real length `n_points`; its output has
  the shardings of the bucket's prompts, which the step programs take.

  Args:
    sample_fn: one of the two samplers.
    mesh: the device mesh.
    **static: the sampler's keyword-only arguments but `mesh`.

  Returns:
    `fn(*scalars) -> Prompt`.
  """
  prompts = prompt_shardings(static["task"], mesh, static["batch_size"],
                             static["pad_points"])
  options = (SAMPLER_CPU_OPTIONS
             if mesh.devices.flat[0].platform == "cpu" else None)
  return jax.jit(functools.partial(sample_fn, mesh=mesh, **static),
                 out_shardings=prompts, compiler_options=options)


def jit_train_step(shardings: Any, prompts: base.Prompt,
                   mesh: jax.sharding.Mesh, *,
                   on_trace: Callable[[], None] | None = None,
                   **static: Any) -> Callable[..., Any]:
  """`train_step` jitted with in/out shardings and the state donated.

  One program per prompt shape, i.e. per length bucket.

  Args:
    shardings: the train state's shardings.
    prompts: the shardings of the bucket's prompts (`prompt_shardings`).
    mesh: the device mesh.
    on_trace: called each time the step is traced (i.e. compiled), so the
      loop can report how many programs it built.
    **static: the keyword-only arguments of `train_step`.

  Returns:
    `fn(state, prompt, nan_step) -> (state, metrics)`.
  """
  replicated = mesh_lib.replicated(mesh)

  def fn(state, prompt, nan_step):
    if on_trace is not None:
      on_trace()
    return train_step(state, prompt, nan_step, **static)

  return jax.jit(
      fn,
      in_shardings=(shardings, prompts, replicated),
      out_shardings=(shardings, replicated),
      donate_argnums=0)


def jit_eval_step(param_shardings: Any, prompts: base.Prompt,
                  mesh: jax.sharding.Mesh,
                  apply_fn: Callable[..., Any]) -> Callable[..., Any]:
  """`eval_step` jitted with the params' shardings; metrics replicated."""
  replicated = mesh_lib.replicated(mesh)
  return jax.jit(
      functools.partial(eval_step, apply_fn=apply_fn),
      in_shardings=(param_shardings, prompts, replicated),
      out_shardings=replicated)
