r"""Quickstart: a small Mamba learns linear regression in context on a CPU.

  python -m ssm_icl.main --config=configs/quickstart.py \
      --workdir=workdirs/quickstart
  python -m ssm_icl.eval --workdir=workdirs/quickstart

(`bash launch/local.sh` runs both.) Linear regression with d = 8 and 17
examples per prompt (curriculum 9 -> 17), a 4-layer Mamba with D = 64,
Adam lr 1e-3, batch 64.

Expected result: see docs/TRAINING.md ("Quickstart") for the measured time
and the normalised error at k = d examples next to least squares.
"""

from configs import common


def get_config(arg=None):
  """The quickstart config; it takes no argument."""
  if arg:
    raise ValueError(f"configs/quickstart.py takes no argument (got {arg!r}).")
  config = common.task_config(
      "mamba,small", task="linear_regression", kwargs={"n_dims": 8},
      schedule=common.curriculum(dims=(8, 8, 0, 1), points=(9, 17, 4, 500)),
      lr=1e-3, steps=3000, reference_positions=None,
      tiny_kwargs={}, tiny_schedule={})
  config.model.d_model = 64
  config.model.n_layer = 4
  config.train.log_every = 100
  config.train.eval_every = 500
  config.train.eval_prompts = 256
  config.ckpt.every = 500
  return config
