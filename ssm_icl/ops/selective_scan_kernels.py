"""Pallas kernel bodies of the fused selective scan (one program per tile).

Each program owns one batch row and one tile of `te` channels. Its refs are
whole-sequence blocks (time padded to `num_chunks * chunk` steps):

  u, delta, z, y, du, ddelta, dz   [lp, te]   one row per time step
  B, C, dB, dC                     [np, lp]   one column per time step
  A_log, h0, dh0, dA_log           [np, te]   (A_log transposed)
  D, dt_bias, dD, ddt_bias         [1, te]
  states                           [num_chunks + 1, np, te]

B and C are stored state-major ([n, l]) so the column of one step is
already [np, 1] and broadcasts against the state [np, te] without a
transpose or reshape in the kernel; every load is a [1, te] row or an
[np, 1] column, which the Triton (GPU) and Mosaic (TPU) lowerings and the
interpreter all accept. The state and every accumulation are float32.

The forward kernel runs the recurrence step by step (`fori_loop`), writes y
(with D * u and the silu(z) gate fused) and stores the state entering each
chunk plus the final state. The backward kernel walks the chunks last to
first: it recomputes the chunk's states from the stored entry state (the
chunk is unrolled, so they live in registers/VMEM, never in memory of size
[l, n, e]) and runs the reverse recurrence of `selective_scan._fused_scan_bwd`
with the discretisation, D and gate derivatives fused in. Grads reduced over
channels (dB, dC) are written per tile and summed by the caller; grads
reduced over time (dA_log, dD, ddt_bias) accumulate in the loop carry.
"""

from __future__ import annotations

from jax import lax
from jax.experimental import pallas as pl
import jax.numpy as jnp

_F32 = jnp.float32


def _softplus(x):
  """log(1 + e^x), stable for large |x|, from primitives every backend has."""
  return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def _sigmoid(x):
  return 1.0 / (1.0 + jnp.exp(-x))


def _row(ref, t):
  """Row t of a [lp, te] ref as float32 [1, te]."""
  return ref[pl.ds(t, 1), :].astype(_F32)


def _col(ref, t):
  """Column t of an [np, lp] ref as float32 [np, 1]."""
  return ref[:, pl.ds(t, 1)].astype(_F32)


def _step_inputs(u_ref, delta_ref, bias, t):
  """u_t, the pre-softplus delta_t + dt_bias and softplus of it, [1, te]."""
  u = _row(u_ref, t)
  delta_pre = _row(delta_ref, t) + bias
  return u, delta_pre, _softplus(delta_pre)


def forward_kernel(*refs, chunk: int, num_chunks: int, has_z: bool):
  """y and the chunk-entry states of one (batch, channel-tile) program.

  Refs: u, delta, [z], B, C, A_log, D, dt_bias, h0 | y, states.
  """
  if has_z:
    (u_ref, delta_ref, z_ref, b_ref, c_ref, a_log_ref, d_ref, bias_ref,
     h0_ref, y_ref, states_ref) = refs
  else:
    (u_ref, delta_ref, b_ref, c_ref, a_log_ref, d_ref, bias_ref, h0_ref,
     y_ref, states_ref) = refs
    z_ref = None
  A = -jnp.exp(a_log_ref[...].astype(_F32))  # [np, te]
  D = d_ref[...].astype(_F32)
  bias = bias_ref[...].astype(_F32)

  def run_chunk(ci, h):
    states_ref[ci] = h

    def step(i, h):
      t = ci * chunk + i
      u, _, delta = _step_inputs(u_ref, delta_ref, bias, t)
      # exp(delta * A) is in (0, 1] since A < 0 and delta > 0.
      h = jnp.exp(delta * A) * h + _col(b_ref, t) * (delta * u)
      y = jnp.sum(h * _col(c_ref, t), axis=0, keepdims=True) + D * u
      if z_ref is not None:
        z = _row(z_ref, t)
        y = y * z * _sigmoid(z)
      y_ref[pl.ds(t, 1), :] = y.astype(y_ref.dtype)
      return h

    return lax.fori_loop(0, chunk, step, h)

  h = lax.fori_loop(0, num_chunks, run_chunk, h0_ref[...].astype(_F32))
  states_ref[num_chunks] = h


