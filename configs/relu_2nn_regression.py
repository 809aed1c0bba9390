r"""2-layer ReLU network regression (docs/PAPER.md §3.3), hidden width 100.

Paper setting: d = 20, 101 points, curriculum dims 5 -> 20 (+1 / 2000),
points 26 -> 101 (+5 / 2000), lr 1e-4, clip 10, batch 64, 500k steps.

Argument "family[,size]" (see configs/linear_regression.py).

  python -m ssm_icl.main --config=configs/relu_2nn_regression.py:mamba \
      --workdir=workdirs/2nn_mamba

Expected: all families learn it (error well below least squares late in the
prompt); Table 1 marks every model as passing.
"""

from configs import common


def get_config(arg=None):
  return common.task_config(
      arg, task="relu_2nn_regression", kwargs={"n_dims": 20, "hidden": 100},
      schedule=common.curriculum(dims=(5, 20, 1, 2000),
                                 points=(26, 101, 5, 2000)),
      lr=1e-4, reference_positions=101,
      tiny_kwargs={"n_dims": 4, "hidden": 8},
      tiny_schedule=common.curriculum(dims=(4, 4, 0, 1),
                                      points=(6, 6, 0, 1)))
