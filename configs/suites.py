r"""Reproduction suites: which (task, model) runs reproduce the paper, and how.

`python -m ssm_icl.reproduce --suite=SUITE --workdir=DIR` trains and
evaluates every run of a suite; this file defines the suites:

  paper  the paper's settings (configs/<task>.py at size "paper"): all six
         families on the six regression tasks, Transformer / Mamba /
         MambaFormer on sparse parity, CoT-I/O and vector MQAR. Meant for a
         GPU or TPU (docs/RESULTS.md gives the expected wall time per run).
  mini   the same nine tasks scaled down (d 4-8, 11-64 examples, D = 32,
         2000 steps at lr 1e-3 (6000 for the Transformer, see _mini),
         batch 64) so that the whole suite runs in under 2 hours on a
         2-core CPU (1 h 45 min projected on an idle machine); the six
         families on linear regression, the paper's three Table 1 models
         elsewhere.
  smoke  every task once with a tiny model (the configs' "tiny" size, 20
         steps), every family at least once, tiny evaluations: a few minutes
         on a CPU, for CI.

A suite is a ConfigDict:
  size:     the size argument given to every task config ("family,size").
  runs:     task -> comma-separated families to train on it.
  common:   overrides applied to every run's config (nested like the config,
            e.g. {"train": {"lr": 1e-3}}).
  tasks:    task -> overrides for that task's runs (task.kwargs may add task
            fields; the curriculum is replaced as a whole).
  families: family -> overrides for that family's runs (applied last).
  eval:     settings of the final ICL-curve evaluation (n_prompts,
            batch_size, n_bootstrap, seed; baselines: also evaluate the
            task's baselines).
"""

import ml_collections

from ssm_icl import errors

FAMILIES = ("transformer", "mamba", "s4", "s4_mamba", "hybrid", "mambaformer")
TABLE1 = "transformer,mamba,mambaformer"
ALL = ",".join(FAMILIES)
REGRESSION = ("linear_regression", "sparse_linear_regression",
              "relu_2nn_regression", "decision_tree",
              "ortho_outlier_regression", "many_outlier_regression")
OTHERS = ("sparse_parity", "cot_io", "vector_mqar")
SUITES = ("paper", "mini", "smoke")


def _curriculum(n_dims, n_points):
  """A constant curriculum (full dims, fixed number of examples)."""
  return {"dims": {"start": n_dims, "end": n_dims, "inc": 0, "interval": 1},
          "points": {"start": n_points, "end": n_points, "inc": 0,
                     "interval": 1}}


def _paper():
  suite = ml_collections.ConfigDict()
  suite.size = "paper"
  suite.runs = {**{t: ALL for t in REGRESSION}, **{t: TABLE1 for t in OTHERS}}
  suite.common = {}
  suite.tasks = {}
  suite.families = {}
  suite.eval = {"n_prompts": 1280, "batch_size": 64, "n_bootstrap": 1000,
                "seed": 0, "baselines": True}
  return suite


