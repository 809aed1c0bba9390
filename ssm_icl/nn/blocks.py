"""Pre-norm residual blocks and the registry of mixer kinds.

A block is `x + Mixer(LayerNorm(x))`. The Mamba reference writes its blocks
in "Add -> LN -> Mixer" form: block i receives (h_{i-1}, r_{i-1}), computes
r_i = h_{i-1} + r_{i-1} and h_i = Mixer(LN(r_i)), and the model ends with
LN_f(h_last + r_last). Unrolling it, r_i is exactly the residual stream of a
pre-norm network, and the final add + LN is the pre-norm network's final LN,
so both forms compute the same function; this module uses the pre-norm form
for every family. GPT-2 blocks (LN -> attention -> add, LN -> MLP -> add)
are two blocks here: "attn" then "mlp".

`BLOCKS` maps a block kind to a factory `(settings, name) -> mixer module`;
`get_block(kind)` looks it up with an error listing the valid kinds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Union

from flax import linen as nn
import jax
import jax.numpy as jnp

from ssm_icl.nn import attention
from ssm_icl.nn import axes
from ssm_icl.nn import initializers as inits
from ssm_icl.nn import layers
from ssm_icl.nn import mamba
from ssm_icl.nn import s4

Dtype = Any


@dataclasses.dataclass(frozen=True)
class BlockSettings:
  """Hyperparameters shared by every block of a model (hashable, static).

  Attributes:
    d_model: residual width D.
    n_layer: the config's n_layer (used by the residual init scalings).
    n_head: attention heads.
    mlp_ratio: MLP hidden width / D.
    d_state: SSM state size (Mamba N; S4D uses d_state // 2 complex modes).
    d_conv: Mamba / S4-Mamba causal conv width.
    expand: Mamba / S4-Mamba inner width / D.
    dt_rank: Mamba dt_rank, or "auto".
    dt_min, dt_max, dt_init_floor: initial step size range.
    scan_impl: selective-scan schedule (`ops.scan.ScanImpl` value).
    chunk_size: selective-scan chunk length; None = the op's default.
    attn_impl: attention core implementation (`ops.attention`).
    attn_block_size: block length of the blocked attention path.
    s4_mamba_dropout: dropout inside S4-Mamba mixers.
    dropout: dropout on every block's output before the residual add.
    init_style: `inits.STYLE_GPT2` or `inits.STYLE_MAMBA`.
    norm: the block norm, a `layers.NormKind` value ("layer" or "rms").
    dtype: compute dtype.
    param_dtype: parameter storage dtype.
  """
  d_model: int
  n_layer: int = 1
  n_head: int = 8
  mlp_ratio: int = 4
  d_state: int = 16
  d_conv: int = 4
  expand: int = 2
  dt_rank: Union[int, str] = "auto"
  dt_min: float = 1e-3
  dt_max: float = 0.1
  dt_init_floor: float = 1e-4
  scan_impl: str = "auto"
  chunk_size: Optional[int] = None
  attn_impl: str = "auto"
  attn_block_size: int = 128
  s4_mamba_dropout: float = 0.1
  dropout: float = 0.0
  init_style: str = inits.STYLE_MAMBA
  norm: str = layers.NormKind.LAYER.value
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32


MixerFactory = Callable[[BlockSettings, str], nn.Module]


def _mamba(s: BlockSettings, name: str) -> nn.Module:
  return mamba.MambaMixer(
      d_model=s.d_model, d_state=s.d_state, d_conv=s.d_conv, expand=s.expand,
      dt_rank=s.dt_rank, dt_min=s.dt_min, dt_max=s.dt_max,
      dt_init_floor=s.dt_init_floor, scan_impl=s.scan_impl,
      chunk_size=s.chunk_size, n_layer=s.n_layer, dtype=s.dtype,
      param_dtype=s.param_dtype, name=name)


def _attn(s: BlockSettings, name: str) -> nn.Module:
  return attention.CausalSelfAttention(
      d_model=s.d_model, n_head=s.n_head, n_layer=s.n_layer,
      init_style=s.init_style, attn_impl=s.attn_impl,
      block_size=s.attn_block_size, dtype=s.dtype, param_dtype=s.param_dtype,
      name=name)


def _mlp(s: BlockSettings, name: str) -> nn.Module:
  return layers.MLP(
      d_model=s.d_model, mlp_ratio=s.mlp_ratio, n_layer=s.n_layer,
      init_style=s.init_style, dtype=s.dtype, param_dtype=s.param_dtype,
      name=name)


def _s4d(s: BlockSettings, name: str) -> nn.Module:
  return s4.S4DMixer(
      d_model=s.d_model, d_state=s.d_state, dt_min=s.dt_min, dt_max=s.dt_max,
      dtype=s.dtype, param_dtype=s.param_dtype, name=name)


def _s4_mamba(s: BlockSettings, name: str) -> nn.Module:
  return s4.S4MambaMixer(
      d_model=s.d_model, d_state=s.d_state, d_conv=s.d_conv, expand=s.expand,
      dt_min=s.dt_min, dt_max=s.dt_max, dropout=s.s4_mamba_dropout,
      n_layer=s.n_layer, dtype=s.dtype, param_dtype=s.param_dtype, name=name)


BLOCKS: dict[str, MixerFactory] = {
    "mamba": _mamba,
    "attn": _attn,
    "mlp": _mlp,
    "s4d": _s4d,
    "s4_mamba": _s4_mamba,
}


def get_block(kind: str) -> MixerFactory:
  """Returns the mixer factory of block kind `kind`.

  Raises:
    ValueError: if `kind` is not a key of `BLOCKS`.
  """
  try:
    return BLOCKS[kind]
  except (KeyError, TypeError):
    raise ValueError(f"Unknown block kind {kind!r}; expected one of "
                     f"{sorted(BLOCKS)}.") from None


class Block(nn.Module):
  """Pre-norm residual block: x + Dropout(Mixer(Norm(x))).

  The residual stream keeps the dtype it arrives in: the model makes it
  float32 whatever the compute dtype (the reference's `residual_in_fp32`,
  on by default), since adding many small bfloat16 updates to a bfloat16
  stream would lose them.

  Attributes:
    kind: a key of `BLOCKS`.
    settings: the model's `BlockSettings`.
  """
  kind: str
  settings: BlockSettings

  @nn.nowrap
  def init_cache(self, batch: int, max_len: int) -> Any:
    """The mixer's decoding cache at the sequence start (a pytree).

    Args:
      batch: prompts decoded together.
      max_len: the longest sequence (prompt and generated tokens) the cache
        must hold; only attention's key/value cache depends on it.
    """
    return get_block(self.kind)(self.settings, None).init_cache(batch,
                                                                max_len)

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True,
               cache: Any = None) -> Any:
    """Maps the residual stream x: [b, l, d_model] to the same shape.

    Args:
      x: [b, l, d_model] residual stream (float32 unless the model turns
        `residual_in_fp32` off).
      deterministic: disables dropout when True.
      cache: optional decoding cache of the mixer (`init_cache`); the block
        then continues from it.

    Returns:
      [b, l, d_model] in x's dtype; with a cache, (output, updated cache).
    """
    s = self.settings
    factory = get_block(self.kind)
    x = nn.with_logical_constraint(x, axes.RESIDUAL)
    h = layers.norm(s.norm, dtype=s.dtype, param_dtype=s.param_dtype,
                    name="norm")(x)
    if cache is None:
      h = factory(s, "mixer")(h, deterministic)
    else:
      h, cache = factory(s, "mixer")(h, deterministic, cache)
    if s.dropout > 0:
      h = nn.Dropout(s.dropout)(h, deterministic=deterministic)
    x = x + h.astype(x.dtype)
    x = nn.with_logical_constraint(x, axes.RESIDUAL)
    return x if cache is None else (x, cache)
