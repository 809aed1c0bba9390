"""Tests for ssm_icl.ops.flops: parameter counts and analytic FLOPs."""

from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn
from flax import traverse_util
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from ssm_icl.models import backbone
from ssm_icl.models import config as config_lib
from ssm_icl.ops import flops
from ssm_icl.ops import scan as scan_lib

_FAMILIES = ("transformer", "mamba", "s4", "s4_mamba", "hybrid",
             "mambaformer")


def _config(family="mamba", **kw):
  kw = dict(family=family, n_layer=2, d_model=16, n_head=2, d_in=3,
            n_positions=32) | kw
  return config_lib.ModelConfig(**kw)


def _abstract_params(config):
  model = backbone.ICLModel(config)
  abstract = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, 1, config.d_in)))["params"]
  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
  return jax.tree.map(lambda x: x.value if is_box(x) else x, abstract,
                      is_leaf=is_box)


def _xla_flops(config, seq_len, batch=1):
  """XLA's cost analysis of the (unoptimised, lowered) forward pass."""
  model = backbone.ICLModel(config)
  params = _abstract_params(config)
  tokens = jax.ShapeDtypeStruct((batch, seq_len, config.d_in), jnp.float32)
  lowered = jax.jit(lambda p, x: model.apply({"params": p}, x)).lower(
      params, tokens)
  return lowered.cost_analysis()["flops"]


class ParamCountTest(parameterized.TestCase):

  @parameterized.product(
      family=_FAMILIES, kw=({}, {"d_out": 3, "d_state": 8, "expand": 3}))
  def test_equals_initialised_params(self, family, kw):
    config = _config(family, **kw)
    params = _abstract_params(config)
    self.assertEqual(flops.param_count(config),
                     backbone.count_params(params))
    breakdown = flops.param_breakdown(config)
    for name, subtree in params.items():
      self.assertEqual(breakdown[name], backbone.count_params(subtree), name)
    self.assertEqual(sorted(breakdown), sorted(params))

  def test_custom_pattern_with_positions(self):
    config = _config("custom", pattern="mamba,attn,mlp,s4d,s4_mamba",
                     pos_emb="learned", dt_rank=3, mlp_ratio=2)
    self.assertEqual(flops.param_count(config),
                     backbone.count_params(_abstract_params(config)))

  @parameterized.named_parameters(
      # docs/PAPER.md §6 (read-in from d=20, unused embeddings excluded).
      ("transformer_l2", dict(family="transformer", n_layer=2,
                              n_positions=202), 425_473),
      ("transformer_l4", dict(family="transformer", n_layer=4,
                              n_positions=202), 822_017),
      ("mamba", dict(family="mamba", n_layer=4), 470_017),
      ("mambaformer", dict(family="mambaformer", n_layer=4), 485_889),
      ("hybrid", dict(family="hybrid", n_layer=4, n_positions=101),
       382_081),
      ("s4", dict(family="s4", n_layer=4), 153_601),
      ("s4_mamba", dict(family="s4_mamba", n_layer=4), 437_249),
      ("transformer_standard", dict(family="transformer", n_layer=12,
                                    d_model=256, n_positions=202),
       9_534_977),
      ("mamba_d256", dict(family="mamba", n_layer=24, d_model=256),
       10_524_673),
      ("mambaformer_d256", dict(family="mambaformer", n_layer=24,
                                d_model=256), 8_867_841),
      ("parity", dict(family="transformer", n_layer=12, d_model=256,
                      n_positions=600, d_in=10), 9_634_305),
      ("mqar", dict(family="transformer", n_layer=2, n_positions=260,
                    d_out=20), 435_348),
  )
  def test_reference_counts(self, kw, expected):
    kw = dict(d_model=128, d_in=20, d_out=1) | kw
    self.assertEqual(flops.param_count(config_lib.ModelConfig(**kw)),
                     expected)

  def test_reference_block_counts(self):
    config = _config(d_model=128)
    counts = {k: flops.block_params(config, k) for k in flops.BLOCK_KINDS}
    self.assertEqual(counts["attn"] + counts["mlp"], 198_272)
    self.assertEqual(counts["mamba"], 116_736)
    self.assertEqual(counts["attn"], 66_304)
    self.assertEqual(counts["s4d"], 37_632)
    self.assertEqual(counts["s4_mamba"], 108_544)

  @parameterized.parameters(*_FAMILIES)
  def test_matmul_params_are_the_matmul_kernels(self, family):
    config = _config(family)
    flat = traverse_util.flatten_dict(_abstract_params(config), sep="/")
    # Every "kernel" is a matmul weight except the depthwise conv's.
    kernels = sum(int(np.prod(v.shape)) for k, v in flat.items()
                  if k.endswith("/kernel") and "/conv1d/" not in k)
    self.assertEqual(flops.matmul_params(config), kernels)


