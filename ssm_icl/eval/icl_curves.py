"""Error versus number of in-context examples, with bootstrap intervals.

`evaluate` draws a fixed set of evaluation prompts (a PRNG stream separate
from training's `fold_in(seed, step)` keys), runs every predictor (models and
baselines alike) on exactly the same prompts, and reduces the task's
normalised per-slot metric (`pointwise_metric`, weighted by `metric_mask`) to
one curve per predictor: the mean over prompts at each number of preceding
examples, with 5% / 95% bootstrap intervals from resampling the prompts
(1000 resamples, as the reference `get_run_metrics`). The result is a plain
JSON-serialisable dict, stored with `save_results` and read back with
`load_results` by the plots and Table 1.

Shapes: N prompts, b prompts per batch, p prediction slots, X curve points.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
from typing import Any, Callable, Mapping
import warnings

from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import paths
from ssm_icl import progress_bar
from ssm_icl import tasks
from ssm_icl.tasks import base

FORMAT_VERSION = 1
# Quantiles of the bootstrap interval (the reference's 5% / 95%).
CONFIDENCE = (0.05, 0.95)
# Evaluation prompts come from fold_in(key(seed), _EVAL_STREAM) and then the
# batch index, so they never coincide with training batches drawn as
# fold_in(key(seed), step) for any realistic step count.
_EVAL_STREAM = 0x45564131
KIND_MODEL = "model"
KIND_BASELINE = "baseline"

Predictor = Callable[[base.Prompt], jax.Array]


def model_predictor(apply_fn: Callable[[Any, jax.Array], jax.Array],
                    params: Any, *, task: Any = None,
                    model: Any = None) -> Predictor:
  """Wraps a model as a predictor: outputs read at the prediction slots.

  Args:
    apply_fn: `apply_fn(params, tokens [b, l, d_in]) -> [b, l, d_out]`, e.g.
      `model.apply`.
    params: the model parameters (variables).
    task: optional; for chain-of-thought I/O (`cot_io`) the y predictions
      then follow the model's own hidden-layer predictions
      (`tasks.cot_autoregressive_predict`, Li et al.'s protocol) instead of
      the teacher-forced ones.
    model: optional, the `models.ICLModel` behind `apply_fn`; for `cot_io`
      its recurrent decoding then reads every y prediction in one pass per
      prompt (`tasks.cot_recurrent_predict`) instead of one full forward
      pass per example.

  Returns:
    `predict(prompt) -> [b, p, d_out]`, jitted (one compilation per prompt
    shape), marked as a model for plots and Table 1.
  """
  if getattr(task, "name", None) == tasks.CotIO.name and model is not None:

    @jax.jit
    def _predict_recurrent(params, prompt):
      batch, length = prompt.tokens.shape[:2]
      return tasks.cot_recurrent_predict(
          functools.partial(model.decode_step, params),
          model.init_cache(batch, length), prompt, task)

    predict = lambda prompt: _predict_recurrent(params, prompt)
  elif getattr(task, "name", None) == tasks.CotIO.name:

    @jax.jit
    def _predict_cot(params, prompt):
      return tasks.cot_autoregressive_predict(
          lambda tokens: apply_fn(params, tokens), prompt, task)

    predict = lambda prompt: _predict_cot(params, prompt)
  else:

    @jax.jit
    def _predict(params, tokens, positions):
      return jnp.take(apply_fn(params, tokens), positions, axis=1)

    predict = lambda prompt: _predict(params, prompt.tokens,
                                      prompt.predict_positions)
  predict.kind = KIND_MODEL
  return predict


def eval_prompts(task: Any, *, n_points: int, n_prompts: int,
                 batch_size: int, seed: int):
  """Yields the fixed evaluation batches: (batch index, Prompt).

  The i-th batch is `task.sample(fold_in(fold_in(key(seed), stream), i),
  batch_size, n_points)`, cut to the prompts still missing in the last one,
  so a given (task, n_points, batch_size, seed) always gives the same
  prompts.
  """
  root = jax.random.fold_in(jax.random.key(seed), _EVAL_STREAM)
  # One compilation serves every batch; evaluation uses the full input width.
  sample = jax.jit(functools.partial(
      task.sample, batch_size=batch_size, n_points=n_points))
  for i in range(math.ceil(n_prompts / batch_size)):
    prompt = sample(jax.random.fold_in(root, i))
    keep = min(batch_size, n_prompts - i * batch_size)
    if keep < batch_size:
      prompt = _take_prompts(prompt, keep)
    yield i, prompt


def _take_prompts(prompt: base.Prompt, keep: int) -> base.Prompt:
  """The first `keep` prompts of a batch (per-slot fields are shared)."""
  cut = lambda a: None if a is None else a[:keep]
  return prompt.replace(
      tokens=cut(prompt.tokens), targets=cut(prompt.targets),
      loss_mask=cut(prompt.loss_mask), metric_mask=cut(prompt.metric_mask),
      xs=cut(prompt.xs), ys=cut(prompt.ys),
      example_mask=cut(prompt.example_mask))


def _check_positive_int(field: str, value: Any) -> None:
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
      or value < 1):
    raise ValueError(f"{field}={value!r} must be a positive int.")


def _task_config(task: Any) -> dict[str, Any]:
  """The task's fields as JSON values (repr for anything exotic)."""
  config = {}
  if dataclasses.is_dataclass(task):
    for field in dataclasses.fields(task):
      value = getattr(task, field.name)
      if not isinstance(value, (bool, int, float, str, type(None))):
        value = repr(value)
      config[field.name] = value
  return config


def bootstrap_indices(n_prompts: int, n_bootstrap: int,
                      seed: int) -> np.ndarray:
  """[n_bootstrap, N] counts of each prompt in each resample (with replacement).

  The same resamples serve every predictor, so their intervals are comparable.
  """
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, n_prompts, size=(n_bootstrap, n_prompts))
  flat = idx + n_prompts * np.arange(n_bootstrap)[:, None]
  counts = np.bincount(flat.ravel(), minlength=n_bootstrap * n_prompts)
  return counts.reshape(n_bootstrap, n_prompts).astype(np.float64)


