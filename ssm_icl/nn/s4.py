"""S4D and S4-Mamba mixers (docs/PAPER.md §4.4, §4.5).

S4D (minimal S4D of the S4 repository, H = D channels, d_state/2 complex
modes per channel):

  K = s4d_kernel(log_dt, log_A_real, A_imag, C, l)     # [H, l]
  y = gelu(causal_conv(u, K) + D * u)
  out = glu(output_linear(y))       # pointwise Conv1d(H -> 2H), then GLU

S4-Mamba: the Mamba block with the selective scan replaced by the
time-invariant S4D convolution on the E = expand * D inner channels:

  x, z = split(in_proj(h))
  u = silu(conv1d(x))
  y = dropout(causal_conv(u, K) + D * u)    # dropout 0.1 in training
  out = out_proj(y * z)                     # linear gate: no silu on z

The S4-Mamba dropout mask is shared over time (the reference's `DropoutNd`
with tie=True), i.e. it drops whole channels of a prompt. All S4D kernel
parameters and D are stored in float32.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

from flax import linen as nn
from flax import struct
import jax
import jax.numpy as jnp

from ssm_icl import errors
from ssm_icl.nn import axes
from ssm_icl.nn import initializers as inits
from ssm_icl.nn import layers
from ssm_icl.nn import mamba
from ssm_icl.ops import s4d as s4d_ops

Dtype = Any


@dataclasses.dataclass(frozen=True)
class S4Config(mamba.SSMConfig):
  """Hyperparameters of `S4DMixer` and `S4MambaMixer` (`ModelConfig` holds one).

  S4D uses d_state, dt_min and dt_max; S4-Mamba all fields. To add an S4
  hyperparameter, add a field here (with its check in `__post_init__`).

  Attributes:
    d_state, d_conv, expand, dt_min, dt_max: see `mamba.SSMConfig`; the
      kernel has d_state // 2 complex modes, so d_state must be at least 2
      in a model with S4 blocks (checked by `ModelConfig`).
    s4_mamba_dropout: dropout on the S4D output inside S4-Mamba (0.1 in the
      reference), active only when `deterministic=False`; the mask is tied
      over time.
  """
  s4_mamba_dropout: float = 0.1

  def __post_init__(self):
    super().__post_init__()
    errors.check_fraction("s4_mamba_dropout", self.s4_mamba_dropout)

  @property
  def n_modes(self) -> int:
    """Complex modes per channel, d_state // 2."""
    return self.d_state // 2


@struct.dataclass
class S4DCache:
  """The decoding state of an `S4DMixer` (a pytree).

  Attributes:
    ssm: [b, D, d_state // 2, 2] float32 complex mode states as (real, imag)
      pairs.
  """
  ssm: jax.Array


@struct.dataclass
class S4MambaCache:
  """The decoding state of an `S4MambaMixer` (a pytree).

  Attributes:
    conv: [b, d_conv - 1, E] the last conv inputs, in the compute dtype.
    ssm: [b, E, d_state // 2, 2] float32 complex mode states.
  """
  conv: jax.Array
  ssm: jax.Array


def _s4d_conv(module: nn.Module, u: jax.Array, n_modes: int, channel_axis: str,
              dt_min: float, dt_max: float, state: Optional[jax.Array] = None
              ) -> Union[jax.Array, tuple[jax.Array, jax.Array]]:
  """Creates the S4D parameters in `module` and applies the convolution.

  Args:
    module: the (compact) module whose scope holds the parameters.
    u: [b, l, h] input.
    n_modes: complex modes per channel.
    channel_axis: logical name of the h axis.
    dt_min, dt_max: range of the initial step size.
    state: optional [b, h, n_modes, 2] state before u (decoding); the
      recurrent form `s4d_recurrence` then continues from it.

  Returns:
    [b, l, h] float32, and the state after u when `state` is given.
  """
  h, length = u.shape[-1], u.shape[1]
  ch, st = channel_axis, axes.STATE

  def param(name, init, shape, names):
    return module.param(name, nn.with_logical_partitioning(init, names), shape,
                        jnp.float32)

  log_dt = param("log_dt", inits.s4d_log_dt(dt_min, dt_max), (h,), (ch,))
  log_a_real = param("log_A_real", inits.s4d_log_a_real, (h, n_modes),
                     (ch, st))
  a_imag = param("A_imag", inits.s4d_a_imag, (h, n_modes), (ch, st))
  c = param("C", inits.complex_normal, (h, n_modes, 2), (ch, st, None))
  d = param("D", inits.normal(1.0), (h,), (ch,))
  u32 = u.astype(jnp.float32)
  if state is not None:
    y, state = s4d_ops.s4d_recurrence(u32, state, log_dt, log_a_real, a_imag,
                                      c)
    return y + d * u32, state
  kernel = s4d_ops.s4d_kernel(log_dt, log_a_real, a_imag, c, length)  # [h, l]
  y = s4d_ops.causal_conv_fft(u32, kernel)  # [b, l, h]
  return y.astype(jnp.float32) + d * u32


