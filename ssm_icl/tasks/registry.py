"""Task registry: name -> task class, and `get_task` with checked kwargs."""

from __future__ import annotations

import dataclasses
from typing import Any

from ssm_icl import errors
from ssm_icl.tasks import cot
from ssm_icl.tasks import decision_tree
from ssm_icl.tasks import mqar
from ssm_icl.tasks import outliers
from ssm_icl.tasks import parity
from ssm_icl.tasks import regression
from ssm_icl.tasks import task as task_lib

# The nine task families of the paper, under their config names.
TASKS: dict[str, type[task_lib.Task]] = {
    cls.name: cls for cls in (
        regression.LinearRegression,
        regression.SparseLinearRegression,
        regression.Relu2nnRegression,
        decision_tree.DecisionTree,
        outliers.OrthoOutlierRegression,
        outliers.ManyOutlierRegression,
        parity.SparseParity,
        cot.CotIO,
        mqar.VectorMQAR,
    )
}


def get_task(name: str, **kwargs: Any) -> task_lib.Task:
  """Builds the task `name` with the given field values.

  Args:
    name: a key of `TASKS`, e.g. "linear_regression".
    **kwargs: task fields (e.g. `n_dims=10`); the rest keep paper defaults.

  Returns:
    The frozen task instance.

  Raises:
    ValueError: unknown name (the message lists the valid names), unknown
      field (named with the valid fields), or an invalid field value.
  """
  if name not in TASKS:
    raise errors.UserError(
        f"Unknown task {name!r}; valid names: {sorted(TASKS)}.")
  cls = TASKS[name]
  valid = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise errors.UserError(f"Unknown argument(s) {unknown} for task {name!r}; "
                           f"valid arguments: {valid}.")
  return cls(**kwargs)
