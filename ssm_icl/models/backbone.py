"""`ICLModel`: read-in, optional positions, a block pattern, LN, read-out.

  tokens [b, l, d_in] -> read_in -> (+ wpe[:l]) -> blocks_0 .. blocks_{n-1}
                      -> ln_f -> read_out -> [b, l, d_out]

The blocks come from `config.block_pattern` (see `families`). By default they
run as a Python loop (params `blocks_{i}`). With `scan_layers=True` the
longest repeated group of the pattern (("attn", "mlp") for a Transformer,
("mamba",) for Mamba, ("mamba", "attn") for MambaFormer) runs under `nn.scan`
with its params stacked on a leading "layers" axis (param
`scanned_blocks/block_{j}`), so a 24-block model compiles one group instead of
24 blocks; blocks before and after the group keep their loop names.
`stack_layers` / `unstack_layers` convert params between the two layouts.
"""

from __future__ import annotations

from typing import Any, Mapping

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.models import config as config_lib
from ssm_icl.models import families
from ssm_icl.nn import axes
from ssm_icl.nn import blocks
from ssm_icl.nn import initializers as inits
from ssm_icl.nn import layers

ModelConfig = config_lib.ModelConfig
SCANNED = "scanned_blocks"


def scan_layout(pattern: tuple[str, ...]) -> tuple[int, int, int]:
  """Where the repeated group of a block pattern is.

  Picks the (start, period, repeats) that covers the most blocks with
  `repeats >= 2` copies of `pattern[start:start + period]`; among equal
  covers, the one ending last (so MambaFormer's leading Mamba block is the
  unscanned prefix), then the shortest period.

  Args:
    pattern: tuple of block kinds.

  Returns:
    (start, period, repeats); repeats == 0 when nothing repeats.
  """
  n = len(pattern)
  best, best_key = (0, 0, 0), (0, 0, 0)
  for start in range(n):
    for period in range(1, (n - start) // 2 + 1):
      group = pattern[start:start + period]
      repeats = 1
      while pattern[start + repeats * period:
                    start + (repeats + 1) * period] == group:
        repeats += 1
      if repeats < 2:
        continue
      end = start + period * repeats
      key = (period * repeats, end, -period)
      if key > best_key:
        best, best_key = (start, period, repeats), key
  return best


def _scanned_indices(config: ModelConfig) -> tuple[int, int, int]:
  layout = scan_layout(config.block_pattern)
  if not config.scan_layers or layout[2] < 2:
    return 0, 0, 0
  return layout


class _BlockGroup(nn.Module):
  """One copy of the repeated group, as an `nn.scan` body."""
  kinds: tuple[str, ...]
  settings: blocks.BlockSettings
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, _: Any) -> tuple[jax.Array, None]:
    for j, kind in enumerate(self.kinds):
      x = blocks.Block(kind, self.settings, name=f"block_{j}")(
          x, self.deterministic)
    return x, None


