r"""Many-outlier regression (docs/PAPER.md §3.6): 90% of the examples are
(all-ones, 1) outliers; long prompts of up to 512 points (1024 tokens).

Paper setting: d = 20, outlier probability 0.9, curriculum dims 4 -> 20
(+1 / 2000) and points 12 -> 512 (+2 / 200), lr 1e-4, clip 10, batch 64
(the reference splits it over 2 GPUs), 1M steps.

Argument "family[,size]" (see configs/linear_regression.py). The long
prompts make this the task that benefits most from a mesh:

  python -m ssm_icl.main --config=configs/many_outlier_regression.py:mamba \
      --workdir=workdirs/many_mamba --config.mesh.shape="(-1, 1)"

Expected (Table 1): Mamba and MambaFormer learn it; the Transformer shows a
gap.
"""

from configs import common


def get_config(arg=None):
  return common.task_config(
      arg, task="many_outlier_regression", kwargs={"n_dims": 20, "prob": 0.9},
      schedule=common.curriculum(dims=(4, 20, 1, 2000),
                                 points=(12, 512, 2, 200)),
      lr=1e-4, steps=1_000_000, reference_positions=1024, ckpt_every=1000,
      tiny_kwargs={"n_dims": 4, "prob": 0.5},
      tiny_schedule=common.curriculum(dims=(4, 4, 0, 1),
                                      points=(8, 8, 0, 1)))
