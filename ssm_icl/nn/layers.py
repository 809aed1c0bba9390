"""Basic layers with logical axis names: Dense, LayerNorm and the GPT-2 MLP.

Every parameter is created through `nn.with_logical_partitioning`, so a model
built from these layers can be initialised straight into a sharded layout (see
`ssm_icl.nn.axes`). Compute runs in `dtype` (e.g. bfloat16) while parameters
are stored in `param_dtype`; LayerNorm statistics are always float32.
"""

from __future__ import annotations

from typing import Any, Optional

from flax import linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from ssm_icl.nn import axes
from ssm_icl.nn import initializers as inits

Dtype = Any
Axes = tuple[Optional[str], ...]


class Dense(nn.Module):
  """y = x @ kernel + bias over the last axis, with logical axis names.

  Parameter names and layout follow flax (`kernel` [in, out], `bias` [out]),
  i.e. the transpose of a PyTorch `nn.Linear` weight.

  Attributes:
    features: output width.
    use_bias: whether to add a bias.
    kernel_axes: logical names of the kernel's (in, out) axes; the bias uses
      the second one.
    kernel_init: initialiser of the kernel; None = PyTorch `nn.Linear`
      default U(+-1/sqrt(fan_in)).
    bias_init: initialiser of the bias; None = PyTorch default, as above.
    dtype: compute dtype (inputs and kernel are cast to it).
    param_dtype: storage dtype of the parameters.
  """
  features: int
  use_bias: bool = True
  kernel_axes: Axes = (None, None)
  kernel_init: Optional[inits.Initializer] = None
  bias_init: Optional[inits.Initializer] = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the layer.

    Args:
      x: [..., in] input.

    Returns:
      [..., features] output in `dtype`.
    """
    fan_in = x.shape[-1]
    default = inits.torch_linear(fan_in)
    kernel = self.param(
        "kernel",
        nn.with_logical_partitioning(self.kernel_init or default,
                                     self.kernel_axes),
        (fan_in, self.features), self.param_dtype)
    bias = None
    if self.use_bias:
      bias = self.param(
          "bias",
          nn.with_logical_partitioning(self.bias_init or default,
                                       (self.kernel_axes[1],)),
          (self.features,), self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias,
                                              dtype=self.dtype)
    y = lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    if bias is not None:
      y = y + bias
    return y


class LayerNorm(nn.Module):
  """LayerNorm over the last axis with float32 statistics (PyTorch eps 1e-5).

  Attributes:
    epsilon: added to the variance.
    axis_name: logical name of the normalised axis (for `scale` and `bias`).
    dtype: output dtype.
    param_dtype: storage dtype of `scale` and `bias`.
  """
  epsilon: float = 1e-5
  axis_name: str = axes.EMBED
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalises `x: [..., d]`; returns [..., d] in `dtype`."""
    d = x.shape[-1]
    scale = self.param(
        "scale", nn.with_logical_partitioning(inits.ones, (self.axis_name,)),
        (d,), self.param_dtype)
    bias = self.param(
        "bias", nn.with_logical_partitioning(inits.zeros, (self.axis_name,)),
        (d,), self.param_dtype)
    # Statistics in float32 whatever the compute dtype: bfloat16 has 8 bits
    # of mantissa, too few for the variance of a 128-wide vector.
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * lax.rsqrt(var + self.epsilon)
    y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y.astype(self.dtype)


def linear_inits(style: str, fan_in: int, n_layer: int, *,
                 residual: bool) -> tuple[inits.Initializer,
                                          inits.Initializer]:
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


class MLP(nn.Module):
  """GPT-2 feed-forward mixer: c_fc (D -> r*D), gelu_new, c_proj (r*D -> D).

  gelu_new is the tanh approximation of GELU, as in HF GPT-2.

  Attributes:
    d_model: residual width D.
    mlp_ratio: hidden width / D (4 in GPT-2).
    n_layer: the config's n_layer, for the c_proj init scaling.
    init_style: `inits.STYLE_GPT2` or `inits.STYLE_MAMBA`.
    dtype: compute dtype.
    param_dtype: storage dtype of the parameters.
  """
  d_model: int
  mlp_ratio: int = 4
  n_layer: int = 1
  init_style: str = inits.STYLE_GPT2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    """Maps x: [b, l, D] to [b, l, D]."""
    del deterministic  # No dropout inside the MLP (the paper uses none).
    hidden = self.mlp_ratio * self.d_model
    fc_k, fc_b = linear_inits(self.init_style, self.d_model, self.n_layer,
                              residual=False)
    proj_k, proj_b = linear_inits(self.init_style, hidden, self.n_layer,
                                  residual=True)
    h = Dense(hidden, kernel_axes=(axes.EMBED, axes.MLP), kernel_init=fc_k,
              bias_init=fc_b, dtype=self.dtype, param_dtype=self.param_dtype,
              name="c_fc")(x)
    h = nn.gelu(h, approximate=True)
    return Dense(self.d_model, kernel_axes=(axes.MLP, axes.EMBED),
                 kernel_init=proj_k, bias_init=proj_b, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="c_proj")(h)


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
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps x: [b, l, c] to [b, l, c] in `dtype`."""
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
    xp = jnp.pad(x, ((0, 0), (self.width - 1, 0), (0, 0)))
    y = sum(xp[:, k:k + length, :] * kernel[k] for k in range(self.width))
    if bias is not None:
      y = y + bias
    return y
