"""The base config: every key of a training run, with its default.

The task files (`configs/linear_regression.py`, ...) start from this and set
the task, the model family and size, and the paper's schedule. Run one with

  python -m ssm_icl.main --config=configs/linear_regression.py:mamba \
      --workdir=workdirs/lr_mamba --config.train.steps=1000

This file itself trains the Mamba of the paper on linear regression:

  python -m ssm_icl.main --config=configs/base.py --workdir=workdirs/base

Every key can be overridden on the command line (`--config.train.lr=3e-4`);
the config is locked, so a misspelt key fails at once. docs/TRAINING.md is
the reference of every key.
"""

import ml_collections
from ml_collections import config_dict

from ssm_icl import errors
from ssm_icl.nn import blocks


def get_config(arg=None):
  """Returns the base config; it takes no argument."""
  if arg:
    raise errors.UserError(
        f"configs/base.py takes no argument (got {arg!r}); use a task config "
        "such as configs/linear_regression.py:mamba,tiny.")
  c = ml_collections.ConfigDict()

  # ------------------------------------------------------------------ model
  # Fields of ssm_icl.models.ModelConfig (docs/PAPER.md §4); the block
  # hyperparameters (n_head, d_state, ..., mlp_ratio) are the flat keys of
  # its mixer sub-configs (ssm_icl.nn.MambaConfig, AttentionConfig, ...).
  c.model = ml_collections.ConfigDict()
  # transformer | mamba | s4 | s4_mamba | hybrid | mambaformer | custom.
  c.model.family = "mamba"
  # Comma-separated block kinds of a "custom" family, e.g. "mamba,attn,mlp".
  c.model.pattern = config_dict.placeholder(str)
  # Depth as the paper's code counts it (a GPT-2 layer = attention + MLP).
  c.model.n_layer = 4
  # Residual width D.
  c.model.d_model = 128
  # Attention heads (the reference hybrids always use 8).
  c.model.n_head = 8
  # Token width; None takes the task's d_in.
  c.model.d_in = config_dict.placeholder(int)
  # Prediction width; None takes the task's d_out.
  c.model.d_out = config_dict.placeholder(int)
  # Rows of the learned position table = longest prompt in tokens (families
  # without positions only use it to check prompt lengths).
  c.model.n_positions = 256
  # "learned" | "none"; None takes the family's default.
  c.model.pos_emb = config_dict.placeholder(str)
  # SSM state size N (S4D uses d_state // 2 complex modes).
  c.model.d_state = 16
  # Causal depthwise conv width of Mamba / S4-Mamba.
  c.model.d_conv = 4
  # Mamba inner width E = expand * D.
  c.model.expand = 2
  # Mamba dt_rank: "auto" (= ceil(D / 16)) or an int.
  c.model.dt_rank = "auto"
  # Range of the initial Mamba step sizes, and their floor.
  c.model.dt_min = 1e-3
  c.model.dt_max = 0.1
  c.model.dt_init_floor = 1e-4
  # MLP hidden width / D (Transformer).
  c.model.mlp_ratio = 4
  # Selective-scan schedule: auto | sequential | associative | chunked.
  c.model.scan_impl = "auto"
  # Chunk length of the chunked scan; None takes the op's default.
  c.model.chunk_size = config_dict.placeholder(int)
  # Attention core: auto | dense | blocked (online softmax, long prompts).
  c.model.attn_impl = "auto"
  # Query/key block length of the blocked attention.
  c.model.attn_block_size = 128
  # Dropout on each block's output (0 in the paper).
  c.model.dropout = 0.0
  # Dropout inside S4-Mamba mixers (0.1 in the reference; training only).
  c.model.s4_mamba_dropout = 0.1
  # Rematerialise blocks in the backward pass (less memory, more compute).
  c.model.remat = False
  # Run repeated blocks with nn.scan (fast compiles of deep models).
  c.model.scan_layers = False
  # Compute dtype (float32 | bfloat16 | float16); scans stay in float32.
  c.model.dtype = "float32"
  # Parameter storage dtype.
  c.model.param_dtype = "float32"
  # "reference" (each family's reference init) | "gpt2" | "mamba".
  c.model.init = "reference"
  # Block hyperparameters not listed above (a field just added to a mixer
  # sub-config such as ssm_icl.nn.MambaConfig) enter with their dataclass
  # default, so --config.model.<field>=... overrides them too.
  for key, value in blocks.MixerConfigs().to_dict().items():
    if key not in c.model:
      c.model[key] = value

  # ------------------------------------------------------------------- task
  c.task = ml_collections.ConfigDict()
  # A name of ssm_icl.tasks.TASKS.
  c.task.name = "linear_regression"
  # Fields of that task (e.g. n_dims, k, prob); absent ones take the paper's
  # defaults.
  c.task.kwargs = ml_collections.ConfigDict({"n_dims": 20})
  # Curriculum (docs/PAPER.md §2.3): n_dims_truncated and n_points grow by `inc`
  # every `interval` steps from `start` to `end`.
  c.task.curriculum = ml_collections.ConfigDict({
      "dims": {"start": 5, "end": 20, "inc": 1, "interval": 2000},
      "points": {"start": 11, "end": 41, "inc": 2, "interval": 2000},
  })

  # ------------------------------------------------------------------ train
  c.train = ml_collections.ConfigDict()
  # Optimiser steps (the reference runs 500,001).
  c.train.steps = 500_000
  # Global batch of prompts per step, split over the mesh's data axis.
  c.train.batch_size = 64
  # Peak learning rate (Adam; constant in the paper).
  c.train.lr = 1e-4
  # constant | cosine (decays to 0 at `steps`).
  c.train.lr_schedule = "constant"
  # Linear warm-up steps from 0 (0 in the paper).
  c.train.warmup_steps = 0
  # Adam moments and epsilon (torch defaults).
  c.train.b1 = 0.9
  c.train.b2 = 0.999
  c.train.eps = 1e-8
  # Decoupled weight decay (0 in the paper); never applied to A_log, D,
  # biases, norms and S4's log_dt / log_A_real / A_imag.
  c.train.weight_decay = 0.0
  # Global-norm gradient clipping threshold (<= 0 disables it).
  c.train.grad_clip = 10.0
  # Seed of the init and of every batch: step s uses fold_in(seed, s).
  c.train.seed = 0
  # Steps between metric records and progress lines.
  c.train.log_every = 100
  # Steps between evaluations (full dims, current n_points); 0 disables.
  c.train.eval_every = 5000
  # Prompts per evaluation (the reference uses 20 batches x 64).
  c.train.eval_prompts = 1280
  # Matmul precision: default | high | highest. "highest" = full fp32 as in
  # the reference (PyTorch fp32); "default" lets GPU/TPU matmuls use TF32 /
  # bf16 passes (faster, ~3 significant digits). The paper sizes keep
  # "highest"; the small and tiny sizes (configs/common.py) and the
  # quickstart use "default". On a CPU both are full fp32.
  c.train.matmul_precision = "highest"
  # Most train programs a curriculum compiles: prompts are zero-padded to
  # this many length buckets (ssm_icl/train/buckets.py); 0 compiles one
  # program per prompt length (no padding).
  c.train.length_buckets = 8
  # Testing only: replace the loss of this step by NaN (-1: never).
  c.train.inject_nan_at_step = -1

  # ------------------------------------------------------------------- mesh
  c.mesh = ml_collections.ConfigDict()
  # Mesh shape over `axes`; one -1 is filled from the device count.
  c.mesh.shape = (-1, 1)
  # Mesh axis names: the batch splits over "data", tensor-parallel
  # dimensions over "model".
  c.mesh.axes = ("data", "model")
  # Logical-axis rule set: "dp" (data parallel) or "dp_tp" (+ Mamba inner
  # channels, attention heads and the MLP split over "model").
  c.mesh.rules = "dp"

  # ------------------------------------------------------------------- ckpt
  c.ckpt = ml_collections.ConfigDict()
  # Save a checkpoint every this many steps (and at the end, on SIGTERM and
  # at a preemption sync point).
  c.ckpt.every = 5000
  # Checkpoints kept on disk (oldest removed first); None keeps all.
  c.ckpt.max_to_keep = 3
  # Write checkpoints in a background thread.
  c.ckpt.async_save = True
  return c