def backward_kernel(*refs, chunk: int, num_chunks: int, has_z: bool):
  """Grads of one (batch, channel-tile) program, chunk by chunk in reverse.

  Refs: u, delta, [z], B, C, A_log, D, dt_bias, states, dy, dh_last |
  du, ddelta, [dz], dB, dC, dA_log, dD, ddt_bias, dh0.

  With g_t = dL/dh_t (including the path through later states), a_t =
  exp(delta_t A) and dy_t the cotangent of the ungated scan output:
    g_t = C_t dy_t + a_{t+1} g_{t+1},
    dL/d(delta_t A) = g_t h_{t-1} a_t,  dL/d(delta_t u_t B_t) = g_t,
    dL/dC_t = sum_e h_t dy_t.
  """
  if has_z:
    (u_ref, delta_ref, z_ref, b_ref, c_ref, a_log_ref, d_ref, bias_ref,
     states_ref, dy_ref, dh_last_ref, du_ref, ddelta_ref, dz_ref, db_ref,
     dc_ref, da_log_ref, dd_ref, dbias_ref, dh0_ref) = refs
  else:
    (u_ref, delta_ref, b_ref, c_ref, a_log_ref, d_ref, bias_ref, states_ref,
     dy_ref, dh_last_ref, du_ref, ddelta_ref, db_ref, dc_ref, da_log_ref,
     dd_ref, dbias_ref, dh0_ref) = refs
    z_ref = dz_ref = None
  A = -jnp.exp(a_log_ref[...].astype(_F32))  # [np, te]
  D = d_ref[...].astype(_F32)
  bias = bias_ref[...].astype(_F32)

  def run_chunk(k, carry):
    ci = num_chunks - 1 - k
    # Recompute the chunk's states from its entry state; unrolled, so the
    # `chunk` states stay in registers (GPU) or VMEM (TPU).
    h = states_ref[ci]
    steps = []
    for i in range(chunk):
      t = ci * chunk + i
      u, delta_pre, delta = _step_inputs(u_ref, delta_ref, bias, t)
      b = _col(b_ref, t)
      h_prev = h
      h = jnp.exp(delta * A) * h + b * (delta * u)
      steps.append((t, u, delta_pre, delta, b, h_prev, h))

    g, dA, dD, dbias = carry
    for t, u, delta_pre, delta, b, h_prev, h in reversed(steps):
      c = _col(c_ref, t)
      dy = _row(dy_ref, t)
      if z_ref is not None:
        z = _row(z_ref, t)
        sig = _sigmoid(z)
        y = jnp.sum(h * c, axis=0, keepdims=True) + D * u
        # d silu(z) / dz = sig * (1 + z * (1 - sig)).
        dz_ref[pl.ds(t, 1), :] = (
            dy * y * sig * (1.0 + z * (1.0 - sig))).astype(dz_ref.dtype)
        dy = dy * z * sig
      dD = dD + dy * u
      dc_ref[:, pl.ds(t, 1)] = jnp.sum(h * dy, axis=1, keepdims=True)
      g = g + c * dy
      a = jnp.exp(delta * A)
      g_log_a = g * h_prev * a  # dL/d(delta_t A), [np, te]
      g_du = jnp.sum(g * b, axis=0, keepdims=True)  # dL/d(delta_t u_t)
      d_delta = jnp.sum(g_log_a * A, axis=0, keepdims=True) + g_du * u
      dA = dA + g_log_a * delta
      du_ref[pl.ds(t, 1), :] = (g_du * delta + D * dy).astype(du_ref.dtype)
      # Through the softplus: d softplus(x) / dx = sigmoid(x).
      d_delta_pre = d_delta * _sigmoid(delta_pre)
      ddelta_ref[pl.ds(t, 1), :] = d_delta_pre.astype(ddelta_ref.dtype)
      dbias = dbias + d_delta_pre
      db_ref[:, pl.ds(t, 1)] = jnp.sum(g * (delta * u), axis=1,
                                       keepdims=True)
      g = g * a
    return g, dA, dD, dbias

  zeros_row = jnp.zeros(D.shape, _F32)
  g, dA, dD, dbias = lax.fori_loop(
      0, num_chunks, run_chunk,
      (dh_last_ref[...].astype(_F32), jnp.zeros(A.shape, _F32), zeros_row,
       zeros_row))
  dh0_ref[...] = g
  da_log_ref[...] = dA * A  # A = -exp(A_log), so dA/dA_log = A.
  dd_ref[...] = dD
  dbias_ref[...] = dbias