def _mini():
  """The scaled-down suite; every choice is explained in docs/RESULTS.md."""
  suite = ml_collections.ConfigDict()
  # "small" keeps the paper's schedule shape; everything that matters for
  # speed is overridden below.
  suite.size = "small"
  suite.runs = {t: TABLE1 for t in REGRESSION + OTHERS}
  suite.runs["linear_regression"] = ALL
  steps = 2000
  suite.common = {
      "train": {"steps": steps, "batch_size": 64, "lr": 1e-3,
                "log_every": 100, "eval_every": steps, "eval_prompts": 128},
      # Two checkpoints per run, so a killed suite loses < steps / 2.
      "ckpt": {"every": steps // 2, "max_to_keep": 1},
      "model": {"d_model": 32, "n_head": 4},
  }
  # Fixed d and number of examples: a 2000-step run has no room for the
  # paper's curriculum (whose first stage is d = 5, 11 points anyway).
  suite.tasks = {
      "linear_regression": {
          "task": {"kwargs": {"n_dims": 5},
                   "curriculum": _curriculum(5, 11)}},
      "sparse_linear_regression": {
          "task": {"kwargs": {"n_dims": 8, "k": 2},
                   "curriculum": _curriculum(8, 11)}},
      "relu_2nn_regression": {
          "task": {"kwargs": {"n_dims": 4, "hidden": 8},
                   "curriculum": _curriculum(4, 21)}},
      "decision_tree": {
          "task": {"kwargs": {"n_dims": 4, "depth": 2},
                   "curriculum": _curriculum(4, 21)}},
      "ortho_outlier_regression": {
          "task": {"kwargs": {"n_dims": 4, "prob": 0.5},
                   "curriculum": _curriculum(4, 21)}},
      # ~90% outliers in a long prompt: about 6 clean examples out of 64
      # (128 tokens), the regime where the paper's Transformer falls behind.
      "many_outlier_regression": {
          "task": {"kwargs": {"n_dims": 4, "prob": 0.9},
                   "curriculum": _curriculum(4, 64)},
          # Only 128 tokens: no need for the reference's 2048-row table.
          "model": {"n_positions": 128},
          # Half the batch keeps its tokens per step (and CPU time) near
          # the other tasks' despite the 3x longer prompts.
          "train": {"batch_size": 32}},
      "sparse_parity": {
          "task": {"kwargs": {"n_dims": 6, "k": 2},
                   "curriculum": _curriculum(6, 24)}},
      "cot_io": {
          "task": {"kwargs": {"n_dims": 4, "hidden": 4},
                   "curriculum": _curriculum(4, 11)}},
      "vector_mqar": {
          "task": {"kwargs": {"n_dims": 8, "n_pairs": 16},
                   "curriculum": _curriculum(8, 16)}},
  }
  # The paper's depth ratio: a GPT-2 layer (attention + MLP) is two blocks,
  # so 2 Transformer layers face 4 Mamba-family blocks.
  suite.families = {f: {"model": {"n_layer": 2 if f == "transformer" else 4}}
                    for f in FAMILIES}
  # The Transformer gets 3x the steps: at 2000 steps it was still on its way
  # out of the loss plateau that attention models show early in ICL training
  # (its loss fell fastest over the last 1000 steps), while the SSMs had
  # flattened out. Its step is the cheapest on a CPU (~5x faster than
  # Mamba's), so it still costs the least wall time; its training FLOPs are
  # ~1.8x Mamba's (flops.png shows every run at its FLOPs).
  t_steps = 3 * steps
  suite.families["transformer"].update(
      train={"steps": t_steps, "eval_every": t_steps},
      ckpt={"every": t_steps // 2})
  suite.eval = {"n_prompts": 256, "batch_size": 64, "n_bootstrap": 200,
                "seed": 0, "baselines": True}
  return suite


def _smoke():
  suite = ml_collections.ConfigDict()
  suite.size = "tiny"
  # Every task once and every family at least once.
  suite.runs = {
      "linear_regression": "mamba",
      "sparse_linear_regression": "mambaformer",
      "relu_2nn_regression": "s4",
      "decision_tree": "s4_mamba",
      "ortho_outlier_regression": "hybrid",
      "many_outlier_regression": "mamba",
      "sparse_parity": "transformer",
      "cot_io": "mambaformer",
      "vector_mqar": "mamba",
  }
  suite.common = {"train": {"steps": 10, "eval_every": 0, "log_every": 5},
                  "ckpt": {"every": 10}}
  suite.tasks = {}
  suite.families = {}
  suite.eval = {"n_prompts": 8, "batch_size": 8, "n_bootstrap": 20,
                "seed": 0, "baselines": True}
  return suite


def get_config(arg=None):
  """The suite named `arg` ("paper", "mini" or "smoke")."""
  builders = {"paper": _paper, "mini": _mini, "smoke": _smoke}
  if arg not in builders:
    raise errors.UserError(
        f"configs/suites.py: unknown suite {arg!r}; expected one "
        f"of {SUITES}.")
  suite = builders[arg]()
  suite.name = arg
  return suite
