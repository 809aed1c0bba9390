"""The Mamba v1 (selective SSM) mixer, as in official `mamba_simple.Mamba`.

For h: [b, l, D], with E = expand * D, N = d_state, R = dt_rank, K = d_conv
(docs/PAPER.md §4.3):

  x, z = split(in_proj(h))                    # [b, l, E] each
  u = silu(causal_depthwise_conv1d(x))        # [b, l, E]
  dt_low, B, C = split(x_proj(u))             # R, N, N
  delta = dt_low @ dt_proj.kernel             # bias added inside the scan
  y = selective_scan(u, delta, A_log, B, C, D, dt_bias=dt_proj.bias, z=z)
  out = out_proj(y)                           # [b, l, D]

Parameter names and shapes map one to one onto the PyTorch module
(`in_proj.weight` = `in_proj/kernel`.T, `conv1d.weight[:, 0, :]` =
`conv1d/kernel`.T, ...). `A_log`, `D` and the dt bias are stored in float32
and the scan runs in float32 whatever the compute dtype, as in the reference.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Union

from flax import linen as nn
from flax import struct
import jax
from jax import lax
import jax.numpy as jnp

from ssm_icl import errors
from ssm_icl.nn import axes
from ssm_icl.nn import initializers as inits
from ssm_icl.nn import layers
from ssm_icl.ops import scan as scan_lib
from ssm_icl.ops import selective_scan as selective_scan_lib

Dtype = Any


def resolve_dt_rank(dt_rank: Union[int, str], d_model: int) -> int:
  """dt_rank, with "auto" = ceil(d_model / 16) as in official Mamba."""
  if dt_rank == "auto":
    return math.ceil(d_model / 16)
  if isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank < 1:
    raise errors.UserError(f"dt_rank must be 'auto' or a positive int, got "
                           f"{dt_rank!r}.")
  return dt_rank


@dataclasses.dataclass(frozen=True)
class SSMConfig:
  """Hyperparameters of the SSM mixers, shared by Mamba, S4D and S4-Mamba.

  `MambaConfig` and `s4.S4Config` extend it; a field added here exists in
  both (and under the same flat key of `ModelConfig`).

  Attributes:
    d_state: SSM state size N (S4D and S4-Mamba use d_state // 2 complex
      modes).
    d_conv: causal depthwise conv width K of Mamba / S4-Mamba.
    expand: inner width E / D of Mamba / S4-Mamba.
    dt_min, dt_max: range of the initial step sizes.
  """
  d_state: int = 16
  d_conv: int = 4
  expand: int = 2
  dt_min: float = 1e-3
  dt_max: float = 0.1

  def __post_init__(self):
    for name in ("d_state", "d_conv", "expand"):
      errors.check_positive_int(name, getattr(self, name))
    for name in ("dt_min", "dt_max"):
      errors.check_positive_number(name, getattr(self, name))
    if self.dt_min > self.dt_max:
      raise errors.UserError(f"dt_min={self.dt_min} must not exceed "
                             f"dt_max={self.dt_max}.")

  def d_inner(self, d_model: int) -> int:
    """The inner width E = expand * d_model."""
    return self.expand * d_model


@dataclasses.dataclass(frozen=True)
class MambaConfig(SSMConfig):
  """Hyperparameters of a `MambaMixer` (`ModelConfig` holds one).

  To add a Mamba hyperparameter, add a field here (with its default and its
  check in `__post_init__`); `ModelConfig` then accepts it as a flat key.

  Attributes:
    d_state, d_conv, expand, dt_min, dt_max: see `SSMConfig`.
    dt_rank: rank R of the dt projection, or "auto" = ceil(D / 16).
    dt_init_floor: lower clamp of the initial step size.
    scan_impl: selective-scan schedule, an `ops.scan.ScanImpl` (or its
      string value, parsed here).
    chunk_size: chunk length of the chunked scan; None = the op's default.
  """
  dt_rank: Union[int, str] = "auto"
  dt_init_floor: float = 1e-4
  scan_impl: scan_lib.ScanImpl = scan_lib.ScanImpl.AUTO
  chunk_size: Optional[int] = None

  def __post_init__(self):
    super().__post_init__()
    if self.dt_rank != "auto":
      errors.check_positive_int("dt_rank", self.dt_rank)
    errors.check_positive_number("dt_init_floor", self.dt_init_floor)
    object.__setattr__(self, "scan_impl", errors.parse_enum(
        "scan_impl", self.scan_impl, scan_lib.ScanImpl))
    if self.chunk_size is not None:
      errors.check_positive_int("chunk_size", self.chunk_size)

  def resolved_dt_rank(self, d_model: int) -> int:
    """dt_rank with "auto" resolved to ceil(d_model / 16)."""
    return resolve_dt_rank(self.dt_rank, d_model)


class DtProj(nn.Module):
  """Mamba's dt_proj: a [R, E] kernel and an [E] bias kept apart.

  The bias is returned rather than added so the scan can add it in float32
  before the softplus (`delta_bias` in the reference).

  Attributes:
    d_inner: output width E.
    dt_min, dt_max, dt_init_floor: range of the initial step sizes.
    dtype: compute dtype of the projection.
    param_dtype: storage dtype of the kernel (the bias is always float32).
  """
  d_inner: int
  dt_min: float = 1e-3
  dt_max: float = 0.1
  dt_init_floor: float = 1e-4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, dt_low: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Projects dt_low: [b, l, R] to ([b, l, E] without bias, bias [E])."""
    dt_rank = dt_low.shape[-1]
    kernel = self.param(
        "kernel",
        nn.with_logical_partitioning(inits.dt_proj_kernel(dt_rank),
                                     (axes.DT_RANK, axes.INNER)),
        (dt_rank, self.d_inner), self.param_dtype)
    bias = self.param(
        "bias",
        nn.with_logical_partitioning(
            inits.dt_bias(self.dt_min, self.dt_max, self.dt_init_floor),
            (axes.INNER,)),
        (self.d_inner,), jnp.float32)
    dt_low, kernel = nn.dtypes.promote_dtype(dt_low, kernel, dtype=self.dtype)
    delta = lax.dot_general(dt_low, kernel,
                            (((dt_low.ndim - 1,), (0,)), ((), ())))
    return delta, bias


