"""Tests for ssm_icl.models.config."""

import dataclasses
import enum
import json

from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import ml_collections

from ssm_icl import models
from ssm_icl import ops
from ssm_icl.models import config as config_lib
from ssm_icl.nn import blocks
from ssm_icl.nn import layers
from ssm_icl.ops import scan as scan_lib

ModelConfig = config_lib.ModelConfig


def _value(x):
  return x.value if isinstance(x, enum.Enum) else x


class ModelConfigTest(parameterized.TestCase):

  def test_defaults(self):
    cfg = ModelConfig()
    self.assertEqual(cfg.family, "mamba")
    self.assertEqual(cfg.block_pattern, ("mamba",) * 4)
    self.assertEqual(cfg.d_inner, 256)
    self.assertEqual(cfg.resolved_dt_rank, 8)
    self.assertFalse(cfg.uses_positions)
    self.assertEqual(cfg.init_style, "mamba")
    self.assertIs(cfg.compute_dtype, jnp.float32)

  def test_from_config_dict(self):
    cd = ml_collections.ConfigDict({
        "family": "transformer", "n_layer": 2, "d_model": 64,
        "dtype": "bfloat16", "chunk_size": 8})
    cfg = ModelConfig.from_config_dict(cd)
    self.assertEqual(cfg.block_pattern, ("attn", "mlp") * 2)
    self.assertTrue(cfg.uses_positions)
    self.assertEqual(cfg.init_style, "gpt2")
    self.assertIs(cfg.compute_dtype, jnp.bfloat16)
    self.assertEqual(ModelConfig.from_config_dict(cfg.to_dict()), cfg)
    self.assertIs(ModelConfig.from_config_dict(cfg), cfg)

  def test_unknown_keys_are_named(self):
    with self.assertRaisesRegex(ValueError,
                                r"Unknown model config keys \['d_modle', "
                                r"'heads'\]"):
      ModelConfig.from_config_dict({"d_modle": 3, "heads": 2, "n_layer": 1})

  def test_not_a_mapping(self):
    with self.assertRaisesRegex(TypeError, "got list"):
      ModelConfig.from_config_dict([("family", "mamba")])

  def test_custom_pattern_string_and_tuple_agree(self):
    a = ModelConfig(family="custom", pattern="mamba, attn,mlp")
    b = ModelConfig(family="custom", pattern=("mamba", "attn", "mlp"))
    self.assertEqual(a, b)
    self.assertEqual(hash(a), hash(b))
    self.assertEqual(a.block_pattern, ("mamba", "attn", "mlp"))
    self.assertFalse(a.uses_positions)
    self.assertTrue(a.replace(pos_emb="learned").uses_positions)

  def test_hybrid_and_mambaformer_positions(self):
    self.assertTrue(ModelConfig(family="hybrid").uses_positions)
    self.assertFalse(ModelConfig(family="mambaformer").uses_positions)
    self.assertFalse(ModelConfig(family="hybrid",
                                 pos_emb="none").uses_positions)

  def test_forced_init_style(self):
    self.assertEqual(ModelConfig(family="mamba", init="gpt2").init_style,
                     "gpt2")
    self.assertEqual(ModelConfig(family="transformer",
                                 init="mamba").init_style, "mamba")

  def test_block_settings(self):
    cfg = ModelConfig(family="hybrid", d_model=32, n_layer=3,
                      param_dtype="bfloat16", dt_rank=5)
    s = cfg.block_settings()
    self.assertEqual((s.d_model, s.n_layer, s.mixers.mamba.dt_rank),
                     (32, 3, 5))
    self.assertIs(s.param_dtype, jnp.bfloat16)
    self.assertEqual(s.init_style, "mamba")
    self.assertEqual(cfg.resolved_dt_rank, 5)

  @parameterized.named_parameters(
      ("family", dict(family="rnn"), r"Unknown family 'rnn'.*'mambaformer'"),
      ("block", dict(family="custom", pattern="mamba,lstm"),
       r"Unknown block kind\(s\) \['lstm'\] in pattern"),
      ("custom_without_pattern", dict(family="custom"),
       "pattern is required for family='custom'"),
      ("pattern_for_family", dict(family="mamba", pattern="mamba"),
       "only used with family='custom'"),
      ("empty_pattern", dict(family="custom", pattern=""),
       "pattern must name at least one block"),
      ("heads", dict(family="transformer", d_model=30, n_head=8),
       "d_model=30 must be divisible by n_head=8"),
      ("n_layer", dict(n_layer=0), "n_layer must be positive, got 0"),
      ("d_model", dict(d_model=-4), "d_model must be positive, got -4"),
      ("d_in", dict(d_in=0), "d_in must be positive"),
      ("n_positions", dict(n_positions=0), "n_positions must be positive"),
      ("d_state", dict(d_state=0), "d_state must be positive"),
      ("chunk_size", dict(chunk_size=0), "chunk_size must be positive"),
      ("dt_rank", dict(dt_rank=0), "dt_rank must be positive"),
      ("s4_state", dict(family="s4", d_state=1),
       "d_state=1 must be at least 2 for S4 blocks"),
      ("scan_impl", dict(scan_impl="parallel"),
       r"Unknown scan_impl 'parallel'.*'sequential'"),
      ("attn_impl", dict(attn_impl="flash"),
       r"Unknown attn_impl 'flash'.*'blocked'"),
      ("pos_emb", dict(pos_emb="rotary"), r"Unknown pos_emb 'rotary'"),
      ("dtype", dict(dtype="float8"), r"Unknown dtype 'float8'"),
      ("param_dtype", dict(param_dtype="int8"), r"Unknown param_dtype 'int8'"),
      ("init", dict(init="xavier"), r"Unknown init 'xavier'"),
      ("dropout", dict(dropout=1.0), r"dropout must be a number in \[0, 1\)"),
      ("s4_mamba_dropout", dict(s4_mamba_dropout=-0.1),
       "s4_mamba_dropout must be a number"),
      ("dt_min", dict(dt_min=0.0), "dt_min must be a positive number"),
      ("dt_order", dict(dt_min=0.5, dt_max=0.1),
       "dt_min=0.5 must not exceed dt_max=0.1"),
      ("norm", dict(norm="batch"), r"Unknown norm 'batch'.*'rms'"),
      ("vocab_size", dict(vocab_size=0), "vocab_size must be positive"),
  )
  def test_bad_values_raise(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      ModelConfig(**kwargs)

  @parameterized.named_parameters(
      ("float_int", dict(d_model=12.0), "d_model must be an int, got 12.0"),
      ("bool_int", dict(n_layer=True), "n_layer must be an int"),
      ("remat", dict(remat="yes"), "remat must be a bool, got 'yes'"),
      ("residual_in_fp32", dict(residual_in_fp32=1),
       "residual_in_fp32 must be a bool"),
  )
  def test_bad_types_raise(self, kwargs, message):
    with self.assertRaisesRegex(TypeError, message):
      ModelConfig(**kwargs)

  def test_language_model_and_residual_dtype(self):
    cfg = ModelConfig(norm="rms", vocab_size=50, dtype="bfloat16")
    self.assertTrue(cfg.is_language_model)
    self.assertFalse(ModelConfig().is_language_model)
    self.assertIs(cfg.residual_dtype, jnp.float32)
    self.assertIs(cfg.replace(residual_in_fp32=False).residual_dtype,
                  jnp.bfloat16)
    self.assertEqual(cfg.block_settings().norm, "rms")

  def test_mamba_does_not_need_divisible_heads(self):
    self.assertEqual(ModelConfig(family="mamba", d_model=20, n_head=8).d_model,
                     20)

  def test_every_sub_config_field_is_a_flat_key(self):
    # Why one dataclass is enough for a new block hyperparameter: the flat
    # keys are derived from the sub-configs' fields, nothing lists them.
    subs = blocks.MixerConfigs()
    names = {f.name for sub in (subs.mamba, subs.attention, subs.s4, subs.mlp)
             for f in dataclasses.fields(sub)}
    self.assertEqual(set(blocks.MixerConfigs.flat_keys()), names)
    cfg = ModelConfig()
    for name in names:
      self.assertEqual(cfg.to_dict()[name], _value(getattr(cfg, name)))
    self.assertEqual(ModelConfig(**cfg.to_dict()), cfg)

  def test_flat_keys_reach_every_sub_config(self):
    cfg = ModelConfig(d_state=8, n_head=2, mlp_ratio=2, scan_impl="chunked",
                      s4_mamba_dropout=0.0)
    m = cfg.mixers
    self.assertEqual((m.mamba.d_state, m.s4.d_state), (8, 8))
    self.assertEqual((m.attention.n_head, m.mlp.mlp_ratio), (2, 2))
    self.assertIs(m.mamba.scan_impl, scan_lib.ScanImpl.CHUNKED)
    self.assertEqual(cfg.replace(d_state=4).mixers.s4.d_state, 4)
    self.assertEqual(cfg.block_settings().mixers, m)

  def test_sub_configs_given_apart_round_trip(self):
    cfg = ModelConfig(family="custom", pattern="mamba,s4d",
                      mixers={"s4": {"d_state": 4}})
    self.assertEqual((cfg.mixers.mamba.d_state, cfg.mixers.s4.d_state),
                     (16, 4))
    d = cfg.to_dict()
    self.assertNotIn("d_state", d)
    self.assertEqual(d["mixers"], {"mamba": {"d_state": 16},
                                   "s4": {"d_state": 4}})
    self.assertEqual(ModelConfig.from_config_dict(d), cfg)
    with self.assertRaisesRegex(ValueError, r"d_state differs .*mixers\."):
      _ = cfg.d_state
    # A flat key overrides both again.
    self.assertEqual(cfg.replace(d_state=8).to_dict()["d_state"], 8)

  def test_enums_are_parsed_and_saved_as_strings(self):
    cfg = ModelConfig(family="custom", pattern="attn,mlp", attn_impl="dense",
                      norm="rms", init="gpt2", pos_emb="learned")
    self.assertIs(cfg.mixers.attention.attn_impl, ops.AttnImpl.DENSE)
    self.assertIs(cfg.norm, layers.NormKind.RMS)
    self.assertIs(cfg.init, models.ModelInit.GPT2)
    self.assertIs(cfg.pos_emb, models.PosEmb.LEARNED)
    self.assertEqual(cfg.pattern, (blocks.BlockKind.ATTN, blocks.BlockKind.MLP))
    d = cfg.to_dict()
    self.assertEqual((d["attn_impl"], d["norm"], d["init"], d["pos_emb"],
                      d["pattern"]),
                     ("dense", "rms", "gpt2", "learned", ["attn", "mlp"]))
    self.assertEqual(json.loads(json.dumps(d)), d)

  def test_bad_mixers_are_named(self):
    with self.assertRaisesRegex(ValueError, r"Unknown mixers keys \['ssm'\]"):
      ModelConfig(mixers={"ssm": {}})
    with self.assertRaisesRegex(ValueError,
                                r"Unknown mixers.mamba keys \['n_head'\]"):
      ModelConfig(mixers={"mamba": {"n_head": 2}})

  def test_is_frozen(self):
    cfg = ModelConfig()
    with self.assertRaises(Exception):
      cfg.d_model = 3  # pytype: disable=not-writable


if __name__ == "__main__":
  absltest.main()
