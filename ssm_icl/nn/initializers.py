"""Parameter initialisers of the reference PyTorch code, as JAX initialisers.

The paper's code (docs/PAPER.md §5) mixes three
schemes, all reproduced here:

* PyTorch defaults: `nn.Linear` weight and bias ~ U(+-1/sqrt(fan_in)); a
  depthwise `nn.Conv1d` of width k ~ U(+-1/sqrt(k)) (kaiming_uniform(a=sqrt 5)
  reduces to this bound).
* Official Mamba v1: S4D-real `A_log`, inverse-softplus dt bias, dt_proj weight
  U(+-dt_rank^-0.5), and out_proj re-drawn by kaiming_uniform then divided by
  sqrt(n_layer) (`mixer_seq_simple._init_weights`).
* HuggingFace GPT-2: N(0, 0.02) weights and embeddings, zero biases, and the
  residual projections (`c_proj`) N(0, 0.02 / sqrt(2 * n_layer)).

All initialisers follow the `jax.nn.initializers` signature
`init(key, shape, dtype) -> array`. Random draws are made in float32 and cast
to `dtype`, so a bfloat16 parameter sees the same distribution.
"""

from __future__ import annotations

import enum
import math
from typing import Any, Callable, Union

import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]



class InitStyle(enum.StrEnum):
  """The two initialisation styles a block can use.

  GPT2: HF GPT-2 inside the Transformer backbone.
  MAMBA: `mixer_seq_simple._init_weights` (the Mamba-family models).
  """
  GPT2 = "gpt2"
  MAMBA = "mamba"


STYLE_GPT2 = InitStyle.GPT2
STYLE_MAMBA = InitStyle.MAMBA
STYLES = tuple(InitStyle)

GPT2_STD = 0.02


def check_style(style: Union[InitStyle, str]) -> InitStyle:
  """The `InitStyle` of `style` (a member or its value), else ValueError."""
  try:
    return InitStyle(style)
  except ValueError:
    raise ValueError(f"Unknown init style {style!r}; expected one of "
                     f"{[s.value for s in InitStyle]}.") from None


def uniform(bound: float) -> Initializer:
  """U(-bound, +bound)."""

  def init(key, shape, dtype: Any = jnp.float32) -> jax.Array:
    x = jax.random.uniform(key, shape, jnp.float32, -bound, bound)
    return x.astype(dtype)

  return init


def normal(std: float) -> Initializer:
  """N(0, std^2)."""

  def init(key, shape, dtype: Any = jnp.float32) -> jax.Array:
    return (std * jax.random.normal(key, shape, jnp.float32)).astype(dtype)

  return init


def zeros(key, shape, dtype: Any = jnp.float32) -> jax.Array:
  del key
  return jnp.zeros(shape, dtype)


def ones(key, shape, dtype: Any = jnp.float32) -> jax.Array:
  del key
  return jnp.ones(shape, dtype)


def torch_linear(fan_in: int) -> Initializer:
  """PyTorch `nn.Linear` default for weight and bias: U(+-1/sqrt(fan_in)).

  Args:
    fan_in: input features of the layer (for a [fan_in, out] kernel, shape[0];
      passed explicitly so the same initialiser serves the bias).
  """
  return uniform(1.0 / math.sqrt(fan_in))


def torch_linear_kernel() -> Initializer:
  """PyTorch `nn.Linear` weight default for a [fan_in, out] kernel.

  kaiming_uniform(a=sqrt 5) = U(+-1/sqrt(fan_in)), i.e. a variance scaling
  of 1/3 on fan_in (shape[-2]); unlike `torch_linear` it reads fan_in from
  the shape.
  """
  return jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_depthwise_conv(width: int) -> Initializer:
  """PyTorch depthwise `nn.Conv1d` default (weight and bias): U(+-1/sqrt(k))."""
  return uniform(1.0 / math.sqrt(width))


def mamba_out_proj(fan_in: int, n_layer: int) -> Initializer:
  """Mamba-family out_proj: kaiming_uniform(a=sqrt 5), then / sqrt(n_layer).

  kaiming_uniform with a = sqrt(5) has bound 1/sqrt(fan_in); the reference then
  divides the weight by sqrt(n_residuals_per_layer * n_layer) with
  n_residuals_per_layer = 1 and the *config* n_layer.
  """
  return uniform(1.0 / math.sqrt(fan_in) / math.sqrt(n_layer))