def curve_statistics(values: np.ndarray, weights: np.ndarray,
                     counts: np.ndarray) -> dict[str, list]:
  """Mean, spread and bootstrap interval at each curve point.

  Args:
    values: [N, X] per-prompt sum of the metric over the slots of each point.
    weights: [N, X] per-prompt number of scored slots at each point.
    counts: [B, N] bootstrap resample counts (`bootstrap_indices`).

  Returns:
    JSON-ready lists of length X: `mean` (pooled over prompts), `std` (of the
    per-prompt means), `low` / `high` (`CONFIDENCE` quantiles of the
    resampled means) and `count` (scored slots); None where nothing is scored.
  """
  total_w = weights.sum(0)                                      # [X]
  scored = total_w > 0
  mean = np.where(scored, values.sum(0) / np.where(scored, total_w, 1), np.nan)
  has = weights > 0
  per_prompt = np.where(has, values / np.where(has, weights, 1), np.nan)
  centred = np.where(has, per_prompt - mean, 0.0)
  std = np.sqrt((centred**2).sum(0) / np.maximum(has.sum(0), 1))
  boot_w = counts @ weights                                     # [B, X]
  boot_v = counts @ values
  boot = np.where(boot_w > 0, boot_v / np.where(boot_w > 0, boot_w, 1), np.nan)
  with warnings.catch_warnings():
    # Points that no resample scores give an all-NaN column: reported None.
    warnings.simplefilter("ignore", RuntimeWarning)
    low, high = (np.nanquantile(boot, q, axis=0) for q in CONFIDENCE)

  def clean(a):
    return [None if not (s and np.isfinite(v)) else float(v)
            for s, v in zip(scored, a)]

  return {"mean": clean(mean), "std": clean(std), "low": clean(low),
          "high": clean(high), "count": [int(c) for c in total_w]}


