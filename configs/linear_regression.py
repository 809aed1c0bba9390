r"""Linear regression (docs/PAPER.md §3.1): y = w.x, w ~ N(0, I_20) per prompt.

Paper setting: d = 20, 41 points, curriculum dims 5 -> 20 (+1 / 2000 steps)
and points 11 -> 41 (+2 / 2000), Adam lr 1e-4, clip 10, batch 64, 500k steps;
Transformer D=128 with 2 layers, the other families D=128 with 4 layers.

The argument is "family[,size]": family in transformer (default), mamba, s4,
s4_mamba, hybrid, mambaformer; size in paper (default), small, tiny.

  python -m ssm_icl.main --config=configs/linear_regression.py:mambaformer \
      --workdir=workdirs/lr_mambaformer
  python -m ssm_icl.main --config=configs/linear_regression.py:mamba,tiny \
      --workdir=/tmp/lr_tiny

Expected (paper, Figure 2/3 style curves): every family reaches least
squares' error, ~0 once k >= d = 20 examples.
"""

from configs import common


def get_config(arg=None):
  return common.task_config(
      arg, task="linear_regression", kwargs={"n_dims": 20},
      schedule=common.curriculum(dims=(5, 20, 1, 2000),
                                 points=(11, 41, 2, 2000)),
      lr=1e-4, reference_positions=101,
      tiny_kwargs={"n_dims": 4},
      tiny_schedule=common.curriculum(dims=(4, 4, 0, 1),
                                      points=(6, 6, 0, 1)))
