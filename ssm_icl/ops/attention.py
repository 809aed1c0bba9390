"""Causal scaled dot-product attention: dense and blocked (online softmax).

Dense attention materialises the [b, h, l, l] logits: fine for short prompts,
but at b=64, h=8, l=2048 one fp32 copy is 8 GiB and its gradient does not fit
in memory. The blocked schedule walks over query blocks and, inside, over key
blocks with an online (running max / running sum) softmax, as in
FlashAttention. Both loops are `lax.scan`s with `jax.checkpoint`-ed bodies, so
autodiff keeps only O(b l h d) residuals plus one [b, h, block, block] block
of logits at a time; key blocks entirely above the diagonal are skipped with
`lax.cond`.

Numerics: logits and softmax in fp32; the causal mask replaces logits by a
large negative finite number *before* `exp` (not -inf, whose cotangent gives
0 * inf = NaN); the output is cast to q's dtype.

Shape letters: b batch, l length, h heads, d head_dim, q/k query/key
positions, c number of blocks, t positions per block.
"""

from __future__ import annotations

import enum
import math

import jax
from jax import lax
import jax.numpy as jnp

from ssm_icl import errors

_F32 = jnp.float32
# Large negative, finite logit for masked pairs; exp(_MASK - max) == 0.
_MASK = -1e30
# "auto" uses dense attention up to this length.
DENSE_MAX_LENGTH = 512


class AttnImpl(enum.StrEnum):
  """The attention core of `causal_attention`.

  DENSE materialises the [b, h, l, l] logits; BLOCKED runs the online
  softmax over blocks (long prompts); AUTO is dense up to
  `DENSE_MAX_LENGTH` positions, blocked beyond.
  """
  AUTO = "auto"
  DENSE = "dense"
  BLOCKED = "blocked"


def parse_impl(impl: AttnImpl | str, field: str = "attn_impl") -> AttnImpl:
  """An `AttnImpl` from itself or its string value.

  Raises:
    errors.UserError: (a ValueError) naming the bad value and the valid
      ones.
  """
  return errors.parse_enum(field, impl, AttnImpl)


def _check_inputs(q, k, v, block_size):
  """Raises ValueError naming the bad input."""
  if q.ndim != 4:
    raise ValueError(f"q must be [batch, length, heads, head_dim], got shape "
                     f"{q.shape}.")
  for name, x in (("k", k), ("v", v)):
    if x.shape != q.shape:
      raise ValueError(f"{name} must have q's shape {q.shape}, got {x.shape}.")
  if (isinstance(block_size, bool) or not isinstance(block_size, int)
      or block_size < 1):
    raise ValueError(f"block_size must be a positive int, got "
                     f"{block_size!r}.")


def _dense(q, k, v, bias, scale, offset=0):
  """Materialised causal attention; q [b, q, h, d], k, v [b, k, h, d].

  Query i sits at position offset + i and sees keys 0 .. offset + i.
  Returns [b, q, h, d] fp32.
  """
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                      preferred_element_type=_F32) * scale  # [b, h, q, k]
  if bias is not None:
    logits = logits + bias.astype(_F32)
  q_pos = offset + jnp.arange(q.shape[1])
  k_pos = jnp.arange(k.shape[1])
  logits = jnp.where(k_pos[None, :] <= q_pos[:, None], logits, _MASK)
  probs = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v,
                    preferred_element_type=_F32)


