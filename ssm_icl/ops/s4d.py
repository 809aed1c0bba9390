"""S4D convolution kernel (Vandermonde form) and FFT causal convolution.

The minimal S4D of the S4 repository (docs/PAPER.md §4.4): a diagonal
state-space model with complex modes A_n = -exp(log_A_real) + i * A_imag,
zero-order-hold discretisation with step dt = exp(log_dt), whose convolution
kernel is

  K_l = 2 * Re sum_n C_n * (exp(dt A_n) - 1) / A_n * exp(dt A_n l).

Complex arithmetic is written out in real fp32 pairs: it keeps every
intermediate in a dtype all backends support and makes the gradients plain
real gradients. exp(dt A) - 1 uses `expm1` so small dt * A keeps its digits.

Shape letters: b batch, l length, h channels (heads), n modes (d_state / 2).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

_F32 = jnp.float32


class S4DModes(NamedTuple):
  """The discretised modes of an S4D layer, all [h, n] float32.

  dt * A = log_re + i * log_im (so the per-step decay is exp(dt * A)) and
  C' = C * (exp(dt A) - 1) / A = c_re + i * c_im (zero-order hold, B = 1).
  """
  log_re: jax.Array
  log_im: jax.Array
  c_re: jax.Array
  c_im: jax.Array


def s4d_modes(log_dt: jax.Array, log_A_real: jax.Array, A_imag: jax.Array,
              C: jax.Array) -> S4DModes:
  """Discretises the S4D parameters (shapes as in `s4d_kernel`).

  Raises:
    ValueError: on inconsistent shapes.
  """
  if log_dt.ndim != 1:
    raise ValueError(f"log_dt must be [h], got shape {log_dt.shape}.")
  h = log_dt.shape[0]
  if log_A_real.ndim != 2 or log_A_real.shape[0] != h:
    raise ValueError(f"log_A_real must be [h={h}, n], got shape "
                     f"{log_A_real.shape}.")
  n = log_A_real.shape[1]
  if A_imag.shape != (h, n):
    raise ValueError(f"A_imag must have shape {(h, n)}, got {A_imag.shape}.")
  if C.shape != (h, n, 2):
    raise ValueError(f"C must have shape {(h, n, 2)} (real, imag pairs), got "
                     f"{C.shape}.")

  dt = jnp.exp(log_dt.astype(_F32))[:, None]  # [h, 1]
  a_re = -jnp.exp(log_A_real.astype(_F32))  # [h, n]
  a_im = A_imag.astype(_F32)
  x, y = a_re * dt, a_im * dt  # dt * A = x + i y

  # exp(dtA) - 1 = expm1(x) cos y + (cos y - 1) + i exp(x) sin y, with
  # cos y - 1 = -2 sin^2(y / 2) to avoid cancellation for small y.
  num_re = jnp.expm1(x) * jnp.cos(y) - 2.0 * jnp.sin(0.5 * y)**2
  num_im = jnp.exp(x) * jnp.sin(y)
  # Divide by A: (num * conj(A)) / |A|^2; |A| >= |Re A| > 0.
  inv = 1.0 / (a_re**2 + a_im**2)
  w_re = (num_re * a_re + num_im * a_im) * inv
  w_im = (num_im * a_re - num_re * a_im) * inv
  c_re, c_im = C[..., 0].astype(_F32), C[..., 1].astype(_F32)
  # C' = C * (exp(dtA) - 1) / A.
  return S4DModes(x, y, c_re * w_re - c_im * w_im, c_re * w_im + c_im * w_re)


def _powers(modes: S4DModes, steps: jax.Array) -> tuple[jax.Array, jax.Array]:
  """exp(dt A * s) for each step s, as (re, im) [h, n, len(steps)]."""
  decay = jnp.exp(modes.log_re[..., None] * steps)  # in (0, 1] as x < 0
  phase = modes.log_im[..., None] * steps
  return decay * jnp.cos(phase), decay * jnp.sin(phase)


def s4d_kernel(log_dt: jax.Array, log_A_real: jax.Array, A_imag: jax.Array,
               C: jax.Array, length: int) -> jax.Array:
  """The S4D convolution kernel.

  Args:
    log_dt: [h] log step sizes.
    log_A_real: [h, n]; Re A = -exp(log_A_real) < 0.
    A_imag: [h, n]; Im A.
    C: [h, n, 2] output weights as (real, imag) pairs.
    length: kernel length l (a Python int >= 1).

  Returns:
    K [h, l] float32.

  Raises:
    ValueError: on inconsistent shapes or a bad length.
  """
  if isinstance(length, bool) or not isinstance(length, int) or length < 1:
    raise ValueError(f"length must be a positive int, got {length!r}.")
  modes = s4d_modes(log_dt, log_A_real, A_imag, C)
  steps = jnp.arange(length, dtype=_F32)  # [l]
  decay = jnp.exp(modes.log_re[..., None] * steps)  # [h, n, l]; in (0, 1]
  phase = modes.log_im[..., None] * steps  # [h, n, l]
  # 2 Re(C' exp(dtA l)) summed over modes.
  return 2.0 * jnp.einsum(
      "hnl,hnl->hl", decay,
      modes.c_re[..., None] * jnp.cos(phase)
      - modes.c_im[..., None] * jnp.sin(phase))


def s4d_recurrence(u: jax.Array, state: jax.Array, log_dt: jax.Array,
                   log_A_real: jax.Array, A_imag: jax.Array,
                   C: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The S4D layer continued from a state: the recurrent (decoding) form.

  With the modes of `s4d_modes` the layer is the diagonal recurrence

    h_t = exp(dt A) h_{t-1} + u_t,    y_t = 2 Re <C', h_t>,

  which from a zero state equals `causal_conv_fft(u, s4d_kernel(...))`. One
  step (l = 1) runs the recurrence; longer inputs (prefill) use the FFT
  convolution plus the closed-form contribution of the initial state,
  y_t += 2 Re <C' exp(dt A (t + 1)), state>.

  Args:
    u: [b, l, h] input.
    state: [b, h, n, 2] float32 state before u, as (real, imag) pairs.
    log_dt, log_A_real, A_imag, C: the parameters, as in `s4d_kernel`.

  Returns:
    (y [b, l, h] float32 without the D skip term, state after u
    [b, h, n, 2] float32).

  Raises:
    ValueError: on inconsistent shapes.
  """
  modes = s4d_modes(log_dt, log_A_real, A_imag, C)
  h, n = modes.log_re.shape
  if u.ndim != 3 or u.shape[2] != h:
    raise ValueError(f"u must be [batch, length, h={h}], got shape "
                     f"{u.shape}.")
  if state.shape != (u.shape[0], h, n, 2):
    raise ValueError(f"state must have shape {(u.shape[0], h, n, 2)}, got "
                     f"{state.shape}.")
  u = u.astype(_F32)
  s_re, s_im = state[..., 0].astype(_F32), state[..., 1].astype(_F32)
  length = u.shape[1]
  if length == 1:
    lam_re, lam_im = _powers(modes, jnp.ones((1,), _F32))
    lam_re, lam_im = lam_re[..., 0], lam_im[..., 0]  # [h, n]
    new_re = lam_re * s_re - lam_im * s_im + u[:, 0, :, None]
    new_im = lam_re * s_im + lam_im * s_re
    y = 2.0 * jnp.sum(modes.c_re * new_re - modes.c_im * new_im, axis=-1)
    return y[:, None], jnp.stack([new_re, new_im], axis=-1)

  kernel = s4d_kernel(log_dt, log_A_real, A_imag, C, length)
  y = causal_conv_fft(u, kernel)  # [b, l, h] from a zero state
  # The initial state's part: 2 Re(C' state exp(dt A (t + 1))).
  cs_re = modes.c_re * s_re - modes.c_im * s_im  # [b, h, n]
  cs_im = modes.c_re * s_im + modes.c_im * s_re
  p_re, p_im = _powers(modes, jnp.arange(1, length + 1, dtype=_F32))
  y = y + 2.0 * (jnp.einsum("bhn,hnl->blh", cs_re, p_re)
                 - jnp.einsum("bhn,hnl->blh", cs_im, p_im))
  # state_L = exp(dt A L) state + sum_s exp(dt A (L - 1 - s)) u_s.
  q_re, q_im = _powers(modes, jnp.arange(length - 1, -1, -1, dtype=_F32))
  last_re, last_im = p_re[..., -1], p_im[..., -1]  # exp(dt A L), [h, n]
  new_re = (last_re * s_re - last_im * s_im
            + jnp.einsum("blh,hnl->bhn", u, q_re))
  new_im = (last_re * s_im + last_im * s_re
            + jnp.einsum("blh,hnl->bhn", u, q_im))
  return y, jnp.stack([new_re, new_im], axis=-1)


