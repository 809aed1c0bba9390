r"""Chain-of-thought I/O (docs/PAPER.md §3.8): tokens x_i, s_i, y_i of a random
2-layer ReLU network with the hidden layer s_i as the intermediate step.

Setting (Li et al.'s cot_2nn; the Mamba paper's exact values are
unconfirmed): d = 10, hidden 4, curriculum points 26 -> 101 (+5 / 2000, 303
tokens at the end), dims fixed at 10, lr 1e-4, clip 10, batch 64, 500k steps.

Argument "family[,size]" (see configs/linear_regression.py).

  python -m ssm_icl.main --config=configs/cot_io.py:mambaformer \
      --workdir=workdirs/cot_mambaformer

Expected (Table 1): all three models learn it.
"""

from configs import common


def get_config(arg=None):
  return common.task_config(
      arg, task="cot_io", kwargs={"n_dims": 10, "hidden": 4},
      schedule=common.curriculum(dims=(10, 10, 0, 1),
                                 points=(26, 101, 5, 2000)),
      lr=1e-4,
      tiny_kwargs={"n_dims": 4, "hidden": 2},
      tiny_schedule=common.curriculum(dims=(4, 4, 0, 1),
                                      points=(4, 4, 0, 1)))