class ICLModel(nn.Module):
  """The in-context-learning model of the paper, for any block pattern.

  Attributes:
    config: a validated `ModelConfig`.
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, *,
               deterministic: bool = True) -> jax.Array:
    """Runs the model.

    Args:
      tokens: [b, l, d_in] float inputs.
      deterministic: disables dropout when True; otherwise `apply` needs a
        "dropout" rng.

    Returns:
      [b, l, d_out] float32 outputs; output t depends on tokens <= t only.

    Raises:
      ValueError: wrong token shape, or l > n_positions for a model with a
        learned position table.
    """
    cfg = self.config
    if tokens.ndim != 3 or tokens.shape[-1] != cfg.d_in:
      raise ValueError(f"tokens must be [batch, length, d_in={cfg.d_in}], "
                       f"got shape {tokens.shape}.")
    length = tokens.shape[1]
    if cfg.uses_positions and length > cfg.n_positions:
      raise ValueError(
          f"Sequence of {length} tokens is longer than n_positions="
          f"{cfg.n_positions} (rows of the learned position table); raise "
          f"n_positions or use pos_emb='none'.")
    settings = cfg.block_settings()
    dtypes = dict(dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype)

    x = layers.dense(cfg.d_model, (axes.IO, axes.EMBED), fan_in=cfg.d_in,
                     name="read_in", **dtypes)(tokens)
    # The residual stream is float32 whatever the compute dtype.
    x = x.astype(jnp.float32)
    if cfg.uses_positions:
      std = families.position_std(cfg.init_style)
      wpe = self.param(
          "wpe",
          nn.with_logical_partitioning(inits.normal(std),
                                       (axes.POS, axes.EMBED)),
          (cfg.n_positions, cfg.d_model), cfg.storage_dtype)
      x = x + wpe[:length].astype(jnp.float32)
    x = nn.with_logical_constraint(x, axes.RESIDUAL)

    pattern = cfg.block_pattern
    start, period, repeats = _scanned_indices(cfg)
    block_cls = blocks.Block
    if cfg.remat:
      # `self` is argument 0, so `deterministic` is argument 2.
      block_cls = nn.remat(blocks.Block, static_argnums=(2,))
    i = 0
    while i < len(pattern):
      if repeats and i == start:
        group_cls = _BlockGroup
        if cfg.remat:
          group_cls = nn.remat(_BlockGroup, prevent_cse=False)
        scanned = nn.scan(
            group_cls, variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True}, length=repeats,
            metadata_params={nn.PARTITION_NAME: axes.LAYERS})
        x, _ = scanned(pattern[start:start + period], settings,
                       deterministic, name=SCANNED)(x, None)
        i += period * repeats
        continue
      x = block_cls(pattern[i], settings, name=f"blocks_{i}")(
          x, deterministic)
      i += 1

    x = layers.layer_norm(name="ln_f", **dtypes)(x)
    y = layers.dense(cfg.d_out, (axes.EMBED, axes.IO), fan_in=cfg.d_model,
                     name="read_out", **dtypes)(x)
    return y.astype(jnp.float32)


def build_model(config: Any) -> ICLModel:
  """An `ICLModel` from a ModelConfig, a dict or an ml_collections ConfigDict.

  Raises:
    ValueError: on unknown keys or invalid values (before any tracing).
  """
  return ICLModel(ModelConfig.from_config_dict(config))


def count_params(params: Any) -> int:
  """Number of scalars in a (possibly boxed or abstract) params pytree."""
  leaves = jax.tree.leaves(nn.meta.unbox(params))
  return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in leaves))


def stack_layers(params: Mapping[str, Any], config: ModelConfig) -> dict:
  """Loop-layout params (`blocks_{i}`) -> the `scan_layers=True` layout.

  Args:
    params: unboxed params of `ICLModel(config.replace(scan_layers=False))`
      (the "params" collection, without the {"params": ...} wrapper).
    config: the config (its scan_layers value is ignored).

  Returns:
    Params for `ICLModel(config.replace(scan_layers=True))`; unchanged if the
    pattern has no repeated group.
  """
  start, period, repeats = scan_layout(config.block_pattern)
  out = dict(params)
  if repeats < 2:
    return out
  group = {}
  for j in range(period):
    names = [f"blocks_{start + k * period + j}" for k in range(repeats)]
    group[f"block_{j}"] = jax.tree.map(lambda *a: jnp.stack(a),
                                       *[out.pop(n) for n in names])
  out[SCANNED] = group
  return out


def unstack_layers(params: Mapping[str, Any], config: ModelConfig) -> dict:
  """The inverse of `stack_layers`: scan layout -> loop layout."""
  start, period, repeats = scan_layout(config.block_pattern)
  out = dict(params)
  if repeats < 2:
    return out
  group = out.pop(SCANNED)
  for j in range(period):
    for k in range(repeats):
      out[f"blocks_{start + k * period + j}"] = jax.tree.map(
          lambda a, k=k: a[k], group[f"block_{j}"])
  return out