class XlaAgreementTest(parameterized.TestCase):
  """Analytic forward FLOPs against XLA's count of the lowered program.

  XLA counts a while loop's body once, so the SEQUENTIAL scan (a lax.scan)
  cannot be compared; Mamba models use the ASSOCIATIVE schedule, which has no
  loops, and the analytic count of that schedule. S4 families are left out:
  XLA prices an FFT at 8 n log2 n and the exact GELU as its erf polynomial,
  where this module uses 2.5 n log2 n per real FFT and 8 per GELU.
  """

  @parameterized.named_parameters(
      ("transformer", dict(family="transformer", d_model=64, n_head=4,
                           n_positions=64, attn_impl="dense"), 64, 1),
      ("mlp_heavy", dict(family="custom", pattern="mlp,mlp,mlp",
                         d_model=64), 32, 2),
      ("mamba", dict(family="mamba", d_model=32,
                     scan_impl="associative"), 32, 1),
      ("mambaformer", dict(family="mambaformer", d_model=32, n_head=4,
                           scan_impl="associative", attn_impl="dense"), 32,
       2),
      ("hybrid", dict(family="hybrid", d_model=32, n_head=4,
                      scan_impl="associative", attn_impl="dense"), 32, 1),
  )
  def test_forward_matches_xla_within_10_percent(self, kw, seq_len, batch):
    config = _config(**kw)
    scan = "associative" if "mamba" in config.block_pattern else "sequential"
    ours = flops.model_flops(config, seq_len, batch=batch, scan=scan)
    xla = _xla_flops(config, seq_len, batch)
    self.assertBetween(ours["total"] / xla, 0.9, 1.1)
    self.assertEqual(ours["matmul"],
                     2 * seq_len * batch * flops.matmul_params(config))

  @parameterized.parameters(1, 2, 3, 7, 16, 33)
  def test_associative_scan_flops_match_xla(self, length):
    a = jax.ShapeDtypeStruct((length, 5), jnp.float32)
    # Only h is used, as in the selective scan.
    fn = lambda a, b: lax.associative_scan(scan_lib.combine, (a, b))[1]
    xla = jax.jit(fn).lower(a, a).cost_analysis().get("flops", 0.0)
    self.assertEqual(flops.associative_scan_flops(length) * 5, xla)


class ModelFlopsTest(parameterized.TestCase):

  def test_training_is_three_forwards_and_batch_is_linear(self):
    config = _config("mambaformer")
    one = flops.model_flops(config, 10)
    train = flops.model_flops(config, 10, batch=4, training=True)
    for name, value in one.items():
      self.assertEqual(train[name], 12 * value, name)

  def test_categories_sum_to_total(self):
    out = flops.model_flops(_config("custom", pattern="attn,mlp,mamba,s4d,"
                                    "s4_mamba"), 12)
    self.assertEqual(out["total"],
                     sum(out[c] for c in flops.CATEGORIES))
    self.assertTrue(all(out[c] > 0 for c in flops.CATEGORIES))

  def test_attention_and_scan_terms(self):
    d, t = 16, 10
    attn = flops.block_flops(_config(), "attn", t)
    causal = flops.block_flops(_config(), "attn", t, attention="causal")
    self.assertEqual(attn["attention"], 4 * t * t * d)
    self.assertEqual(causal["attention"], 2 * t * (t + 1) * d)
    self.assertEqual(attn["matmul"], causal["matmul"])
    mamba = flops.block_flops(_config(), "mamba", t)
    self.assertEqual(mamba["ssm"], 6 * t * 2 * d * 16)
    self.assertEqual(mamba["conv"], 2 * 4 * t * 2 * d)

  def test_duck_typed_config(self):
    config = _config("hybrid")
    fields = ("block_pattern", "d_model", "n_head", "d_in", "d_out",
              "n_positions", "uses_positions", "d_state", "d_conv", "expand",
              "resolved_dt_rank", "mlp_ratio")
    plain = type("Plain", (), {f: getattr(config, f) for f in fields})()
    self.assertEqual(flops.model_flops(plain, 8), flops.model_flops(config, 8))
    self.assertEqual(flops.param_count(plain), flops.param_count(config))

  @parameterized.named_parameters(
      ("seq_len", dict(seq_len=0), "seq_len must be a positive int, got 0"),
      ("batch", dict(batch=1.5), "batch must be a positive int, got 1.5"),
      ("attention", dict(attention="flash"), "Unknown attention 'flash'"),
      ("scan", dict(scan="chunked"), "Unknown scan 'chunked'"),
      ("positions", dict(seq_len=33), "seq_len=33 exceeds n_positions=32"),
  )
  def test_bad_arguments(self, kw, message):
    kw = dict(seq_len=8) | kw
    with self.assertRaisesRegex(ValueError, message):
      flops.model_flops(_config("transformer"), **kw)

  def test_bad_kind_and_length(self):
    with self.assertRaisesRegex(ValueError, "Unknown block kind 'rnn'"):
      flops.block_params(_config(), "rnn")
    with self.assertRaisesRegex(ValueError, "Unknown block kind 'rnn'"):
      flops.block_flops(_config(), "rnn", 4)
    with self.assertRaisesRegex(ValueError, "length must be a positive int"):
      flops.associative_scan_flops(0)
    with self.assertRaisesRegex(ValueError, "Unknown attention 'sparse'"):
      flops.block_flops(_config(), "attn", 4, attention="sparse")


if __name__ == "__main__":
  absltest.main()