def evaluate(predictors: Mapping[str, Predictor], task: Any, *,
             n_points: int, n_prompts: int = 1280, batch_size: int = 64,
             seed: int = 0, n_bootstrap: int = 1000,
             progress: bool = True) -> dict[str, Any]:
  """Error (or accuracy) versus number of in-context examples.

  Args:
    predictors: name -> `predict(prompt) -> [b, p, d_out]` (models via
      `model_predictor`, baselines from `ssm_icl.baselines`).
    task: a task with `sample(key, batch_size, n_points)` and `name`.
    n_points: examples per prompt.
    n_prompts: evaluation prompts (the reference uses 1280 = 20 x 64).
    batch_size: prompts per sampled batch.
    seed: evaluation seed; the same seed gives the same prompts and, for
      deterministic predictors, identical curves.
    n_bootstrap: bootstrap resamples of the prompts.
    progress: show a progress bar (`ssm_icl.progress_bar`: one line per
      update when stderr is not a terminal).

  Returns:
    A JSON-serialisable dict: `task`, `task_config`, `metric`, `normalizer`,
    the evaluation settings, `x` (numbers of preceding examples) and
    `curves[name]` = {kind, mean, std, low, high, count} (see
    `curve_statistics`).

  Raises:
    ValueError: on empty `predictors` or non-positive sizes, or if a
      predictor returns the wrong shape.
  """
  if not predictors:
    raise ValueError("predictors is empty; pass at least one name -> "
                     "predict(prompt) callable.")
  for field, value in (("n_points", n_points), ("n_prompts", n_prompts),
                       ("batch_size", batch_size),
                       ("n_bootstrap", n_bootstrap)):
    _check_positive_int(field, value)
  names = list(predictors)
  sums = {name: [] for name in names}       # per batch: [b, X]
  weights = []
  x = onehot = metric = normalizer = None
  bar = progress_bar.progress_bar(
      math.ceil(n_prompts / batch_size) * len(names),
      f"eval {getattr(task, 'name', '')}", enabled=progress, leave=False)
  for _, prompt in eval_prompts(task, n_points=n_points, n_prompts=n_prompts,
                                batch_size=batch_size, seed=seed):
    if x is None:
      slots = np.asarray(prompt.example_index)
      x, group = np.unique(slots, return_inverse=True)
      onehot = np.eye(len(x))[group]                              # [p, X]
      metric, normalizer = prompt.metric, prompt.normalizer
    mask = np.asarray(prompt.metric_mask, np.float64)             # [b, p]
    weights.append(mask @ onehot)
    for name in names:
      bar.set_postfix_str(name)
      preds = predictors[name](prompt)
      if tuple(preds.shape) != tuple(prompt.targets.shape):
        raise ValueError(
            f"Predictor {name!r} returned shape {tuple(preds.shape)}; "
            f"expected prompt.targets' shape {tuple(prompt.targets.shape)}.")
      values = np.asarray(base.pointwise_metric(preds, prompt), np.float64)
      # Unscored slots may hold anything (even NaN): zero them, don't weight.
      values = np.where(mask > 0, values, 0.0) * mask
      sums[name].append(values @ onehot)
      bar.update()
  bar.close()
  weights = np.concatenate(weights)                               # [N, X]
  counts = bootstrap_indices(n_prompts, n_bootstrap, seed)
  curves = {}
  for name in names:
    kind = getattr(predictors[name], "kind", KIND_MODEL)
    stats = curve_statistics(np.concatenate(sums[name]), weights, counts)
    curves[name] = {"kind": kind, **stats}
  return {
      "format_version": FORMAT_VERSION,
      "task": getattr(task, "name", type(task).__name__),
      "task_config": _task_config(task),
      "metric": metric,
      "normalizer": float(normalizer),
      "n_points": n_points,
      "n_prompts": n_prompts,
      "batch_size": batch_size,
      "seed": seed,
      "n_bootstrap": n_bootstrap,
      "confidence": list(CONFIDENCE),
      "x": [int(v) for v in x],
      "curves": curves,
  }


_REQUIRED = ("format_version", "task", "metric", "x", "curves")
_CURVE_KEYS = ("kind", "mean", "low", "high")


def validate_results(results: Mapping[str, Any], *, source: str = "results"
                     ) -> None:
  """Raises ValueError unless `results` has the layout `evaluate` returns."""
  missing = [k for k in _REQUIRED if k not in results]
  if missing:
    raise ValueError(f"{source}: missing key(s) {missing}; expected the "
                     f"dict that icl_curves.evaluate returns.")
  if results["format_version"] != FORMAT_VERSION:
    raise ValueError(
        f"{source}: format_version={results['format_version']!r}, expected "
        f"{FORMAT_VERSION}.")
  n = len(results["x"])
  for name, curve in results["curves"].items():
    bad = [k for k in _CURVE_KEYS if k not in curve]
    if bad:
      raise ValueError(f"{source}: curve {name!r} lacks {bad}.")
    for k in ("mean", "low", "high"):
      if len(curve[k]) != n:
        raise ValueError(
            f"{source}: curve {name!r} has {len(curve[k])} {k!r} values "
            f"but x has {n}.")


def save_results(results: Mapping[str, Any], path: paths.PathLike) -> None:
  """Writes `results` as JSON, atomically (local or gs://)."""
  validate_results(results)
  paths.write_text(path, json.dumps(results, indent=1, allow_nan=False)
                   + "\n")


def load_results(path: paths.PathLike) -> dict[str, Any]:
  """Reads results written by `save_results` (and checks their layout)."""
  results = json.loads(epath.Path(path).read_text())
  validate_results(results, source=os.fspath(path))
  return results
