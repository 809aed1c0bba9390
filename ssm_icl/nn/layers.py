"""Layers with logical axis names: Dense, LayerNorm, the GPT-2 MLP, conv.

`dense` and `layer_norm` configure flax's `nn.Dense` / `nn.LayerNorm` with
logically partitioned initialisers and the PyTorch defaults of the reference
code; used with `name=...` inside a compact module they give parameter names
like `in_proj/kernel`, mirroring PyTorch's `in_proj.weight`.

Every parameter is created through `nn.with_logical_partitioning`, so a model
built from these layers can be initialised straight into a sharded layout (see
`ssm_icl.nn.axes`). Compute runs in `dtype` (e.g. bfloat16) while parameters
are stored in `param_dtype`; LayerNorm statistics are always float32.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Optional, Union

from flax import linen as nn
from flax import struct
import jax
import jax.numpy as jnp

from ssm_icl import errors
from ssm_icl.nn import axes
from ssm_icl.nn import initializers as inits

Dtype = Any
Axes = tuple[Optional[str], ...]


def dense(features: int,
          kernel_axes: Axes,
          *,
          fan_in: Optional[int] = None,
          use_bias: bool = True,
          kernel_init: Optional[inits.Initializer] = None,
          bias_init: Optional[inits.Initializer] = None,
          dtype: Dtype = jnp.float32,
          param_dtype: Dtype = jnp.float32,
          name: Optional[str] = None) -> nn.Dense:
  """An `nn.Dense` (kernel [in, out], i.e. PyTorch's weight transposed).

  Args:
    features: output width.
    kernel_axes: logical names of the kernel's (in, out) axes; the bias uses
      the second one.
    fan_in: input width; needed only for the default bias init.
    use_bias: whether to add a bias.
    kernel_init: kernel initialiser; None = PyTorch `nn.Linear` default
      U(+-1/sqrt(fan_in)).
    bias_init: bias initialiser; None = the PyTorch default (needs fan_in).
    dtype: compute dtype (inputs and kernel are cast to it).
    param_dtype: storage dtype of the parameters.
    name: the submodule name (e.g. "in_proj").

  Returns:
    An unbound `nn.Dense`.

  Raises:
    ValueError: if the default bias init is needed but fan_in is missing.
  """
  if use_bias and bias_init is None:
    if fan_in is None:
      raise ValueError(f"dense {name!r}: the default (PyTorch) bias init "
                       f"needs fan_in.")
    bias_init = inits.torch_linear(fan_in)
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
      kernel_init=nn.with_logical_partitioning(
          kernel_init or inits.torch_linear_kernel(), kernel_axes),
      bias_init=nn.with_logical_partitioning(bias_init or inits.zeros,
                                             (kernel_axes[1],)),
      name=name)


def layer_norm(*,
               axis_name: str = axes.EMBED,
               dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32,
               name: Optional[str] = None) -> nn.LayerNorm:
  """An `nn.LayerNorm` over the last axis with PyTorch's eps 1e-5.

  Statistics are float32 whatever the compute dtype (bfloat16 has too few
  mantissa bits for the variance), and computed as E[(x - mean)^2] rather
  than E[x^2] - mean^2, which cancels catastrophically for large means.

  Args:
    axis_name: logical name of the normalised axis (for scale and bias).
    dtype: output dtype.
    param_dtype: storage dtype of `scale` and `bias`.
    name: the submodule name (e.g. "ln_f").

  Returns:
    An unbound `nn.LayerNorm` with params `scale` and `bias`.
  """
  return nn.LayerNorm(
      epsilon=1e-5, dtype=dtype, param_dtype=param_dtype,
      use_fast_variance=False, force_float32_reductions=True,
      scale_init=nn.with_logical_partitioning(inits.ones, (axis_name,)),
      bias_init=nn.with_logical_partitioning(inits.zeros, (axis_name,)),
      name=name)


class NormKind(enum.StrEnum):
  """The normalisation of the blocks and the final norm.

  LAYER: LayerNorm (scale and bias), as in the paper's code and GPT-2.
  RMS: RMSNorm (scale only), as in Hugging Face and pretrained Mamba.
  """
  LAYER = "layer"
  RMS = "rms"


def parse_norm(kind: Union[NormKind, str]) -> NormKind:
  """A `NormKind` from itself or its string value.

  Raises:
    errors.UserError: (a ValueError) naming the bad value and the valid
      ones.
  """
  return errors.parse_enum("norm", kind, NormKind)


def rms_norm(*,
             axis_name: str = axes.EMBED,
             dtype: Dtype = jnp.float32,
             param_dtype: Dtype = jnp.float32,
             name: Optional[str] = None) -> nn.RMSNorm:
  """An `nn.RMSNorm` over the last axis with eps 1e-5 (HF / `mamba_ssm`).

  y = x / sqrt(mean(x^2) + eps) * scale, statistics in float32.

  Returns:
    An unbound `nn.RMSNorm` with param `scale` (PyTorch's `weight`).
  """
  return nn.RMSNorm(
      epsilon=1e-5, dtype=dtype, param_dtype=param_dtype,
      use_fast_variance=False, force_float32_reductions=True,
      scale_init=nn.with_logical_partitioning(inits.ones, (axis_name,)),
      name=name)


def norm(kind: Union[NormKind, str], *,
         dtype: Dtype = jnp.float32,
         param_dtype: Dtype = jnp.float32,
         name: Optional[str] = None) -> nn.Module:
  """`layer_norm` or `rms_norm` by `kind` (a `NormKind` or its value)."""
  make = layer_norm if parse_norm(kind) is NormKind.LAYER else rms_norm
  return make(dtype=dtype, param_dtype=param_dtype, name=name)


@struct.dataclass
class StatelessCache:
  """The decoding cache of a mixer without state (the MLP): no arrays."""


def linear_inits(
    style: Union[inits.InitStyle, str], fan_in: int, n_layer: int, *,
    residual: bool) -> tuple[inits.Initializer, inits.Initializer]:
  """Kernel and bias initialisers of a linear layer in an init style.

  Args:
    style: `inits.STYLE_GPT2` (N(0, 0.02), zero bias; residual projections
      N(0, 0.02/sqrt(2 n_layer))) or `inits.STYLE_MAMBA` (PyTorch default
      weight, zero bias: `_init_weights` zeroes every Linear bias; an MLP's
      residual projection is rescaled like Mamba's out_proj, as the reference
      does for `fc2`).
    fan_in: input width of the layer.
    n_layer: the config's n_layer, for the residual rescaling.
    residual: whether the layer writes into the residual stream (`c_proj`).

  Returns:
    (kernel_init, bias_init).
  """
  inits.check_style(style)
  if style == inits.STYLE_GPT2:
    kernel = (inits.gpt2_residual(n_layer) if residual
              else inits.normal(inits.GPT2_STD))
  else:
    kernel = (inits.mamba_out_proj(fan_in, n_layer) if residual
              else inits.torch_linear(fan_in))
  return kernel, inits.zeros


@dataclasses.dataclass(frozen=True)
class MlpConfig:
  """Hyperparameters of an `MLP` (`ModelConfig` holds one).

  To add an MLP hyperparameter, add a field here (with its check in
  `__post_init__`); `ModelConfig` then accepts it as a flat key.

  Attributes:
    mlp_ratio: hidden width / D (4 in GPT-2).
  """
  mlp_ratio: int = 4

  def __post_init__(self):
    errors.check_positive_int("mlp_ratio", self.mlp_ratio)


class MLP(nn.Module):
  """GPT-2 feed-forward mixer: c_fc (D -> r*D), gelu_new, c_proj (r*D -> D).

  gelu_new is the tanh approximation of GELU, as in HF GPT-2.

  Attributes:
    d_model: residual width D.
    config: the MLP hyperparameters (hidden width ratio).
    n_layer: the config's n_layer, for the c_proj init scaling.
    init_style: `inits.STYLE_GPT2` or `inits.STYLE_MAMBA`.
    dtype: compute dtype.
    param_dtype: storage dtype of the parameters.
  """
  d_model: int
  config: MlpConfig = MlpConfig()
  n_layer: int = 1
  init_style: inits.InitStyle = inits.STYLE_GPT2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.nowrap
  def init_cache(self, batch: int, max_len: int) -> StatelessCache:
    """The (empty) decoding cache; the MLP is pointwise in time."""
    del batch, max_len
    return StatelessCache()

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True,
               cache: Optional[StatelessCache] = None) -> Any:
    """Maps x: [b, l, D] to [b, l, D]; returns (y, cache) if cache is given."""
    del deterministic  # No dropout inside the MLP (the paper uses none).
    hidden = self.config.mlp_ratio * self.d_model
    fc_k, fc_b = linear_inits(self.init_style, self.d_model, self.n_layer,
                              residual=False)
    proj_k, proj_b = linear_inits(self.init_style, hidden, self.n_layer,
                                  residual=True)
    h = dense(hidden, (axes.EMBED, axes.MLP), kernel_init=fc_k,
              bias_init=fc_b, dtype=self.dtype, param_dtype=self.param_dtype,
              name="c_fc")(x)
    h = nn.gelu(h, approximate=True)
    y = dense(self.d_model, (axes.MLP, axes.EMBED), kernel_init=proj_k,
              bias_init=proj_b, dtype=self.dtype,
              param_dtype=self.param_dtype, name="c_proj")(h)
    return y if cache is None else (y, cache)


class CausalDepthwiseConv1d(nn.Module):
  """Causal depthwise 1-D convolution over time (Mamba's `conv1d`).

  out[t, e] = bias[e] + sum_k kernel[k, e] * x[t - (width - 1) + k, e], with
  zeros before the sequence start. This equals PyTorch's
  `Conv1d(groups=channels, padding=width - 1)` truncated to the first `l`
  outputs, with `kernel[k, e] = weight[e, 0, k]`.

  Attributes:
    width: kernel width (d_conv).
    use_bias: whether to add a per-channel bias.
    channel_axis: logical name of the channel axis.
    dtype: compute dtype.
    param_dtype: storage dtype of the parameters.
  """
  width: int = 4
  use_bias: bool = True
  channel_axis: str = axes.INNER
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, state: Optional[jax.Array] = None
               ) -> Union[jax.Array, tuple[jax.Array, jax.Array]]:
    """Maps x: [b, l, c] to [b, l, c] in `dtype`.

    Args:
      x: [b, l, c] input.
      state: optional [b, width - 1, c], the inputs just before x (decoding;
        zeros at the sequence start). When given, the new state is returned
        too.

    Returns:
      y [b, l, c], or (y, the last width - 1 inputs [b, width - 1, c]) when
      `state` is given.
    """
    channels = x.shape[-1]
    init = inits.torch_depthwise_conv(self.width)
    kernel = self.param(
        "kernel",
        nn.with_logical_partitioning(init, (axes.CONV, self.channel_axis)),
        (self.width, channels), self.param_dtype)
    bias = None
    if self.use_bias:
      bias = self.param(
          "bias", nn.with_logical_partitioning(init, (self.channel_axis,)),
          (channels,), self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias,
                                              dtype=self.dtype)
    length = x.shape[1]
    # Left padding only, so output t never sees inputs after t. The width is
    # tiny (4), so a sum of shifted copies beats a general convolution.
    if state is None:
      xp = jnp.pad(x, ((0, 0), (self.width - 1, 0), (0, 0)))
    else:
      want = (x.shape[0], self.width - 1, channels)
      if state.shape != want:
        raise ValueError(f"conv state must have shape {want}, got "
                         f"{state.shape}.")
      xp = jnp.concatenate([state.astype(x.dtype), x], axis=1)
    y = sum(xp[:, k:k + length, :] * kernel[k] for k in range(self.width))
    if bias is not None:
      y = y + bias
    if state is None:
      return y
    return y, xp[:, xp.shape[1] - (self.width - 1):]
