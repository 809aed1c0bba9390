"""ssm_icl: in-context learning with Mamba, attention and hybrids in JAX/Flax.

A reimplementation of Park et al., "Can Mamba Learn How to Learn? A Comparative
Study on In-Context Learning Tasks" (ICML 2024, arXiv 2402.04248).

Subpackages (dependency direction ops <- nn <- models <- train <- main; tasks,
baselines and parallel are leaves):
  ops:       pure-JAX scans, selective scan, S4D kernel, attention core, FLOPs.
  nn:        Flax linen modules (Mamba mixer, attention, S4D, blocks).
  models:    ModelConfig, ICLModel and the paper's six architectures.
  tasks:     on-device samplers for the nine ICL task families + curriculum.
  baselines: least squares, k-NN, Lasso, trees, boosting, ... on the same prompts.
  eval:      error-vs-#examples curves, plots, the paper's Table 1.
  parallel:  device meshes, logical-axis rules, multi-host initialisation.
  train:     train state, optimiser, jitted step, Orbax checkpoints, the loop.
"""

__version__ = "0.1.0"
