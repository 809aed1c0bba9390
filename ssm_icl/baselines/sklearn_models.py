"""scikit-learn baselines fitted on host, one fit per (prompt, distinct prefix).

* `Lasso`: L1-regularised least squares without intercept (Garg et al. use
  alpha in {1, 0.1, 0.01, 0.001, 0.0001} for sparse linear regression).
* `DecisionTree`: greedy CART regression tree (max depth 4 and unlimited).
* `GradientBoosting`: gradient-boosted trees for the decision-tree task.
  Garg et al. use XGBoost with its defaults (100 rounds, learning rate 0.3,
  depth 6); sklearn's `GradientBoostingRegressor` with the same three settings
  stands in for it, which avoids a dependency for one baseline.

Cost control: a model is fitted only for slots that the metric reads, and
slots with the same prefix (e.g. the slot after an outlier, whose prefix did
not grow) share one fit.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import ensemble
from sklearn import exceptions
from sklearn import linear_model
from sklearn import tree

from ssm_icl.baselines import prefix
from ssm_icl.tasks import base


def fit_predict_prefixes(view: prefix.PrefixView,
                         make_estimator: Callable[[], Any]) -> np.ndarray:
  """Fits one estimator per distinct prefix and predicts each slot's query.

  Args:
    view: the prefix view of a batch of prompts.
    make_estimator: returns a fresh unfitted sklearn regressor.

  Returns:
    [b, p, d_y] float32 predictions; 0 at slots with an empty prefix and at
    slots the metric does not read.
  """
  xs = np.asarray(view.xs, np.float64)
  ys = np.asarray(view.ys, np.float64)
  queries = np.asarray(view.queries, np.float64)
  prefix_mask = np.asarray(view.prefix_mask) > 0
  slot_mask = np.asarray(view.slot_mask) > 0
  b, p, _ = queries.shape
  d_y = ys.shape[-1]
  preds = np.zeros((b, p, d_y), np.float32)
  for i in range(b):
    # Slots that share a prefix share a fit: collect their queries first.
    groups: dict[bytes, tuple[np.ndarray, list[int]]] = {}
    for j in np.flatnonzero(slot_mask[i]):
      idx = np.flatnonzero(prefix_mask[i, j])
      if idx.size:
        groups.setdefault(idx.tobytes(), (idx, []))[1].append(j)
    for idx, slots in groups.values():
      x, y = xs[i, idx], ys[i, idx]
      out = np.zeros((len(slots), d_y))
      for c in range(d_y):
        estimator = make_estimator()
        estimator.fit(x, y[:, c])
        out[:, c] = estimator.predict(queries[i, slots])
      preds[i, slots] = out
  return preds


def _predict(prompt: base.Prompt, make_estimator, name: str) -> jax.Array:
  view = prefix.prefix_view(prompt, name=name)
  return prefix.to_targets(
      jnp.asarray(fit_predict_prefixes(view, make_estimator)), prompt)


@dataclasses.dataclass(frozen=True)
class Lasso(prefix.Baseline):
  """sklearn Lasso (no intercept) on the prefix.

  Convergence warnings are silenced: with fewer examples than dimensions and
  a small alpha, coordinate descent may stop at `max_iter`, and the
  prediction of the last iterate is still the baseline's answer.

  Attributes:
    alpha: L1 penalty, > 0 (sklearn's objective scales the squared error by
      1 / (2 n_samples)).
    max_iter: coordinate-descent iteration cap.
  """

  alpha: float = 0.1
  max_iter: int = 100_000

  def __post_init__(self):
    if not self.alpha > 0:
      raise ValueError(f"Lasso.alpha must be > 0, got {self.alpha}.")
    if not self.max_iter >= 1:
      raise ValueError(f"Lasso.max_iter must be >= 1, got {self.max_iter}.")

  def __call__(self, prompt: base.Prompt) -> jax.Array:
    make = lambda: linear_model.Lasso(
        alpha=self.alpha, fit_intercept=False, max_iter=self.max_iter)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
      return _predict(prompt, make, f"lasso(alpha={self.alpha})")


@dataclasses.dataclass(frozen=True)
class DecisionTree(prefix.Baseline):
  """Greedy CART regression tree on the prefix.

  Attributes:
    max_depth: depth limit (>= 1), or None for unlimited depth.
    seed: random_state of the tree (ties between equally good splits).
  """

  max_depth: int | None = 4
  seed: int = 0

  def __post_init__(self):
    if self.max_depth is not None and not self.max_depth >= 1:
      raise ValueError(
          f"DecisionTree.max_depth must be >= 1 or None, got "
          f"{self.max_depth}.")

  def __call__(self, prompt: base.Prompt) -> jax.Array:
    make = lambda: tree.DecisionTreeRegressor(
        max_depth=self.max_depth, random_state=self.seed)
    return _predict(prompt, make, f"decision_tree(max_depth={self.max_depth})")


@dataclasses.dataclass(frozen=True)
class GradientBoosting(prefix.Baseline):
  """Gradient-boosted regression trees on the prefix (XGBoost's defaults).

  Attributes:
    n_estimators: boosting rounds, >= 1.
    learning_rate: shrinkage, > 0.
    max_depth: depth of each tree, >= 1.
    seed: random_state of the trees.
  """

  n_estimators: int = 100
  learning_rate: float = 0.3
  max_depth: int = 6
  seed: int = 0

  def __post_init__(self):
    for field, value, ok in (
        ("n_estimators", self.n_estimators, self.n_estimators >= 1),
        ("learning_rate", self.learning_rate, self.learning_rate > 0),
        ("max_depth", self.max_depth, self.max_depth >= 1)):
      if not ok:
        raise ValueError(
            f"GradientBoosting.{field} must be positive, got {value}.")

  def __call__(self, prompt: base.Prompt) -> jax.Array:
    make = lambda: ensemble.GradientBoostingRegressor(
        n_estimators=self.n_estimators, learning_rate=self.learning_rate,
        max_depth=self.max_depth, random_state=self.seed)
    return _predict(prompt, make, "gradient_boosting")