class S4DMixer(nn.Module):
  """S4D mixer of the paper's S4 model (reference `S4Wrapper` -> `S4D`).

  Attributes:
    d_model: channels H = D.
    config: the S4 hyperparameters (d_state, dt_min, dt_max are used).
    dropout: dropout after the GELU (0 in the paper), tied over time.
    dtype: compute dtype of output_linear.
    param_dtype: storage dtype of output_linear.
  """
  d_model: int
  config: S4Config = S4Config()
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.nowrap
  def init_cache(self, batch: int, max_len: int) -> S4DCache:
    """The state at the sequence start (zeros); max_len is not needed.

    Returns:
      An `S4DCache` with ssm [batch, d_model, d_state // 2, 2] zeros.
    """
    del max_len
    return S4DCache(ssm=jnp.zeros(
        (batch, self.d_model, self.config.n_modes, 2), jnp.float32))

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True,
               cache: Optional[S4DCache] = None
               ) -> Union[jax.Array, tuple[jax.Array, S4DCache]]:
    """Maps x: [b, l, d_model] to [b, l, d_model] in `dtype`.

    With a cache (decoding), the mixer continues from it and returns
    (output, cache after x).
    """
    h, c = self.d_model, self.config
    if cache is None:
      y = _s4d_conv(self, x, c.n_modes, axes.EMBED, c.dt_min, c.dt_max)
    else:
      y, ssm = _s4d_conv(self, x, c.n_modes, axes.EMBED, c.dt_min, c.dt_max,
                         cache.ssm)
      cache = S4DCache(ssm=ssm)
    # nn.GELU() in the reference is the exact (erf) GELU.
    y = nn.gelu(y, approximate=False)
    if self.dropout > 0:
      y = nn.Dropout(self.dropout, broadcast_dims=(1,))(
          y, deterministic=deterministic)
    # Conv1d(H, 2H, kernel_size=1) = a Dense; its PyTorch default init has
    # fan_in = H for weight and bias, and `_init_weights` leaves Conv1d
    # biases alone, so the bias is not zeroed.
    y = layers.dense(2 * h, (axes.EMBED, axes.MLP), fan_in=h,
                     dtype=self.dtype, param_dtype=self.param_dtype,
                     name="output_linear")(y.astype(self.dtype))
    a, gate = jnp.split(y, 2, axis=-1)
    out = a * jax.nn.sigmoid(gate)
    return out if cache is None else (out, cache)


class S4MambaMixer(nn.Module):
  """S4-Mamba mixer (reference `S4Mamba`): Mamba with an LTI S4D core.

  Attributes:
    d_model: residual width D.
    config: the S4 hyperparameters (`S4Config.s4_mamba_dropout` is the
      dropout on the S4D output).
    conv_bias: whether conv1d has a bias.
    bias: whether in_proj / out_proj have (zero-initialised) biases.
    n_layer: the config's n_layer; out_proj is scaled by 1/sqrt(n_layer).
    dtype: compute dtype of projections and conv.
    param_dtype: storage dtype of projections and conv.
  """
  d_model: int
  config: S4Config = S4Config()
  conv_bias: bool = True
  bias: bool = False
  n_layer: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.nowrap
  def init_cache(self, batch: int, max_len: int) -> S4MambaCache:
    """The state at the sequence start (zeros); max_len is not needed.

    Returns:
      An `S4MambaCache` with conv [batch, d_conv - 1, E] and ssm
      [batch, E, d_state // 2, 2] zeros.
    """
    del max_len
    c = self.config
    e = c.d_inner(self.d_model)
    return S4MambaCache(
        conv=jnp.zeros((batch, c.d_conv - 1, e), self.dtype),
        ssm=jnp.zeros((batch, e, c.n_modes, 2), jnp.float32))

  @nn.compact
  def __call__(self, h: jax.Array, deterministic: bool = True,
               cache: Optional[S4MambaCache] = None
               ) -> Union[jax.Array, tuple[jax.Array, S4MambaCache]]:
    """Maps h: [b, l, d_model] to [b, l, d_model] in `dtype`.

    With a cache (decoding), the mixer continues from it and returns
    (output, cache after h).
    """
    c = self.config
    e = c.d_inner(self.d_model)
    dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    xz = layers.dense(2 * e, (axes.EMBED, axes.INNER), use_bias=self.bias,
                      bias_init=inits.zeros, name="in_proj", **dense)(h)
    x, z = jnp.split(xz, 2, axis=-1)  # [b, l, e] each
    conv = layers.CausalDepthwiseConv1d(
        width=c.d_conv, use_bias=self.conv_bias, name="conv1d", **dense)
    if cache is None:
      u = jax.nn.silu(conv(x))
      y = _s4d_conv(self, u, c.n_modes, axes.INNER, c.dt_min,
                    c.dt_max)  # [b, l, e] float32
    else:
      u, conv_state = conv(x, cache.conv)
      u = jax.nn.silu(u)
      y, ssm = _s4d_conv(self, u, c.n_modes, axes.INNER, c.dt_min, c.dt_max,
                         cache.ssm)
      cache = S4MambaCache(conv=conv_state, ssm=ssm)
    if c.s4_mamba_dropout > 0:
      # Tied over time (axis 1) like the reference DropoutNd(tie=True).
      y = nn.Dropout(c.s4_mamba_dropout, broadcast_dims=(1,))(
          y, deterministic=deterministic)
    y = y.astype(self.dtype) * z  # linear gate, as in the reference
    out = layers.dense(
        self.d_model, (axes.INNER, axes.EMBED), use_bias=self.bias,
        kernel_init=inits.mamba_out_proj(e, self.n_layer),
        bias_init=inits.zeros, name="out_proj", **dense)(y)
    return out if cache is None else (out, cache)
