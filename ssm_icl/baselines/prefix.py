"""The in-context prefix a baseline may fit on at each prediction slot.

Every baseline sees exactly the prompts the models see. Prediction slot j of a
prompt is answered from
  * the query input `xs[:, example_index[j]]`, and
  * the examples i < example_index[j] whose `example_mask` is 1 (outliers and
    padding are 0), which form the in-context prefix of that slot.
This module turns a `Prompt` into those arrays, batched over all slots at
once, so that JAX baselines can solve every prefix in one call and host
baselines can loop over them.

Shapes: b prompts, n examples, d input width, d_y label width, p slots.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.tasks import base


class PrefixView(NamedTuple):
  """The arrays a baseline needs, aligned with the prediction slots.

  Attributes:
    xs: [b, n, d] float32 in-context inputs.
    ys: [b, n, d_y] float32 in-context labels.
    queries: [b, p, d] float32 query input of each slot.
    prefix_mask: [b, p, n] float32, 1 where example i may be used at slot j.
    slot_mask: [b, p] float32, 1 where the metric reads slot j (predictions
      elsewhere are never scored, so host baselines may skip them).
  """

  xs: jax.Array
  ys: jax.Array
  queries: jax.Array
  prefix_mask: jax.Array
  slot_mask: jax.Array


@jax.jit
def _view(xs, ys, example_mask, example_index, metric_mask) -> PrefixView:
  n = xs.shape[1]
  # Example i precedes slot j iff i < example_index[j]; [p, n].
  before = jnp.arange(n)[None, :] < example_index[:, None]
  prefix = before[None, :, :] & (example_mask[:, None, :] > 0)
  queries = jnp.take(xs, example_index, axis=1)
  return PrefixView(xs, ys, queries, prefix.astype(jnp.float32),
                    (metric_mask > 0).astype(jnp.float32))


def prefix_view(prompt: base.Prompt, *, name: str) -> PrefixView:
  """Validates `prompt` for baseline `name` and returns its `PrefixView`.

  Args:
    prompt: a batch of prompts with `xs`, `ys` (and optionally
      `example_mask`) filled in by the task.
    name: the baseline's name, used in error messages.

  Returns:
    The `PrefixView` of every slot of every prompt.

  Raises:
    ValueError: if the prompt lacks the raw examples, the shapes disagree, a
      slot's query index lies outside `xs`, or the labels are neither the
      targets nor the metric coordinates.
  """
  for field in ("xs", "ys"):
    if getattr(prompt, field) is None:
      raise ValueError(
          f"Baseline {name!r} needs Prompt.{field} (the raw in-context "
          f"examples), but it is None; the task must fill xs, ys and "
          f"example_mask.")
  xs = jnp.asarray(prompt.xs, jnp.float32)
  ys = jnp.asarray(prompt.ys, jnp.float32)
  if ys.ndim == 2:
    ys = ys[..., None]
  if xs.ndim != 3 or ys.ndim != 3 or xs.shape[:2] != ys.shape[:2]:
    raise ValueError(
        f"Baseline {name!r}: expected Prompt.xs [b, n, d] and Prompt.ys "
        f"[b, n, d_y] with the same b and n, got xs {tuple(xs.shape)} and "
        f"ys {tuple(ys.shape)}.")
  b, n = xs.shape[:2]
  d_y, d_out = ys.shape[-1], prompt.targets.shape[-1]
  coords = prompt.metric_coords
  if d_out != d_y and (coords is None or len(coords) != d_y):
    raise ValueError(
        f"Baseline {name!r} predicts the d_y={d_y} label coordinate(s) of "
        f"Prompt.ys, but Prompt.targets has d_out={d_out} and "
        f"Prompt.metric_coords={coords}; it applies only to tasks whose "
        f"targets or metric coordinates are the labels.")
  if prompt.example_mask is None:
    example_mask = jnp.ones((b, n), jnp.float32)
  else:
    example_mask = jnp.asarray(prompt.example_mask, jnp.float32)
    if example_mask.shape != (b, n):
      raise ValueError(
          f"Baseline {name!r}: Prompt.example_mask has shape "
          f"{tuple(example_mask.shape)}, expected [b, n] = {(b, n)}.")
  example_index = np.asarray(prompt.example_index)
  if example_index.size and (example_index.min() < 0
                             or example_index.max() >= n):
    raise ValueError(
        f"Baseline {name!r}: Prompt.example_index must lie in [0, {n}) "
        f"because slot j queries xs[:, example_index[j]], but it spans "
        f"[{example_index.min()}, {example_index.max()}].")
  return _view(xs, ys, example_mask, jnp.asarray(example_index, jnp.int32),
               jnp.asarray(prompt.metric_mask))


# Upper bound on the [b, n, d] elements one chunk of slots may hold at once in
# `map_slots`: long prompts (many-outlier regression has 512 slots of 512
# examples) would otherwise materialise [b, p, n, d] tensors.
_CHUNK_ELEMENTS = 1 << 24


def chunked_map(fn, xs, chunk: int):
  """`fn` over the leading axis of `xs`, `chunk` entries at a time.

  Unlike `jax.lax.map(..., batch_size=...)`, the leading axis is padded to a
  multiple of `chunk` (by repeating entry 0) so `fn` is traced once, not once
  more for a remainder; with a single chunk there is no loop at all.

  Args:
    fn: maps a pytree of arrays with leading axis c to outputs with leading
      axis c (c <= chunk), e.g. a `jax.vmap`-ed per-entry function.
    xs: pytree of arrays sharing the leading axis p.
    chunk: entries per call, >= 1.

  Returns:
    The outputs for all p entries, leading axis p.
  """
  p = jax.tree.leaves(xs)[0].shape[0]
  if chunk >= p:
    return fn(xs)
  n_chunks = -(-p // chunk)
  pad = n_chunks * chunk - p

  def split(a):
    a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a
    return a.reshape(n_chunks, chunk, *a.shape[1:])

  out = jax.lax.map(fn, jax.tree.map(split, xs))
  return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:])[:p], out)


def map_slots(fn, view: PrefixView) -> jax.Array:
  """Applies a per-slot solver to every slot, a chunk of slots at a time.

  Call it inside jit. Memory stays bounded by chunking the slot axis, while
  each chunk is vectorised.

  Args:
    fn: `fn(query [b, d], mask [b, n]) -> [b, d_y]`, closing over
      `view.xs` and `view.ys`.
    view: the prefix view.

  Returns:
    [b, p, d_y] predictions.
  """
  b, n, d = view.xs.shape
  chunk = max(1, _CHUNK_ELEMENTS // max(1, b * n * d))
  queries = jnp.swapaxes(view.queries, 0, 1)       # [p, b, d]
  masks = jnp.swapaxes(view.prefix_mask, 0, 1)     # [p, b, n]
  preds = chunked_map(jax.vmap(lambda a: fn(*a)), (queries, masks), chunk)
  return jnp.swapaxes(preds, 0, 1)


def to_targets(preds: jax.Array, prompt: base.Prompt) -> jax.Array:
  """Places label predictions into the coordinates of `prompt.targets`.

  Args:
    preds: [b, p, d_y] predictions of the labels `prompt.ys`.
    prompt: the prompt they answer (checked by `prefix_view`).

  Returns:
    [b, p, d_out]: `preds` itself when d_out == d_y; otherwise `preds` in the
    metric coordinates (e.g. chain-of-thought's y coordinate) and 0 elsewhere.
  """
  if prompt.targets.shape[-1] == preds.shape[-1]:
    return preds
  out = jnp.zeros(prompt.targets.shape, jnp.float32)
  return out.at[..., jnp.asarray(prompt.metric_coords)].set(preds)


@dataclasses.dataclass(frozen=True)
class Baseline:
  """Base class: a callable `predict(prompt) -> preds [b, p, d_out]`.

  Subclasses are frozen dataclasses whose fields are the hyperparameters, so
  two equal instances make equal predictions. `kind` lets the evaluation tell
  baselines from models (plot styles, Table 1).
  """

  kind: ClassVar[str] = "baseline"

  def __call__(self, prompt: base.Prompt) -> jax.Array:
    raise NotImplementedError
