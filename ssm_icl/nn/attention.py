"""Causal multi-head self-attention, GPT-2 / nanoGPT style.

  q, k, v = split(c_attn(x))       # fused [D, 3D] projection with bias
  y = softmax(q k^T / sqrt(hd) + causal mask) v    per head
  out = c_proj(y)                  # [D, D] with bias

The same module serves the Transformer (HF GPT-2 init) and the hybrids
(nanoGPT `CausalSelfAttention` inside the Mamba `MixerModel`, whose
`_init_weights` zeroes the biases). The attention core is
`ssm_icl.ops.attention.causal_attention`, which chooses between a dense and a
blocked online-softmax path for long sequences.
"""

from __future__ import annotations

import dataclasses
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
from ssm_icl.ops import attention as attention_ops

Dtype = Any


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
  """Hyperparameters of a `CausalSelfAttention` (`ModelConfig` holds one).

  To add an attention hyperparameter, add a field here (with its check in
  `__post_init__`); `ModelConfig` then accepts it as a flat key.

  Attributes:
    n_head: number of heads (d_model must be divisible by it).
    attn_impl: attention core, an `ops.attention.AttnImpl` (or its string
      value, parsed here).
    attn_block_size: query/key block length of the blocked core.
  """
  n_head: int = 8
  attn_impl: attention_ops.AttnImpl = attention_ops.AttnImpl.AUTO
  attn_block_size: int = 128

  def __post_init__(self):
    errors.check_positive_int("n_head", self.n_head)
    object.__setattr__(self, "attn_impl", errors.parse_enum(
        "attn_impl", self.attn_impl, attention_ops.AttnImpl))
    errors.check_positive_int("attn_block_size", self.attn_block_size)

  def head_dim(self, d_model: int) -> int:
    """d_model // n_head.

    Raises:
      UserError: if d_model is not divisible by n_head.
    """
    if d_model % self.n_head:
      raise errors.UserError(f"d_model={d_model} must be divisible by "
                             f"n_head={self.n_head}.")
    return d_model // self.n_head


@struct.dataclass
class AttentionCache:
  """The key/value cache of a `CausalSelfAttention` (a pytree).

  Attributes:
    k: [b, max_len, n_head, head_dim] keys of the tokens so far (slots from
      `index` on are unused).
    v: [b, max_len, n_head, head_dim] values, likewise.
    index: int32 scalar, the number of tokens seen (the next token's slot).
  """
  k: jax.Array
  v: jax.Array
  index: jax.Array


class CausalSelfAttention(nn.Module):
  """Causal multi-head self-attention with a fused qkv projection.

  Example: `CausalSelfAttention(d_model=64, config=AttentionConfig(n_head=4))`.

  Attributes:
    d_model: residual width D (= n_head * head_dim).
    config: the attention hyperparameters (heads, core, block size).
    n_layer: the config's n_layer, for GPT-2's c_proj init scaling.
    init_style: `inits.STYLE_GPT2` (N(0, 0.02), c_proj
      N(0, 0.02/sqrt(2 n_layer))) or `inits.STYLE_MAMBA` (PyTorch default
      weights; c_proj is *not* rescaled, as in the reference).
      Biases start at zero in both.
    dtype: compute dtype (the softmax runs in float32 inside the op).
    param_dtype: storage dtype of the parameters.
  """
  d_model: int
  config: AttentionConfig = AttentionConfig()
  n_layer: int = 1
  init_style: inits.InitStyle = inits.STYLE_GPT2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.nowrap
  def init_cache(self, batch: int, max_len: int) -> AttentionCache:
    """An empty cache for sequences of up to max_len tokens.

    Returns:
      An `AttentionCache` with k, v [batch, max_len, n_head, head_dim] zeros
      and index 0.
    """
    shape = (batch, max_len, self.config.n_head,
             self.config.head_dim(self.d_model))
    return AttentionCache(k=jnp.zeros(shape, self.dtype),
                          v=jnp.zeros(shape, self.dtype),
                          index=jnp.zeros((), jnp.int32))

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True,
               cache: Optional[AttentionCache] = None
               ) -> Union[jax.Array, tuple[jax.Array, AttentionCache]]:
    """Applies attention, to a whole sequence or continuing a cache.

    Args:
      x: [b, l, d_model] (already normalised) input.
      deterministic: unused (attention dropout is 0 in the paper).
      cache: optional keys and values of the tokens before x (decoding);
        x's are written at slots index .. index + l - 1, which must be below
        max_len (not checked under jit: later slots would be dropped).

    Returns:
      [b, l, d_model] in `dtype`; with a cache, (output, updated cache).
    """
    del deterministic
    c = self.config
    b, l, d = x.shape
    n_head, head_dim = c.n_head, c.head_dim(d)
    qkv_k, qkv_b = layers.linear_inits(self.init_style, d, self.n_layer,
                                       residual=False)
    # The reference scales the GPT-2 c_proj but not the hybrid one.
    proj_k, proj_b = layers.linear_inits(
        self.init_style, d, self.n_layer,
        residual=self.init_style == inits.STYLE_GPT2)
    dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    qkv = layers.dense(3 * d, (axes.EMBED, axes.HEADS), kernel_init=qkv_k,
                       bias_init=qkv_b, name="c_attn", **dense)(x)
    q, k, v = (t.reshape(b, l, n_head, head_dim)
               for t in jnp.split(qkv, 3, axis=-1))  # [b, l, h, hd]
    if cache is None:
      y = attention_ops.causal_attention(q, k, v, impl=c.attn_impl,
                                         block_size=c.attn_block_size)
    else:
      start = (0, cache.index, 0, 0)
      cache = AttentionCache(
          k=lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype), start),
          v=lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype), start),
          index=cache.index + l)
      y = attention_ops.cached_attention(q, cache.k, cache.v,
                                         offset=start[1])
    y = y.reshape(b, l, d)
    out = layers.dense(d, (axes.HEADS, axes.EMBED), kernel_init=proj_k,
                       bias_init=proj_b, name="c_proj", **dense)(y)
    return out if cache is None else (out, cache)