def gpt2_residual(n_layer: int) -> Initializer:
  """GPT-2 residual projection (`c_proj`): N(0, 0.02 / sqrt(2 * n_layer))."""
  return normal(GPT2_STD / math.sqrt(2 * n_layer))


def s4d_real_a_log(key, shape, dtype: Any = jnp.float32) -> jax.Array:
  """S4D-real `A_log` [d_inner, d_state]: log(1..N) on every channel.

  Then A = -exp(A_log) = -[1, 2, ..., N], as in official Mamba v1.
  """
  del key
  d_inner, d_state = shape
  a = jnp.arange(1, d_state + 1, dtype=jnp.float32)
  return jnp.broadcast_to(jnp.log(a), (d_inner, d_state)).astype(dtype)


def log_uniform_dt(key, shape, dt_min: float, dt_max: float) -> jax.Array:
  """dt = exp(U[log dt_min, log dt_max]) in float32."""
  log_dt = jax.random.uniform(key, shape, jnp.float32, math.log(dt_min),
                              math.log(dt_max))
  return jnp.exp(log_dt)


def inverse_softplus(y: jax.Array) -> jax.Array:
  """x with softplus(x) = y, for y > 0: y + log(-expm1(-y)).

  `expm1` keeps the result accurate for the small y (~1e-3) used for dt,
  where log(1 - exp(-y)) would lose most of its digits.
  """
  return y + jnp.log(-jnp.expm1(-y))


def dt_bias(dt_min: float = 1e-3,
            dt_max: float = 0.1,
            dt_init_floor: float = 1e-4) -> Initializer:
  """Mamba dt_proj bias [d_inner]: softplus(bias) = dt, dt log-uniform.

  dt is drawn log-uniformly in [dt_min, dt_max] and floored at dt_init_floor
  before the inverse softplus, so softplus(bias) lies in [dt_min, dt_max].
  """

  def init(key, shape, dtype: Any = jnp.float32) -> jax.Array:
    dt = jnp.maximum(log_uniform_dt(key, shape, dt_min, dt_max),
                     dt_init_floor)
    return inverse_softplus(dt).astype(dtype)

  return init


def dt_proj_kernel(dt_rank: int, dt_scale: float = 1.0) -> Initializer:
  """Mamba dt_proj weight ("random" dt_init): U(+-dt_scale / sqrt(dt_rank))."""
  return uniform(dt_scale / math.sqrt(dt_rank))


def s4d_log_dt(dt_min: float = 1e-3, dt_max: float = 0.1) -> Initializer:
  """S4D log step [h] ~ U[log dt_min, log dt_max]."""

  def init(key, shape, dtype: Any = jnp.float32) -> jax.Array:
    x = jax.random.uniform(key, shape, jnp.float32, math.log(dt_min),
                           math.log(dt_max))
    return x.astype(dtype)

  return init


def s4d_log_a_real(key, shape, dtype: Any = jnp.float32) -> jax.Array:
  """S4D-Lin real part [h, n2]: log 0.5 everywhere (Re A = -0.5)."""
  del key
  return jnp.full(shape, math.log(0.5), dtype)


def s4d_a_imag(key, shape, dtype: Any = jnp.float32) -> jax.Array:
  """S4D-Lin imaginary part [h, n2]: pi * n for mode n = 0..n2-1."""
  del key
  h, n2 = shape
  a = math.pi * jnp.arange(n2, dtype=jnp.float32)
  return jnp.broadcast_to(a, (h, n2)).astype(dtype)


def complex_normal(key, shape, dtype: Any = jnp.float32) -> jax.Array:
  """Standard complex normal stored as real pairs [..., 2].

  Like `torch.randn(..., dtype=cfloat)`: real and imaginary parts are
  independent N(0, 1/2), so E|C|^2 = 1.
  """
  if shape[-1] != 2:
    raise ValueError(f"complex_normal needs a trailing axis of 2 (real, imag),"
                     f" got shape {tuple(shape)}.")
  x = jax.random.normal(key, shape, jnp.float32) * math.sqrt(0.5)
  return x.astype(dtype)