def _to_blocks(x, padded, block):
  """[b, l, ...] -> [c, b, t, ...], zero-padded to `padded` positions."""
  extra = padded - x.shape[1]
  x = jnp.pad(x, [(0, 0), (0, extra)] + [(0, 0)] * (x.ndim - 2))
  x = x.reshape((x.shape[0], padded // block, block) + x.shape[2:])
  return jnp.moveaxis(x, 1, 0)


def _bias_block(bias, i, j, block):
  """The [.., t, t] block (i, j) of a bias broadcastable to [b, h, l, l]."""
  if bias.shape[-2] != 1:
    bias = lax.dynamic_slice_in_dim(bias, i * block, block, axis=-2)
  if bias.shape[-1] != 1:
    bias = lax.dynamic_slice_in_dim(bias, j * block, block, axis=-1)
  return bias.astype(_F32)


def _blocked(q, k, v, bias, scale, block):
  """Online-softmax causal attention; [b, l, h, d] -> [b, l, h, d] fp32."""
  batch, length, heads, head_dim = q.shape
  num_blocks = -(-length // block)
  padded = num_blocks * block
  # Padded keys sit after every real query, so the causal mask hides them
  # from real queries; padded queries are sliced off at the end.
  qb, kb, vb = (_to_blocks(x, padded, block) for x in (q, k, v))
  if bias is not None:
    widths = [(0, 0)] * (bias.ndim - 2) + [
        (0, padded - n if n != 1 else 0) for n in bias.shape[-2:]]
    bias = jnp.pad(bias, widths)
  offsets = jnp.arange(block)

  def key_step(i, q_i, carry, kv):
    """Folds key block j into the running softmax of query block i."""
    k_j, v_j, j = kv

    def update(carry):
      m, s, acc = carry  # [b, h, t], [b, h, t], [b, t, h, d]
      logits = jnp.einsum("bqhd,bkhd->bhqk", q_i, k_j,
                          preferred_element_type=_F32) * scale
      if bias is not None:
        logits = logits + _bias_block(bias, i, j, block)
      visible = (j * block + offsets)[None, :] <= (i * block + offsets)[:, None]
      logits = jnp.where(visible, logits, _MASK)  # mask before exp
      m_new = jnp.maximum(m, jnp.max(logits, axis=-1))
      p = jnp.exp(logits - m_new[..., None])  # [b, h, q, k]
      correction = jnp.exp(m - m_new)  # [b, h, q]
      s = s * correction + jnp.sum(p, axis=-1)
      pv = jnp.einsum("bhqk,bkhd->bqhd", p.astype(v_j.dtype), v_j,
                      preferred_element_type=_F32)
      acc = acc * jnp.swapaxes(correction, 1, 2)[..., None] + pv
      return m_new, s, acc

    # Blocks strictly above the diagonal are fully masked: skip their work.
    return lax.cond(j <= i, update, lambda c: c, carry), None

  @jax.checkpoint
  def query_block(_, x):
    q_i, i = x
    init = (jnp.full((batch, heads, block), _MASK, _F32),
            jnp.zeros((batch, heads, block), _F32),
            jnp.zeros((batch, block, heads, head_dim), _F32))
    step = jax.checkpoint(lambda c, kv: key_step(i, q_i, c, kv))
    (_, s, acc), _ = lax.scan(step, init, (kb, vb, jnp.arange(num_blocks)))
    # Every real query sees at least key 0, so s > 0.
    return None, acc / jnp.swapaxes(s, 1, 2)[..., None]

  _, out = lax.scan(query_block, None, (qb, jnp.arange(num_blocks)))
  out = jnp.moveaxis(out, 0, 1).reshape((batch, padded, heads, head_dim))
  return out[:, :length]


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                     impl: AttnImpl | str = AttnImpl.AUTO,
                     block_size: int = 128,
                     bias: jax.Array | None = None) -> jax.Array:
  """Causal softmax(q k^T / sqrt(d) + bias) v.

  Args:
    q: [b, l, h, d] queries.
    k: [b, l, h, d] keys.
    v: [b, l, h, d] values.
    impl: an `AttnImpl` or its value: "dense" (materialised logits),
      "blocked" (online softmax over blocks, O(b l h d + block^2) memory in
      forward and backward) or "auto" (dense for l <= DENSE_MAX_LENGTH, else
      blocked).
    block_size: query/key positions per block for "blocked"; lengths that
      are not multiples are padded.
    bias: optional additive logit bias broadcastable to [b, h, l, l].

  Returns:
    [b, l, h, d] in q's dtype.

  Raises:
    ValueError: on an unknown impl or mismatched shapes.
  """
  impl = parse_impl(impl, "attention impl")
  _check_inputs(q, k, v, block_size)
  batch, length, heads, _ = q.shape
  if bias is not None:
    try:
      jnp.broadcast_shapes(bias.shape, (batch, heads, length, length))
      ok = bias.ndim == 4
    except ValueError:
      ok = False
    if not ok:
      raise ValueError(f"bias of shape {bias.shape} must broadcast to "
                       f"[batch, heads, length, length] = "
                       f"{(batch, heads, length, length)} with 4 dims.")
  if impl is AttnImpl.AUTO:
    impl = AttnImpl.DENSE if length <= DENSE_MAX_LENGTH else AttnImpl.BLOCKED
  scale = 1.0 / math.sqrt(q.shape[-1])
  if impl is AttnImpl.DENSE:
    out = _dense(q, k, v, bias, scale)
  else:
    out = _blocked(q, k, v, bias, scale, min(block_size, length))
  return out.astype(q.dtype)


def cached_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                     offset: jax.Array | int) -> jax.Array:
  """Causal attention of new queries over a key/value cache (decoding).

  Query i sits at position offset + i and attends to cache slots
  0 .. offset + i; later slots (not yet written, or stale) are masked before
  the softmax, so their contents never matter. Logits and softmax run in
  fp32 as in `causal_attention`, and from a cache holding the keys of a
  whole sequence the result equals `causal_attention` on that sequence.

  Args:
    q: [b, lq, h, d] queries of the new tokens.
    k: [b, max_len, h, d] key cache, the new tokens' keys already written at
      slots offset .. offset + lq - 1.
    v: [b, max_len, h, d] value cache, likewise.
    offset: int32 scalar (may be traced), the position of the first query.

  Returns:
    [b, lq, h, d] in q's dtype.

  Raises:
    ValueError: on mismatched shapes.
  """
  if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape:
    raise ValueError(f"q must be [batch, lq, heads, head_dim] and k, v "
                     f"[batch, max_len, heads, head_dim], got q {q.shape}, "
                     f"k {k.shape}, v {v.shape}.")
  if (q.shape[0], q.shape[2], q.shape[3]) != (k.shape[0], k.shape[2],
                                              k.shape[3]):
    raise ValueError(f"q {q.shape} and the cache {k.shape} must agree in "
                     f"batch, heads and head_dim.")
  scale = 1.0 / math.sqrt(q.shape[-1])
  return _dense(q, k, v, None, scale, offset).astype(q.dtype)
