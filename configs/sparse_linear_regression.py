r"""Sparse linear regression (docs/PAPER.md §3.2): w has 3 non-zeros of 20.

Paper setting: as linear regression (41 points, dims 5 -> 20, points
11 -> 41, lr 1e-4, clip 10, batch 64, 500k steps); the support of w stays
within the first n_dims_truncated coordinates; error normalised by k.

Argument "family[,size]" (see configs/linear_regression.py).

  python -m ssm_icl.main \
      --config=configs/sparse_linear_regression.py:mamba \
      --workdir=workdirs/slr_mamba

Expected: every family beats least squares before k = d and approaches the
Lasso baseline.
"""

from configs import common


def get_config(arg=None):
  return common.task_config(
      arg, task="sparse_linear_regression", kwargs={"n_dims": 20, "k": 3},
      schedule=common.curriculum(dims=(5, 20, 1, 2000),
                                 points=(11, 41, 2, 2000)),
      lr=1e-4, reference_positions=101,
      tiny_kwargs={"n_dims": 4, "k": 2},
      tiny_schedule=common.curriculum(dims=(4, 4, 0, 1),
                                      points=(6, 6, 0, 1)))
