"""Tests for ssm_icl.models.convert that need neither torch nor transformers.

Numerical agreement with the PyTorch models is in interop_test.py; here:
name and layout mapping, exact round trips, errors, files and dtypes.
"""

from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.models import backbone
from ssm_icl.models import config as config_lib
from ssm_icl.models import convert
from ssm_icl.nn import attention
from ssm_icl.nn import layers
from ssm_icl.nn import mamba
from ssm_icl.nn import s4

_D, _D_IN = 16, 3
_FAMILIES = ("transformer", "mamba", "s4", "s4_mamba", "hybrid",
             "mambaformer")


def _config(family="mamba", **kw):
  kw = dict(family=family, n_layer=2, d_model=_D, n_head=2, d_in=_D_IN,
            d_out=1, n_positions=8) | kw
  return config_lib.ModelConfig(**kw)


def _random_like(abstract, seed):
  """Random numpy arrays with the shapes and dtypes of an abstract tree."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda a: rng.normal(size=a.shape).astype(a.dtype), abstract)


def _params(config, seed=0):
  """Random params of ICLModel(config) (no init compile)."""
  model = backbone.ICLModel(config)
  abstract = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, 1, config.d_in)))["params"]
  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
  abstract = jax.tree.map(lambda x: x.value if is_box(x) else x, abstract,
                          is_leaf=is_box)
  return _random_like(abstract, seed)


def _assert_trees_equal(a, b):
  fa = traverse_util.flatten_dict(a, sep="/")
  fb = traverse_util.flatten_dict(b, sep="/")
  assert sorted(fa) == sorted(fb), (sorted(fa), sorted(fb))
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]),
                                  err_msg=k)


def _assert_dicts_equal(a, b):
  assert sorted(a) == sorted(b), (sorted(a), sorted(b))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


class RoundTripTest(parameterized.TestCase):

  @parameterized.product(family=_FAMILIES, scan_layers=(False, True))
  def test_reference_round_trip_is_exact(self, family, scan_layers):
    config = _config(family, scan_layers=scan_layers)
    params = _params(config)
    sd = convert.export_state_dict(config, params)
    loaded = convert.load_state_dict(config, sd)
    _assert_trees_equal(loaded, params)
    _assert_dicts_equal(convert.export_state_dict(config, loaded), sd)

  @parameterized.named_parameters(
      ("hf_gpt2", "transformer", "hf_gpt2"),
      ("hf_mamba", "mamba", "hf_mamba"),
      ("mamba_ssm", "mamba", "mamba_ssm"),
  )
  def test_backbone_source_round_trip(self, family, source):
    config = _config(family)
    params = _params(config, seed=1)
    sd = convert.export_state_dict(config, params, target=source)
    self.assertFalse([k for k in sd if "read_" in k])
    template = _params(config, seed=2)
    loaded = convert.load_state_dict(config, sd, source=source,
                                     params={"params": template})
    # The backbone comes from sd, read-in/read-out from the template.
    for name in ("read_in", "read_out"):
      _assert_trees_equal(loaded[name], template[name])
      loaded[name] = params[name]
    _assert_trees_equal(loaded, params)
    _assert_dicts_equal(
        convert.export_state_dict(config, loaded, target=source), sd)

  def test_scan_layers_load_equals_stacked_loop_load(self):
    loop = _config("mambaformer", n_layer=4)
    stacked = loop.replace(scan_layers=True)
    sd = convert.export_state_dict(loop, _params(loop))
    _assert_trees_equal(
        convert.load_state_dict(stacked, sd),
        backbone.stack_layers(convert.load_state_dict(loop, sd), loop))
    self.assertIn(backbone.SCANNED, convert.load_state_dict(stacked, sd))

  def test_boxed_and_wrapped_params_export(self):
    config = _config("mamba", n_layer=1)
    params = _params(config)
    abstract = jax.eval_shape(backbone.ICLModel(config).init,
                              jax.random.key(0), jnp.zeros((1, 1, _D_IN)))
    flat = traverse_util.flatten_dict(params, sep="/")
    # Boxes as `init` returns them, holding the random values.
    boxed = traverse_util.unflatten_dict({
        k: box.replace_boxed(flat[k]) for k, box in
        traverse_util.flatten_dict(abstract["params"], sep="/").items()},
        sep="/")
    self.assertIsInstance(boxed["ln_f"]["scale"], nn.LogicallyPartitioned)
    _assert_dicts_equal(
        convert.export_state_dict(config, {"params": boxed}),
        convert.export_state_dict(config, params))

  def test_param_dtype_is_applied(self):
    config = _config("mamba", n_layer=1, param_dtype="bfloat16")
    sd = convert.export_state_dict(_config("mamba", n_layer=1),
                                   _params(_config("mamba", n_layer=1)))
    params = convert.load_state_dict(config, sd)
    mixer = params["blocks_0"]["mixer"]
    self.assertEqual(mixer["in_proj"]["kernel"].dtype, jnp.bfloat16)
    # The SSM parameters stay float32 whatever param_dtype says.
    self.assertEqual(mixer["A_log"].dtype, jnp.float32)
    self.assertEqual(mixer["dt_proj"]["bias"].dtype, jnp.float32)


class LayoutTest(parameterized.TestCase):

  def test_mamba_names_and_transposes(self):
    config = _config("mamba", n_layer=1)
    params = _params(config)
    sd = convert.export_state_dict(config, params)
    mixer = params["blocks_0"]["mixer"]
    p = "_backbone.layers.0."
    np.testing.assert_array_equal(sd[p + "mixer.in_proj.weight"],
                                  mixer["in_proj"]["kernel"].T)
    conv = sd[p + "mixer.conv1d.weight"]
    self.assertEqual(conv.shape, (2 * _D, 1, 4))
    np.testing.assert_array_equal(conv[:, 0, :], mixer["conv1d"]["kernel"].T)
    np.testing.assert_array_equal(sd[p + "mixer.A_log"], mixer["A_log"])
    np.testing.assert_array_equal(sd[p + "norm.weight"],
                                  params["blocks_0"]["norm"]["scale"])
    np.testing.assert_array_equal(sd["_backbone.norm_f.bias"],
                                  params["ln_f"]["bias"])
    np.testing.assert_array_equal(sd["_read_in.weight"],
                                  params["read_in"]["kernel"].T)

  def test_gpt2_conv1d_weights_are_not_transposed(self):
    config = _config("transformer", n_layer=1)
    params = _params(config)
    sd = convert.export_state_dict(config, params, target="hf_gpt2")
    np.testing.assert_array_equal(sd["h.0.attn.c_attn.weight"],
                                  params["blocks_0"]["mixer"]["c_attn"]
                                  ["kernel"])
    np.testing.assert_array_equal(sd["h.0.mlp.c_proj.weight"],
                                  params["blocks_1"]["mixer"]["c_proj"]
                                  ["kernel"])
    np.testing.assert_array_equal(sd["h.0.ln_2.bias"],
                                  params["blocks_1"]["norm"]["bias"])
    np.testing.assert_array_equal(sd["wpe.weight"], params["wpe"])

  def test_hybrid_attention_is_linear_and_wpe_top_level(self):
    config = _config("hybrid")
    params = _params(config)
    sd = convert.export_state_dict(config, params)
    np.testing.assert_array_equal(
        sd["_backbone.layers.0.mixer.c_attn.weight"],
        params["blocks_0"]["mixer"]["c_attn"]["kernel"].T)
    np.testing.assert_array_equal(sd["wpe.weight"], params["wpe"])
    self.assertIn("_backbone.layers.1.mixer.A_log", sd)

  def test_s4_output_linear_is_a_pointwise_conv(self):
    config = _config("s4", n_layer=1)
    params = _params(config)
    sd = convert.export_state_dict(config, params)
    w = sd["_backbone.layers.0.mixer.s4.output_linear.0.weight"]
    self.assertEqual(w.shape, (2 * _D, _D, 1))
    np.testing.assert_array_equal(
        w[:, :, 0], params["blocks_0"]["mixer"]["output_linear"]["kernel"].T)
    self.assertEqual(sd["_backbone.layers.0.mixer.s4.kernel.C"].shape,
                     (_D, 8, 2))

  def test_mambaformer_leading_block_is_layer_zero(self):
    config = _config("mambaformer", n_layer=4)
    sd = convert.export_state_dict(config, _params(config))
    kinds = ["mamba" if f"_backbone.layers.{i}.mixer.A_log" in sd else "attn"
             for i in range(5)]
    self.assertEqual(kinds, ["mamba", "attn", "mamba", "attn", "mamba"])
    self.assertNotIn("_backbone.layers.5.norm.weight", sd)

  def test_legacy_s4d_name_loads(self):
    config = _config("s4_mamba", n_layer=1)
    sd = convert.export_state_dict(config, _params(config))
    legacy = {k.replace(".S4DMamba.", ".S4D."): v for k, v in sd.items()}
    _assert_trees_equal(convert.load_state_dict(config, legacy),
                        convert.load_state_dict(config, sd))

  def test_ignored_keys_and_include_unused(self):
    for family, name, rows in (
        ("transformer", "_backbone.wte.weight", convert.GPT2_VOCAB),
        ("mamba", "_backbone.embedding.weight", 1)):
      config = _config(family, n_layer=1)
      params = _params(config)
      sd = convert.export_state_dict(config, params, include_unused=True)
      self.assertEqual(sd[name].shape, (rows, _D))
      if family == "transformer":
        sd["_backbone.h.0.attn.bias"] = np.ones((1, 1, 8, 8), np.float32)
        sd["_backbone.h.0.attn.masked_bias"] = np.full((), -1e4, np.float32)
      _assert_trees_equal(convert.load_state_dict(config, sd), params)

  def test_prefixes(self):
    config = _config("mamba", n_layer=1)
    params = _params(config)
    sd = convert.export_state_dict(config, params, target="mamba_ssm",
                                   prefix="backbone.")
    self.assertIn("backbone.layers.0.mixer.D", sd)
    sd["lm_head.weight"] = np.zeros((4, _D), np.float32)
    sd["backbone.embedding.weight"] = np.zeros((4, _D), np.float32)
    auto = convert.load_state_dict(config, sd, source="mamba_ssm",
                                   params=params)
    _assert_trees_equal(auto, params)
    moved = {"model." + k: v for k, v in sd.items() if "lm_head" not in k}
    explicit = convert.load_state_dict(config, moved, source="mamba_ssm",
                                       params=params,
                                       prefix="model.backbone.")
    _assert_trees_equal(explicit, params)

  def test_guess_source(self):
    self.assertEqual(convert.guess_source(["_backbone.h.0.ln_1.weight"]),
                     "reference")
    self.assertEqual(convert.guess_source(["transformer.h.0.ln_1.weight"]),
                     "hf_gpt2")
    self.assertEqual(convert.guess_source(["backbone.embeddings.weight"]),
                     "hf_mamba")
    self.assertEqual(convert.guess_source(["layers.0.mixer.D"]), "mamba_ssm")
    self.assertIsNone(convert.guess_source(["w"]))


class ErrorTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.config = _config("mamba", n_layer=1)
    self.params = _params(self.config)
    self.sd = convert.export_state_dict(self.config, self.params)

  def test_missing_key(self):
    del self.sd["_backbone.layers.0.mixer.x_proj.weight"]
    with self.assertRaisesRegex(
        ValueError, r"missing keys \(1\): _backbone\.layers\.0\.mixer\."
        r"x_proj\.weight"):
      convert.load_state_dict(self.config, self.sd)

  def test_unexpected_key(self):
    self.sd["_backbone.layers.1.norm.weight"] = np.ones(_D, np.float32)
    with self.assertRaisesRegex(
        ValueError, r"unexpected keys \(1\): _backbone\.layers\.1\.norm"):
      convert.load_state_dict(self.config, self.sd)

  def test_misshaped_key_lists_both_shapes(self):
    key = "_backbone.layers.0.mixer.in_proj.weight"
    self.sd[key] = self.sd[key].T
    with self.assertRaisesRegex(
        ValueError, r"mis-shaped keys \(1\): _backbone\.layers\.0\.mixer\."
        r"in_proj\.weight: expected \(64, 16\), found \(16, 64\)"):
      convert.load_state_dict(self.config, self.sd)

  def test_wrong_source_is_named(self):
    with self.assertRaisesRegex(ValueError,
                                "keys look like source='reference'"):
      convert.load_state_dict(self.config, self.sd, source="mamba_ssm",
                              params=self.params)

  def test_unknown_source(self):
    with self.assertRaisesRegex(ValueError, "Unknown source/target 'gpt3'"):
      convert.load_state_dict(self.config, self.sd, source="gpt3")

  def test_backbone_source_needs_params(self):
    sd = convert.export_state_dict(self.config, self.params,
                                   target="hf_mamba")
    with self.assertRaisesRegex(ValueError, r"'read_in/kernel'.*pass params="):
      convert.load_state_dict(self.config, sd, source="hf_mamba")

  def test_template_params_must_fit(self):
    sd = convert.export_state_dict(self.config, self.params,
                                   target="hf_mamba")
    bad = dict(self.params, read_in={"kernel": np.zeros((2, 2)),
                                     "bias": np.zeros(_D)})
    with self.assertRaisesRegex(ValueError,
                                r"params has no 'read_in/kernel' of shape"):
      convert.load_state_dict(self.config, sd, source="hf_mamba", params=bad)

  @parameterized.named_parameters(
      ("hf_mamba_hybrid", "hybrid", "hf_mamba", "holds only Mamba blocks"),
      ("gpt2_mamba", "mamba", "hf_gpt2", "holds GPT-2 layers"),
  )
  def test_source_cannot_hold_pattern(self, family, source, message):
    config = _config(family)
    with self.assertRaisesRegex(ValueError, message):
      convert.export_state_dict(config, _params(config), target=source)

  def test_mlp_in_mixer_layout_is_refused(self):
    config = _config("custom", pattern="mamba,mlp")
    with self.assertRaisesRegex(ValueError,
                                "Block kind 'mlp' .blocks_1. has no"):
      convert.export_state_dict(config, _params(config))

  def test_bad_values(self):
    with self.assertRaisesRegex(ValueError, r"bad entries: 'w' \(list\)"):
      convert.load_state_dict(self.config, {"w": [1.0]})
    with self.assertRaisesRegex(TypeError, "must be a mapping"):
      convert.load_state_dict(self.config, [np.ones(2)])

  def test_export_checks_params(self):
    bad = dict(self.params)
    del bad["ln_f"]
    bad["extra"] = {"w": np.ones(2)}
    with self.assertRaisesRegex(
        ValueError, r"missing keys \(2\): ln_f/bias, ln_f/scale(.|\n)*"
        r"unexpected keys \(1\): extra/w"):
      convert.export_state_dict(self.config, bad)
    bad = jax.tree.map(lambda a: a, self.params)
    bad["read_out"]["kernel"] = np.zeros((_D, 2), np.float32)
    with self.assertRaisesRegex(ValueError, r"read_out/kernel: expected "
                                r"\(16, 1\), found \(16, 2\)"):
      convert.export_state_dict(self.config, bad)

  def test_include_unused_needs_reference(self):
    with self.assertRaisesRegex(ValueError, "include_unused is only for"):
      convert.export_state_dict(self.config, self.params, target="hf_mamba",
                                include_unused=True)


class MixerTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("mamba", mamba.MambaMixer(d_model=_D), "conv1d.weight", (32, 1, 4)),
      ("attn", attention.CausalSelfAttention(
          d_model=_D, config=attention.AttentionConfig(n_head=2)),
       "c_attn.weight", (48, _D)),
      ("s4d", s4.S4DMixer(d_model=_D), "s4.kernel.C", (_D, 8, 2)),
      ("s4_mamba", s4.S4MambaMixer(d_model=_D), "S4DMamba.D", (32,)),
      ("mlp", layers.MLP(d_model=_D), "c_fc.weight", (_D, 4 * _D)),
  )
  def test_mixer_round_trip(self, mixer, key, shape):
    abstract = jax.eval_shape(mixer.init, jax.random.key(0),
                              jnp.zeros((1, 1, _D)))["params"]
    is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
    params = _random_like(jax.tree.map(
        lambda x: x.value if is_box(x) else x, abstract, is_leaf=is_box), 3)
    sd = convert.export_mixer_state_dict(mixer, params)
    self.assertEqual(sd[key].shape, shape)
    _assert_trees_equal(convert.load_mixer_state_dict(mixer, sd), params)
    prefixed = {f"layers.0.mixer.{k}": v for k, v in sd.items()}
    _assert_trees_equal(
        convert.load_mixer_state_dict(mixer, prefixed,
                                      prefix="layers.0.mixer."), params)

  def test_mixer_errors(self):
    mixer = mamba.MambaMixer(d_model=_D)
    with self.assertRaisesRegex(ValueError, r"MambaMixer:(.|\n)*missing keys"
                                r" \(9\)"):
      convert.load_mixer_state_dict(mixer, {})
    with self.assertRaisesRegex(TypeError, "No PyTorch layout for Dense"):
      convert.load_mixer_state_dict(nn.Dense(4), {})


if __name__ == "__main__":
  absltest.main()