def causal_conv_fft(u: jax.Array, K: jax.Array) -> jax.Array:
  """Causal depthwise convolution y_t = sum_{s <= t} K_s u_{t-s} via FFT.

  The FFT length is at least l + k so the circular convolution has no
  wrap-around; fp32 inside, the result is cast to u's dtype.

  Args:
    u: [b, l, h] input.
    K: [h, k] kernel per channel (usually k = l).

  Returns:
    y [b, l, h] in u's dtype.

  Raises:
    ValueError: if the channel counts differ or ranks are wrong.
  """
  if u.ndim != 3:
    raise ValueError(f"u must be [batch, length, channels], got shape "
                     f"{u.shape}.")
  if K.ndim != 2 or K.shape[0] != u.shape[2]:
    raise ValueError(f"K must be [channels={u.shape[2]}, kernel_length], got "
                     f"shape {K.shape}.")
  length = u.shape[1]
  n_fft = length + K.shape[1]
  u_f = jnp.fft.rfft(u.astype(_F32), n=n_fft, axis=1)  # [b, f, h]
  k_f = jnp.fft.rfft(K.astype(_F32), n=n_fft, axis=1)  # [h, f]
  y = jnp.fft.irfft(u_f * k_f.T[None], n=n_fft, axis=1)[:, :length]
  return y.astype(u.dtype)
