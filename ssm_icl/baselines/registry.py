"""Baseline registry and the baselines that make sense for each task.

`relevant_baselines(task)` follows the reference `get_relevant_baselines`
(Garg et al., extended by Park et al.): least squares, 3-NN and averaging for
every regression task, Lasso for sparse regression, a GD-trained 2-layer
network for 2NN regression and trees, greedy trees and boosting for trees,
plus the trivial reference of each task (zero predictor, or chance for
parity) and the Bayes-optimal predictor where it is known.

`NO_CONTEXT` names, per task, the curve of the best predictor that ignores
the in-context examples: the trivial level e0 of Table 1 (ssm_icl.eval.report).
Every task's targets are symmetric about 0 given the query alone (Gaussian
weights, leaf values, output weights and value vectors), so the zero
predictor is that predictor on every squared-error task; on sparse parity it
is the Bayes vote over all C(d, k) subsets (`ParityBayes(use_examples=False)`,
accuracy 0.594 for d = 6, k = 2), not coin-flip chance.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from ssm_icl.baselines import gd_network
from ssm_icl.baselines import linear
from ssm_icl.baselines import neighbors
from ssm_icl.baselines import parity
from ssm_icl.baselines import prefix
from ssm_icl.baselines import sklearn_models
from ssm_icl.baselines import trivial

BASELINES: dict[str, type[prefix.Baseline]] = {
    "zero": trivial.ZeroPredictor,
    "chance": trivial.RandomSign,
    "least_squares": linear.LeastSquares,
    "ridge": linear.Ridge,
    "bayes_linear": linear.BayesLinearRegression,
    "averaging": linear.Averaging,
    "knn": neighbors.KNearestNeighbors,
    "lasso": sklearn_models.Lasso,
    "decision_tree": sklearn_models.DecisionTree,
    "gradient_boosting": sklearn_models.GradientBoosting,
    "gd_2nn": gd_network.GDTwoLayerNetwork,
    "parity_bayes": parity.ParityBayes,
}

# Curve of the best no-context predictor per task (module docstring).
NO_CONTEXT = {
    "linear_regression": "zero",
    "sparse_linear_regression": "zero",
    "relu_2nn_regression": "zero",
    "decision_tree": "zero",
    "ortho_outlier_regression": "zero",
    "many_outlier_regression": "zero",
    "sparse_parity": "no_context",
    "cot_io": "zero",
    "vector_mqar": "zero",
}

# The alphas of the reference's Lasso baselines for sparse regression.
LASSO_ALPHAS = (1.0, 0.1, 0.01, 0.001, 0.0001)


def get_baseline(name: str, **kwargs: Any) -> prefix.Baseline:
  """Builds the baseline `name` with the given hyperparameters.

  Args:
    name: a key of `BASELINES`, e.g. "knn".
    **kwargs: fields of that baseline (e.g. `n_neighbors=3`).

  Returns:
    The baseline, a callable `predict(prompt) -> [b, p, d_out]`.

  Raises:
    ValueError: unknown name or field (the message lists the valid ones), or
      an invalid value.
  """
  if name not in BASELINES:
    raise ValueError(
        f"Unknown baseline {name!r}; valid names: {sorted(BASELINES)}.")
  cls = BASELINES[name]
  valid = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise ValueError(f"Unknown argument(s) {unknown} for baseline {name!r}; "
                     f"valid arguments: {valid}.")
  return cls(**kwargs)


def _regression() -> dict[str, prefix.Baseline]:
  return {
      "zero": trivial.ZeroPredictor(),
      "least_squares": linear.LeastSquares(),
      "3-nn": neighbors.KNearestNeighbors(n_neighbors=3),
      "averaging": linear.Averaging(),
  }


def _linear_regression(task) -> dict[str, prefix.Baseline]:
  out = _regression()
  noise_std = float(getattr(task, "noise_std", 0.0))
  if noise_std > 0:
    # y = y_scale x.w + noise (any common rescaling of y cancels in the
    # ratio), so the prior of the effective weights has variance y_scale^2.
    y_scale = float(getattr(task, "y_scale", 1.0))
    out["bayes_optimal"] = linear.BayesLinearRegression(
        noise_var=noise_std**2, prior_var=y_scale**2)
  return out


def _sparse_linear_regression(task) -> dict[str, prefix.Baseline]:
  del task  # Unused.
  out = _regression()
  for alpha in LASSO_ALPHAS:
    out[f"lasso(alpha={alpha:g})"] = sklearn_models.Lasso(alpha=alpha)
  return out


def _relu_2nn_regression(task) -> dict[str, prefix.Baseline]:
  del task  # Unused.
  return {**_regression(), "2nn_gd": gd_network.GDTwoLayerNetwork()}


def _decision_tree(task) -> dict[str, prefix.Baseline]:
  del task  # Unused.
  return {
      **_regression(),
      "tree(depth=4)": sklearn_models.DecisionTree(max_depth=4),
      "tree(unlimited)": sklearn_models.DecisionTree(max_depth=None),
      "boosting": sklearn_models.GradientBoosting(),
      "2nn_gd": gd_network.GDTwoLayerNetwork(),
  }


def _outlier_regression(task) -> dict[str, prefix.Baseline]:
  del task  # Unused: baselines fit the clean examples (example_mask).
  return _regression()


def _sparse_parity(task) -> dict[str, prefix.Baseline]:
  return {
      "chance": trivial.RandomSign(),
      "no_context": parity.ParityBayes(k=int(task.k), use_examples=False),
      "bayes_optimal": parity.ParityBayes(k=int(task.k)),
      "3-nn": neighbors.KNearestNeighbors(n_neighbors=3),
  }


def _cot_io(task) -> dict[str, prefix.Baseline]:
  del task  # Unused: y is a 2-layer ReLU network of x.
  return {**_regression(), "2nn_gd": gd_network.GDTwoLayerNetwork()}


def _vector_mqar(task) -> dict[str, prefix.Baseline]:
  del task  # Unused.
  return {
      "zero": trivial.ZeroPredictor(),
      # Keys share one norm, so the nearest key in Euclidean distance is the
      # key of largest inner product: the exact retrieval rule.
      "nearest_key": neighbors.KNearestNeighbors(n_neighbors=1),
      "least_squares": linear.LeastSquares(),
  }


_RELEVANT: dict[str, Callable[[Any], dict[str, prefix.Baseline]]] = {
    "linear_regression": _linear_regression,
    "sparse_linear_regression": _sparse_linear_regression,
    "relu_2nn_regression": _relu_2nn_regression,
    "decision_tree": _decision_tree,
    "ortho_outlier_regression": _outlier_regression,
    "many_outlier_regression": _outlier_regression,
    "sparse_parity": _sparse_parity,
    "cot_io": _cot_io,
    "vector_mqar": _vector_mqar,
}


def no_context_level(task: str, task_config: Mapping[str, Any],
                     metric: str) -> float:
  """The no-context predictor's metric value, computed without prompts.

  Used when no `NO_CONTEXT` curve was stored: exact for sparse parity
  (`parity.no_context_accuracy`), 1 for normalised squared error (the zero
  predictor's expected error on every squared-error task, docs/PAPER.md
  §2.4).

  Raises:
    ValueError: a task/metric pair with no known value.
  """
  if task == "sparse_parity" and metric == "accuracy":
    return parity.no_context_accuracy(int(task_config["n_dims"]),
                                      int(task_config["k"]))
  if NO_CONTEXT.get(task) == "zero" and metric == "squared_error":
    return 1.0
  raise ValueError(f"No analytic no-context level for task {task!r} with "
                   f"metric {metric!r}; store its {NO_CONTEXT.get(task)!r} "
                   "curve (evaluate the task's baselines).")


def relevant_baselines(task: Any) -> dict[str, prefix.Baseline]:
  """The baselines to plot next to the models on `task`.

  Args:
    task: a task (anything with a `name` of a known task family).

  Returns:
    Display name -> baseline, in plotting order.

  Raises:
    ValueError: if the task's name is not a known task family.
  """
  name = getattr(task, "name", None)
  if name not in _RELEVANT:
    raise ValueError(
        f"No baselines are defined for task name {name!r}; known task "
        f"names: {sorted(_RELEVANT)}.")
  return _RELEVANT[name](task)
