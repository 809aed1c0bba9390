"""Tests for ssm_icl.ops.attention: dense and blocked causal attention."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.ops import attention


def _qkv(length, batch=2, heads=3, head_dim=4, seed=0):
  rng = np.random.default_rng(seed)
  return tuple(rng.normal(size=(batch, length, heads, head_dim)).astype(
      np.float32) for _ in range(3))


def _np_attention(q, k, v, bias=None):
  """float64 causal softmax attention, [b, l, h, d]."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  if bias is not None:
    logits = logits + bias
  length = q.shape[1]
  logits = np.where(np.tril(np.ones((length, length), bool)), logits, -np.inf)
  logits -= logits.max(-1, keepdims=True)
  p = np.exp(logits)
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", p, v)


@functools.partial(jax.jit, static_argnames=("impl", "block_size"))
def _attend(q, k, v, bias, impl, block_size):
  return attention.causal_attention(q, k, v, impl=impl, block_size=block_size,
                                    bias=bias)


@functools.partial(jax.jit, static_argnames=("impl", "block_size"))
def _grads(q, k, v, bias, w, impl, block_size):
  def loss(q, k, v, bias):
    return jnp.sum(w * attention.causal_attention(
        q, k, v, impl=impl, block_size=block_size, bias=bias))
  return jax.grad(loss, argnums=(0, 1, 2, 3))(q, k, v, bias)


class CausalAttentionTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    # GPUs default to TF32 matmuls for fp32; compare the algorithms at full
    # fp32 precision on every platform.
    self.enter_context(jax.default_matmul_precision("float32"))

  @parameterized.parameters(
      ("dense", 8, 1), ("dense", 8, 37),
      ("blocked", 8, 1), ("blocked", 8, 37), ("blocked", 16, 32),
      ("blocked", 64, 37), ("auto", 8, 37))
  def test_matches_numpy(self, impl, block, length):
    q, k, v = _qkv(length, seed=length)
    out = _attend(q, k, v, None, impl, block)
    self.assertEqual(out.shape, q.shape)
    self.assertEqual(out.dtype, jnp.float32)
    np.testing.assert_allclose(out, _np_attention(q, k, v), rtol=1e-5,
                               atol=1e-5)

  @parameterized.parameters((1, 3, 37, 37), (2, 1, 37, 37), (1, 1, 1, 37))
  def test_bias_matches_numpy(self, *bias_shape):
    q, k, v = _qkv(37, seed=1)
    bias = np.random.default_rng(2).normal(size=bias_shape).astype(np.float32)
    want = _np_attention(q, k, v, bias)
    for impl in ("dense", "blocked"):
      np.testing.assert_allclose(_attend(q, k, v, bias, impl, 8), want,
                                 rtol=1e-5, atol=1e-5, err_msg=impl)

  def test_blocked_grads_match_dense(self):
    q, k, v = _qkv(21, seed=3)
    bias = np.random.default_rng(4).normal(size=(1, 3, 21, 21)).astype(
        np.float32)
    w = np.random.default_rng(5).normal(size=q.shape).astype(np.float32)
    dense = _grads(q, k, v, bias, w, "dense", 8)
    blocked = _grads(q, k, v, bias, w, "blocked", 8)
    chex.assert_tree_all_finite(blocked)
    chex.assert_trees_all_close(blocked, dense, rtol=1e-4, atol=1e-5)
    # Dense attention's gradient, checked against float64 finite differences
    # of the numpy reference along one random direction.
    direction = np.random.default_rng(6).normal(size=q.shape)
    eps = 1e-5
    f = lambda q: np.sum(w * _np_attention(q, k, v, bias))
    numeric = (f(q + eps * direction) - f(q - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(np.sum(dense[0] * direction), numeric,
                               rtol=1e-3)

  @parameterized.parameters("dense", "blocked")
  def test_causal(self, impl):
    q, k, v = _qkv(19, seed=7)
    t = 11
    base = _attend(q, k, v, None, impl, 4)
    for x in (q, k, v):
      x[:, t] += 3.0
    changed = _attend(q, k, v, None, impl, 4)
    np.testing.assert_allclose(changed[:, :t], base[:, :t], rtol=1e-6,
                               atol=1e-6)
    self.assertGreater(float(jnp.abs(changed[:, t] - base[:, t]).max()), 1e-2)

  @parameterized.parameters("dense", "blocked")
  def test_bf16_inputs(self, impl):
    q, k, v = (jnp.asarray(x, jnp.bfloat16) for x in _qkv(23, seed=8))
    out = _attend(q, k, v, None, impl, 8)
    self.assertEqual(out.dtype, jnp.bfloat16)
    want = _np_attention(*(np.asarray(x, np.float32) for x in (q, k, v)))
    np.testing.assert_allclose(np.asarray(out, np.float32), want, rtol=3e-2,
                               atol=3e-2)

  def test_auto_switches_to_blocked_for_long_inputs(self):
    q, k, v = _qkv(12)

    def has_loop(impl):
      hlo = jax.jit(functools.partial(attention.causal_attention,
                                      impl=impl)).lower(q, k, v).as_text()
      return "while" in hlo

    self.assertFalse(has_loop("dense"))
    self.assertTrue(has_loop("blocked"))
    self.assertFalse(has_loop("auto"))
    with absltest.mock.patch.object(attention, "DENSE_MAX_LENGTH", 8):
      self.assertTrue(has_loop("auto"))

  def test_blocked_grad_memory_far_below_dense(self):
    # Compile only: b=4, l=2048, 2 heads. One fp32 [b, h, l, l] logits array
    # is 128 MiB; the blocked gradient needs O(b l h d + block^2).
    shape = jax.ShapeDtypeStruct((4, 2048, 2, 16), jnp.float32)

    def grad_temp(impl):
      grad = jax.grad(lambda q, k, v: jnp.sum(attention.causal_attention(
          q, k, v, impl=impl, block_size=128)), argnums=(0, 1, 2))
      compiled = jax.jit(grad).lower(shape, shape, shape).compile()
      return compiled.memory_analysis().temp_size_in_bytes

    dense, blocked = grad_temp("dense"), grad_temp("blocked")
    logits = 4 * 2 * 2048 * 2048 * 4
    self.assertGreater(dense, logits)
    self.assertLess(blocked, logits / 8)
    self.assertLess(blocked, dense / 16)


class CausalAttentionErrorsTest(parameterized.TestCase):

  def test_unknown_impl(self):
    q, k, v = _qkv(4)
    with self.assertRaisesRegex(
        ValueError, "Unknown attention impl 'flash'.*'dense', 'blocked'"):
      attention.causal_attention(q, k, v, impl="flash")

  def test_rank(self):
    q = np.zeros((2, 4, 8), np.float32)
    with self.assertRaisesRegex(ValueError,
                                r"q must be \[batch, length, heads, head_dim"):
      attention.causal_attention(q, q, q)

  @parameterized.parameters(("k", 1), ("v", 2))
  def test_mismatched_shapes(self, name, index):
    qkv = list(_qkv(4))
    qkv[index] = np.zeros((2, 5, 3, 4), np.float32)
    with self.assertRaisesRegex(
        ValueError, rf"{name} must have q's shape \(2, 4, 3, 4\), got "
        r"\(2, 5, 3, 4\)"):
      attention.causal_attention(*qkv)

  @parameterized.parameters(0, -3, 2.0)
  def test_bad_block_size(self, block):
    q, k, v = _qkv(4)
    with self.assertRaisesRegex(ValueError, "block_size must be a positive"):
      attention.causal_attention(q, k, v, impl="blocked", block_size=block)

  @parameterized.parameters((2, 3, 4, 5), (3, 3, 4, 4), (4, 4))
  def test_bad_bias(self, *bias_shape):
    q, k, v = _qkv(4)
    with self.assertRaisesRegex(ValueError,
                                r"bias of shape .* must broadcast to"):
      attention.causal_attention(q, k, v, bias=np.zeros(bias_shape))


class CachedAttentionTest(absltest.TestCase):

  def test_prefill_then_steps_equal_causal_attention(self):
    q, k, v = _qkv(7)
    want = _np_attention(q, k, v)
    max_len = 9  # two slots never written: masked whatever they hold
    k_cache = np.full((2, max_len, 3, 4), 50.0, np.float32)
    v_cache = np.full((2, max_len, 3, 4), 50.0, np.float32)
    got = []
    for lo, hi in ((0, 4), (4, 5), (5, 7)):
      k_cache[:, lo:hi], v_cache[:, lo:hi] = k[:, lo:hi], v[:, lo:hi]
      got.append(attention.cached_attention(q[:, lo:hi], k_cache, v_cache,
                                            offset=jnp.int32(lo)))
    np.testing.assert_allclose(jnp.concatenate(got, 1), want, rtol=1e-5,
                               atol=1e-6)

  def test_mismatched_cache(self):
    q, k, _ = _qkv(3)
    with self.assertRaisesRegex(ValueError, "must agree in batch, heads"):
      attention.cached_attention(q, k[:, :, :2], k[:, :, :2], offset=0)


if __name__ == "__main__":
  absltest.main()
