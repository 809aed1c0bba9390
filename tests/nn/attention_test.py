"""Tests for ssm_icl.nn.attention."""

import math

from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl import errors
from ssm_icl.nn import attention
from ssm_icl.nn import axes
from ssm_icl.nn import initializers as inits
from ssm_icl.ops import attention as attention_ops

_D = 16
_HEADS2 = attention.AttentionConfig(n_head=2)
_HEADS4 = attention.AttentionConfig(n_head=4)


def _reference(p, x, n_head):
  """nanoGPT causal self-attention in float64 numpy."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  x = np.asarray(x, np.float64)
  b, l, d = x.shape
  hd = d // n_head
  qkv = x @ p["c_attn"]["kernel"] + p["c_attn"]["bias"]
  q, k, v = (a.reshape(b, l, n_head, hd).transpose(0, 2, 1, 3)
             for a in np.split(qkv, 3, axis=-1))
  logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
  logits = np.where(np.tril(np.ones((l, l), bool)), logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  y = (w @ v).transpose(0, 2, 1, 3).reshape(b, l, d)
  return y @ p["c_proj"]["kernel"] + p["c_proj"]["bias"]


def _init(module, x):
  variables = module.init(jax.random.key(0), x)
  return variables, nn.meta.unbox(variables)["params"]


class CausalSelfAttentionTest(parameterized.TestCase):

  @parameterized.named_parameters(("dense", "dense", 128),
                                  ("blocked", "blocked", 4))
  def test_matches_numpy(self, impl, block_size):
    x = jax.random.normal(jax.random.key(1), (2, 7, _D))
    attn = attention.CausalSelfAttention(
        d_model=_D, config=attention.AttentionConfig(
            n_head=4, attn_impl=impl, attn_block_size=block_size),
        init_style=inits.STYLE_MAMBA)
    _, p = _init(attn, x)
    # Non-zero biases so that their placement is checked too.
    p = jax.tree.map(
        lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape), p)
    np.testing.assert_allclose(attn.apply({"params": p}, x),
                               _reference(p, x, 4), rtol=1e-4, atol=1e-5)

  def test_is_causal(self):
    x = jax.random.normal(jax.random.key(1), (1, 6, _D))
    attn = attention.CausalSelfAttention(d_model=_D, config=_HEADS2)
    variables = attn.init(jax.random.key(0), x)
    y = attn.apply(variables, x)
    y2 = attn.apply(variables, x.at[:, 3].set(5.0))
    np.testing.assert_allclose(y[:, :3], y2[:, :3], rtol=1e-6, atol=1e-7)
    self.assertGreater(np.abs(y[:, 3:] - y2[:, 3:]).max(), 1e-4)

  def test_gpt2_init(self):
    attn = attention.CausalSelfAttention(d_model=64, n_layer=2,
                                         init_style=inits.STYLE_GPT2)
    variables, p = _init(attn, jnp.zeros((1, 2, 64)))
    np.testing.assert_allclose(np.std(p["c_attn"]["kernel"]), 0.02,
                               rtol=0.05)
    np.testing.assert_allclose(np.std(p["c_proj"]["kernel"]), 0.01,
                               rtol=0.05)
    for name in ("c_attn", "c_proj"):
      np.testing.assert_array_equal(p[name]["bias"], 0.0)
    specs = nn.get_partition_spec(variables)["params"]
    self.assertEqual(tuple(specs["c_attn"]["kernel"]),
                     (axes.EMBED, axes.HEADS))
    self.assertEqual(tuple(specs["c_proj"]["kernel"]),
                     (axes.HEADS, axes.EMBED))
    self.assertEqual(p["c_attn"]["kernel"].shape, (64, 192))

  def test_mamba_style_init_zero_biases_no_rescale(self):
    attn = attention.CausalSelfAttention(d_model=64, n_layer=16,
                                         init_style=inits.STYLE_MAMBA)
    _, p = _init(attn, jnp.zeros((1, 2, 64)))
    for name in ("c_attn", "c_proj"):
      v = np.abs(p[name]["kernel"]).max()
      self.assertTrue(0.9 / 8 < v <= 1 / 8, (name, v))
      np.testing.assert_array_equal(p[name]["bias"], 0.0)

  def test_bfloat16(self):
    x = jax.random.normal(jax.random.key(1), (2, 5, _D))
    attn = attention.CausalSelfAttention(d_model=_D, config=_HEADS4,
                                         dtype=jnp.bfloat16)
    variables = attn.init(jax.random.key(0), x)
    y = attn.apply(variables, x)
    self.assertEqual(y.dtype, jnp.bfloat16)
    want = attention.CausalSelfAttention(d_model=_D, config=_HEADS4).apply(
        variables, x)
    np.testing.assert_allclose(y.astype(jnp.float32), want, atol=3e-2)

  def test_heads_must_divide_width(self):
    attn = attention.CausalSelfAttention(
        d_model=_D, config=attention.AttentionConfig(n_head=3))
    with self.assertRaisesRegex(ValueError,
                                "d_model=16 must be divisible by n_head=3"):
      attn.init(jax.random.key(0), jnp.zeros((1, 2, _D)))


class AttentionConfigTest(parameterized.TestCase):

  def test_parses_the_impl_and_splits_heads(self):
    c = attention.AttentionConfig(n_head=4, attn_impl="blocked")
    self.assertIs(c.attn_impl, attention_ops.AttnImpl.BLOCKED)
    self.assertEqual(c.head_dim(32), 8)

  @parameterized.named_parameters(
      ("n_head", dict(n_head=0), "n_head must be positive, got 0"),
      ("impl", dict(attn_impl="flash"),
       r"Unknown attn_impl 'flash'; expected one of \['auto', 'dense', "
       r"'blocked'\]"),
      ("block", dict(attn_block_size=None), "attn_block_size must be an int"),
  )
  def test_bad_values_name_the_field(self, kwargs, message):
    with self.assertRaisesRegex(errors.UserError, message):
      attention.AttentionConfig(**kwargs)


if __name__ == "__main__":
  absltest.main()
