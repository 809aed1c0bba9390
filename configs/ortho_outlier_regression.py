r"""Orthogonal-outlier regression (docs/PAPER.md §3.5): half the examples are
replaced by dummies orthogonal to the prompt's w.

Paper setting: d = 20, outlier probability 0.5, 101 points, curriculum dims
5 -> 20 (+1 / 2000), points 26 -> 101 (+5 / 2000), lr 1e-4, clip 10, batch
64, 500k steps. `--config.task.kwargs.reference_fresh_w=True` reproduces the
reference code's dummies (orthogonal to an unrelated w).

Argument "family[,size]" (see configs/linear_regression.py).

  python -m ssm_icl.main \
      --config=configs/ortho_outlier_regression.py:mamba \
      --workdir=workdirs/ortho_mamba

Expected (Table 1): Mamba shows a gap; Transformer and MambaFormer do not.
"""

from configs import common


def get_config(arg=None):
  return common.task_config(
      arg, task="ortho_outlier_regression", kwargs={"n_dims": 20, "prob": 0.5},
      schedule=common.curriculum(dims=(5, 20, 1, 2000),
                                 points=(26, 101, 5, 2000)),
      lr=1e-4, reference_positions=101,
      tiny_kwargs={"n_dims": 4, "prob": 0.5},
      tiny_schedule=common.curriculum(dims=(4, 4, 0, 1),
                                      points=(6, 6, 0, 1)))