@struct.dataclass
class MambaCache:
  """The decoding state of a `MambaMixer` (a pytree).

  Attributes:
    conv: [b, d_conv - 1, E] the last conv inputs (x before the conv), in
      the compute dtype.
    ssm: [b, E, N] float32 SSM state.
  """
  conv: jax.Array
  ssm: jax.Array


class MambaMixer(nn.Module):
  """Official Mamba v1 mixer (selective SSM with gating).

  Example: `MambaMixer(d_model=64, config=MambaConfig(d_state=8))`.

  Attributes:
    d_model: residual width D.
    config: the Mamba hyperparameters (state size, conv width, expansion,
      dt range and rank, scan schedule).
    conv_bias: whether conv1d has a bias (always in the paper's models).
    bias: whether in_proj / out_proj have biases (initialised to zero, as the
      reference's `_init_weights` does; never in the paper's models).
    n_layer: the config's n_layer; out_proj is scaled by 1/sqrt(n_layer).
    dtype: compute dtype of projections and conv.
    param_dtype: storage dtype of the projection and conv parameters.
  """
  d_model: int
  config: MambaConfig = MambaConfig()
  conv_bias: bool = True
  bias: bool = False
  n_layer: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @property
  def d_inner(self) -> int:
    """E = expand * d_model."""
    return self.config.d_inner(self.d_model)

  @property
  def resolved_dt_rank(self) -> int:
    """R, with "auto" resolved."""
    return self.config.resolved_dt_rank(self.d_model)

  @nn.nowrap
  def init_cache(self, batch: int, max_len: int) -> MambaCache:
    """The state at the sequence start (zeros); max_len is not needed.

    Returns:
      A `MambaCache` with conv [batch, d_conv - 1, E] and ssm
      [batch, E, d_state] zeros.
    """
    del max_len
    e = self.d_inner
    return MambaCache(
        conv=jnp.zeros((batch, self.config.d_conv - 1, e), self.dtype),
        ssm=jnp.zeros((batch, e, self.config.d_state), jnp.float32))

  @nn.compact
  def __call__(self, h: jax.Array, deterministic: bool = True,
               cache: Optional[MambaCache] = None
               ) -> Union[jax.Array, tuple[jax.Array, MambaCache]]:
    """Applies the mixer, from the sequence start or from a cache.

    Args:
      h: [b, l, d_model] (already normalised) input.
      deterministic: unused (no dropout); kept for the common mixer API.
      cache: optional state before h (decoding: l = 1 per step, or a prompt
        to prefill); the mixer then continues from it.

    Returns:
      [b, l, d_model] in `dtype`; with a cache, (output, cache after h).
    """
    del deterministic
    c = self.config
    e, n, r = self.d_inner, c.d_state, self.resolved_dt_rank
    dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    xz = layers.dense(2 * e, (axes.EMBED, axes.INNER), use_bias=self.bias,
                      bias_init=inits.zeros, name="in_proj", **dense)(h)
    x, z = jnp.split(xz, 2, axis=-1)  # [b, l, e] each
    conv = layers.CausalDepthwiseConv1d(
        width=c.d_conv, use_bias=self.conv_bias, name="conv1d", **dense)
    if cache is None:
      u = conv(x)
    else:
      u, conv_state = conv(x, cache.conv)
    u = jax.nn.silu(u)  # [b, l, e]

    x_dbl = layers.dense(r + 2 * n, (axes.INNER, axes.XPROJ), use_bias=False,
                         name="x_proj", **dense)(u)
    dt_low, B, C = jnp.split(x_dbl, [r, r + n], axis=-1)
    delta, dt_bias = DtProj(e, c.dt_min, c.dt_max, c.dt_init_floor,
                            name="dt_proj", **dense)(dt_low)  # [b, l, e]

    A_log = self.param(
        "A_log",
        nn.with_logical_partitioning(inits.s4d_real_a_log,
                                     (axes.INNER, axes.STATE)),
        (e, n), jnp.float32)
    D = self.param("D", nn.with_logical_partitioning(inits.ones,
                                                     (axes.INNER,)),
                   (e,), jnp.float32)
    y = selective_scan_lib.selective_scan(
        u, delta, A_log, B, C, D, dt_bias=dt_bias, z=z, impl=c.scan_impl,
        chunk_size=c.chunk_size, h0=None if cache is None else cache.ssm,
        return_last_state=cache is not None)  # [b, l, e]
    if cache is not None:
      y, ssm_state = y
      cache = MambaCache(conv=conv_state, ssm=ssm_state)

    out = layers.dense(
        self.d_model, (axes.INNER, axes.EMBED), use_bias=self.bias,
        kernel_init=inits.mamba_out_proj(e, self.n_layer),
        bias_init=inits.zeros, name="out_proj", **dense)(y)
    return out if cache is None else (out, cache)
