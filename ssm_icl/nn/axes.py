"""Logical axis names for parameters and activations, and mesh rule sets.

Modules in `ssm_icl.nn` annotate every parameter with logical axis names
(`nn.with_logical_partitioning`) and constrain activations at block boundaries
(`nn.with_logical_constraint`). Which mesh axis a logical name maps to is
decided here, by a named rule set, and nowhere else in `nn`; the physical mesh
has the two axes ("data", "model").

Parameter names are kept apart from activation names (`act_*`) so that a rule
set can, e.g., shard the batch of activations without touching any parameter.
"""

from __future__ import annotations

from typing import Optional

# Mesh axes.
DATA = "data"
MODEL = "model"

# Parameter axes.
EMBED = "embed"      # d_model, the residual stream width
MLP = "mlp"          # hidden width of the MLP (and of S4D's output_linear)
HEADS = "heads"      # fused q/k/v or attention output features (n_head*hd)
INNER = "inner"      # Mamba d_inner = expand * d_model
STATE = "state"      # SSM state size N (or the number of S4D modes)
DT_RANK = "dt_rank"  # Mamba dt_rank
CONV = "conv"        # depthwise conv kernel width d_conv
IO = "io"            # read-in width d_in / read-out width d_out
POS = "pos"          # rows of the learned position table
XPROJ = "xproj"      # Mamba x_proj outputs: dt_rank + 2 * d_state
LAYERS = "layers"    # leading axis of params stacked by `nn.scan`

# Activation axes.
ACT_BATCH = "act_batch"
ACT_LEN = "act_len"
ACT_EMBED = "act_embed"
ACT_INNER = "act_inner"
ACT_HEADS = "act_heads"

PARAM_AXES = (EMBED, MLP, HEADS, INNER, STATE, DT_RANK, CONV, IO, POS, XPROJ,
              LAYERS)
ACTIVATION_AXES = (ACT_BATCH, ACT_LEN, ACT_EMBED, ACT_INNER, ACT_HEADS)

# The residual stream at every block boundary.
RESIDUAL = (ACT_BATCH, ACT_LEN, ACT_EMBED)

Rules = tuple[tuple[str, Optional[str]], ...]


def _rules(sharded: dict[str, str]) -> Rules:
  """Maps every logical axis to `sharded.get(axis)` (None = replicated)."""
  return tuple((axis, sharded.get(axis))
               for axis in ACTIVATION_AXES + PARAM_AXES)


# Pure data parallelism: only the activation batch is split; every parameter
# is replicated. The default, since the paper's models are tiny.
DP: Rules = _rules({ACT_BATCH: DATA})

# Data + tensor (channel) parallelism. The Mamba scan is independent per inner
# channel, so splitting d_inner over "model" keeps it local; XLA inserts the
# reductions after x_proj / out_proj. Attention splits its fused head features
# and the MLP its hidden width, as in Megatron.
DP_TP: Rules = _rules({
    ACT_BATCH: DATA,
    INNER: MODEL,
    ACT_INNER: MODEL,
    MLP: MODEL,
    HEADS: MODEL,
    ACT_HEADS: MODEL,
})

RULES: dict[str, Rules] = {"dp": DP, "dp_tp": DP_TP}


def get_rules(name: str) -> Rules:
  """Returns the logical-to-mesh rule set called `name`.

  Args:
    name: one of the keys of `RULES` ("dp", "dp_tp").

  Returns:
    A tuple of (logical axis, mesh axis or None) pairs, usable with
    `nn.logical_axis_rules` and `nn.logical_to_mesh_sharding`.

  Raises:
    ValueError: if `name` is not a known rule set.
  """
  try:
    return RULES[name]
  except (KeyError, TypeError):
    raise ValueError(
        f"Unknown logical axis rule set {name!r}; expected one of "
        f"{sorted(RULES)}.") from None
