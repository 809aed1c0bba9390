r"""Vector-valued multi-query associative recall (docs/PAPER.md §3.9): 64
key-value pairs on the sphere of radius sqrt(20), then a query key.

Paper setting (released config): d = 20, 64 pairs (129 tokens), lr 2e-4,
clip 100, batch 64, 500k steps, Transformer D=128 with 2 layers.
`--config.task.kwargs.reference_self_query=True` lets the query copy
itself, as the reference's inclusive randint does.

Argument "family[,size]" (see configs/linear_regression.py).

  python -m ssm_icl.main --config=configs/vector_mqar.py:transformer \
      --workdir=workdirs/mqar_transformer

Expected (Table 1): Transformer and MambaFormer retrieve the value (error
near 0); Mamba fails (error near the zero predictor's 1).
"""

from configs import common


def get_config(arg=None):
  return common.task_config(
      arg, task="vector_mqar", kwargs={"n_dims": 20, "n_pairs": 64},
      schedule=common.curriculum(dims=(20, 20, 0, 1),
                                 points=(64, 64, 0, 1)),
      lr=2e-4, grad_clip=100.0, reference_positions=130,
      tiny_kwargs={"n_dims": 4, "n_pairs": 4},
      tiny_schedule=common.curriculum(dims=(4, 4, 0, 1),
                                      points=(4, 4, 0, 1)))
