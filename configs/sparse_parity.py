r"""Sparse parity (docs/PAPER.md §3.7): y = product of k = 2 of d = 10 signs.

Paper setting: d = 10, k = 2, 140 points (fixed, 280 tokens), logistic loss,
accuracy metric, lr 4e-4, clip 10, batch 64, 500k steps; Transformer D=256
with 12 layers (Garg's "standard"), the other families D=256 with 24 layers
(docs/PAPER.md §7.2). `--config.task.kwargs.reference_shared_subset=True`
reproduces the reference's one subset per batch.

Argument "family[,size]" (see configs/linear_regression.py).

  python -m ssm_icl.main --config=configs/sparse_parity.py:mamba \
      --workdir=workdirs/parity_mamba

Expected (Table 1): Mamba and MambaFormer reach ~100% accuracy; the
Transformer stays near chance (50%).
"""

from configs import common


def get_config(arg=None):
  return common.task_config(
      arg, task="sparse_parity", kwargs={"n_dims": 10, "k": 2},
      schedule=common.curriculum(dims=(10, 10, 0, 1),
                                 points=(140, 140, 0, 1)),
      lr=4e-4, reference_positions=300, paper_width=256, paper_depth=24,
      transformer_depth=12, ckpt_every=10_000,
      tiny_kwargs={"n_dims": 6, "k": 2},
      tiny_schedule=common.curriculum(dims=(6, 6, 0, 1),
                                      points=(12, 12, 0, 1)))
