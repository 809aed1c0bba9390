r"""Quickstart: a small MambaFormer learns linear regression in context on a CPU.

  python -m ssm_icl.main --config=configs/quickstart.py \
      --workdir=workdirs/quickstart
  python -m ssm_icl.eval --workdir=workdirs/quickstart

(`bash launch/local.sh` runs both.) Linear regression with d = 4 and 9
examples per prompt (18 tokens), a 4-layer MambaFormer with D = 64 (132k
parameters), Adam at lr 2e-3 with a 200-step warm-up and a cosine decay,
batch 64, 4000 steps. Matmul precision "default", as every small size
(TF32/bf16 passes on a GPU/TPU, full fp32 on the CPU it is meant for).

Why these choices: the acceptance number is the error at k = d examples,
where least squares is exact (0) and a model has to have really inferred the
weights; a few thousand CPU steps get there for small d. Measured (seed 0):
at d = 5 with 11 examples and 4000 steps the error at k = d was 0.208; at
d = 4 it is 0.150 (docs/TRAINING.md, "Quickstart"). The cosine decay
matters: the last third of the steps, at a falling learning rate, is where
the error near k = d drops. MambaFormer rather than Mamba because it reaches
a given error in fewer CPU steps (in the mini suite they are close).
"""

from configs import common
from ssm_icl import errors

N_DIMS = 4
N_POINTS = 2 * N_DIMS + 1


def get_config(arg=None):
  """The quickstart config; it takes no argument."""
  if arg:
    raise errors.UserError(
        f"configs/quickstart.py takes no argument (got {arg!r}).")
  config = common.task_config(
      "mambaformer,small", task="linear_regression",
      kwargs={"n_dims": N_DIMS},
      # No curriculum: d and the number of examples are fixed.
      schedule=common.curriculum(dims=(N_DIMS, N_DIMS, 0, 1),
                                 points=(N_POINTS, N_POINTS, 0, 1)),
      lr=2e-3, steps=4000, reference_positions=None,
      tiny_kwargs={}, tiny_schedule={})
  config.model.d_model = 64
  config.model.n_layer = 4
  config.train.lr_schedule = "cosine"
  config.train.warmup_steps = 200
  config.train.log_every = 100
  config.train.eval_every = 500
  config.train.eval_prompts = 256
  config.ckpt.every = 500
  return config
