r"""Decision trees of depth 4 (docs/PAPER.md §3.4).

Paper setting: d = 20, 101 points, curriculum dims 5 -> 20 (+1 / 2000),
points 26 -> 101 (+5 / 2000), lr 4e-4, clip 10, batch 64, 500k steps.

Argument "family[,size]" (see configs/linear_regression.py).

  python -m ssm_icl.main --config=configs/decision_tree.py:mambaformer \
      --workdir=workdirs/dt_mambaformer

Expected (Table 1): Transformer and MambaFormer learn it; Mamba shows a gap.
"""

from configs import common


def get_config(arg=None):
  return common.task_config(
      arg, task="decision_tree", kwargs={"n_dims": 20, "depth": 4},
      schedule=common.curriculum(dims=(5, 20, 1, 2000),
                                 points=(26, 101, 5, 2000)),
      lr=4e-4, reference_positions=101,
      tiny_kwargs={"n_dims": 4, "depth": 2},
      tiny_schedule=common.curriculum(dims=(4, 4, 0, 1),
                                      points=(6, 6, 0, 1)))
