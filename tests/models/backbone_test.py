"""Tests for ssm_icl.models.backbone (ICLModel) on every family."""

import functools
import math

from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssm_icl import models
from ssm_icl.models import backbone
from ssm_icl.nn import axes

_FAMILIES = ("transformer", "mamba", "s4", "s4_mamba", "hybrid",
             "mambaformer")
_LENGTH = 10
_CHANGED = 6  # the token changed by the causality checks
# 2048 position rows so the long-sequence tests reuse the family params.
_TINY = dict(d_model=32, n_head=4, d_in=3, d_out=2, d_state=4,
             n_positions=2048)
# The fewest layers that still show each family's structure, to keep
# compilation cheap: hybrid 2 -> (attn, mamba), mambaformer 1 ->
# (mamba, attn), transformer 1 -> (attn, mlp).
_N_LAYER = {"hybrid": 2}
_CUSTOM = "mamba,attn,mlp"


_SAVED_FLAGS = {}


def setUpModule():
  # Whole-model programs: XLA's optimisation passes cost more than they save
  # at these tiny shapes (about 2x faster compiles); restored afterwards.
  name = "jax_disable_most_optimizations"
  _SAVED_FLAGS[name] = jax.config.read(name)
  jax.config.update(name, True)


def tearDownModule():
  for name, value in _SAVED_FLAGS.items():
    jax.config.update(name, value)


def _config(family, **overrides):
  kwargs = dict(_TINY, family=family, n_layer=_N_LAYER.get(family, 1))
  if family == "custom":
    kwargs["pattern"] = _CUSTOM
  kwargs.update(overrides)
  return models.ModelConfig(**kwargs)


def _tokens(batch=2, length=_LENGTH, d_in=3, seed=1):
  return jax.random.normal(jax.random.key(seed), (batch, length, d_in))


def _causal_pair():
  """Two prompts that differ at token `_CHANGED` only."""
  x = _tokens(batch=1)
  return jnp.concatenate([x, x.at[:, _CHANGED].add(1.0)], axis=0)


def _key(seed=0):
  # The "rbg" generator compiles much faster than threefry, and these tests
  # only need *some* draw from the model's initialisers.
  return jax.random.key(seed, impl="rbg")


@functools.lru_cache(maxsize=None)
def _init(cfg):
  """Boxed variables of a model, initialised once per config."""
  return jax.jit(models.ICLModel(cfg).init)(_key(), _tokens())


def _params(cfg):
  return nn.meta.unbox(_init(cfg))["params"]


@functools.lru_cache(maxsize=None)
def _random_params(cfg, seed=0):
  """Params of the model's shapes drawn on the host: no init to compile."""
  abstract = jax.eval_shape(models.ICLModel(cfg).init, _key(), _tokens())
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype),
      nn.meta.unbox(abstract)["params"])


@functools.lru_cache(maxsize=None)
def _forward(cfg):
  return jax.jit(models.ICLModel(cfg).apply,
                 static_argnames="deterministic")


@functools.lru_cache(maxsize=None)
def _forward_backward(cfg):
  """jit(params, tokens) -> (outputs, grads of sum(outputs**2))."""
  model = models.ICLModel(cfg)

  def loss(params, tokens):
    y = model.apply({"params": params}, tokens)
    return jnp.sum(y ** 2), y

  return jax.jit(jax.grad(loss, has_aux=True))


class ForwardBackwardTest(parameterized.TestCase):

  @parameterized.parameters(*_FAMILIES)
  def test_runs_is_causal_and_has_finite_grads(self, family):
    cfg = _config(family)
    t = _CHANGED
    grads, y = _forward_backward(cfg)(_random_params(cfg), _causal_pair())
    self.assertEqual(y.shape, (2, _LENGTH, 2))
    self.assertEqual(y.dtype, jnp.float32)
    np.testing.assert_allclose(y[0, :t], y[1, :t], rtol=1e-5, atol=1e-5)
    self.assertGreater(np.abs(y[0, t:] - y[1, t:]).max(), 1e-4)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
      self.assertTrue(np.all(np.isfinite(g)), path)
      # Every parameter reaches the output.
      self.assertGreater(np.abs(g).max(), 0.0, path)

  def test_custom_pattern_builds_and_runs(self):
    cfg = _config("custom")
    params = _random_params(cfg)
    self.assertCountEqual(params, ["read_in", "blocks_0", "blocks_1",
                                   "blocks_2", "ln_f", "read_out"])
    self.assertIn("A_log", params["blocks_0"]["mixer"])
    self.assertIn("c_attn", params["blocks_1"]["mixer"])
    self.assertIn("c_fc", params["blocks_2"]["mixer"])
    y = _forward(cfg)({"params": params}, _causal_pair())
    self.assertTrue(np.all(np.isfinite(y)))
    np.testing.assert_allclose(y[0, :_CHANGED], y[1, :_CHANGED], rtol=1e-5,
                               atol=1e-5)

  def test_bfloat16_compute(self):
    cfg = _config("mambaformer")  # Mamba and attention blocks.
    params = _random_params(cfg)
    y = _forward(cfg.replace(dtype="bfloat16"))({"params": params},
                                                _causal_pair())
    self.assertEqual(y.dtype, jnp.float32)
    _, y32 = _forward_backward(cfg)(params, _causal_pair())
    self.assertGreater(np.abs(y - y32).max(), 0.0)  # bf16 did run
    np.testing.assert_allclose(y, y32, rtol=0.1, atol=0.1)


class LayoutTest(parameterized.TestCase):

  @parameterized.parameters(*_FAMILIES)
  def test_every_param_has_logical_axes_and_tp_shardings(self, family):
    cfg = _config(family)
    variables = jax.eval_shape(models.ICLModel(cfg).init, jax.random.key(0),
                               _tokens())
    boxes = jax.tree.leaves(
        variables, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    for box in boxes:
      self.assertIsInstance(box, nn.LogicallyPartitioned)
      self.assertLen(box.names, box.value.ndim)
    mesh = jax.make_mesh((2, 4), (axes.DATA, axes.MODEL),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    shardings = nn.logical_to_mesh_sharding(
        nn.get_partition_spec(variables), mesh, axes.get_rules("dp_tp"))
    specs = [s.spec for s in jax.tree.leaves(shardings)]
    self.assertLen(specs, len(boxes))
    self.assertTrue(any(axes.MODEL in tuple(s) for s in specs))

  def test_param_names(self):
    params = _params(_config("hybrid"))
    self.assertCountEqual(params, ["read_in", "wpe", "blocks_0", "blocks_1",
                                   "ln_f", "read_out"])
    self.assertIn("c_attn", params["blocks_0"]["mixer"])
    self.assertIn("A_log", params["blocks_1"]["mixer"])
    self.assertEqual(params["wpe"].shape, (2048, 32))
    self.assertCountEqual(params["blocks_1"], ["norm", "mixer"])
    self.assertEqual(params["read_in"]["kernel"].shape, (3, 32))
    self.assertEqual(params["read_out"]["kernel"].shape, (32, 2))
    self.assertNotIn("wpe", _params(_config("mambaformer")))

  def test_count_params_of_real_params(self):
    cfg = _config("mambaformer")
    abstract = jax.eval_shape(models.ICLModel(cfg).init, jax.random.key(0),
                              _tokens())
    self.assertEqual(models.count_params(_init(cfg)),
                     models.count_params(abstract))

  @parameterized.parameters(
      (("mamba",) * 3, (0, 1, 3)),
      (("attn", "mlp") * 2, (0, 2, 2)),
      (("mamba", "attn", "mamba", "attn", "mamba"), (1, 2, 2)),
      (("attn", "mamba", "attn"), (0, 0, 0)),
      (("mamba", "attn", "mlp"), (0, 0, 0)),
  )
  def test_scan_layout(self, pattern, expected):
    self.assertEqual(backbone.scan_layout(pattern), expected)


class InitTest(absltest.TestCase):

  def test_transformer_uses_gpt2_init(self):
    cfg = _config("transformer")
    p = _params(cfg)
    np.testing.assert_allclose(np.std(p["wpe"]), 0.02, rtol=0.1)
    proj = p["blocks_1"]["mixer"]["c_proj"]["kernel"]  # MLP c_proj [128, 32]
    np.testing.assert_allclose(np.std(proj), 0.02 / math.sqrt(2), rtol=0.1)
    np.testing.assert_array_equal(p["blocks_0"]["mixer"]["c_attn"]["bias"],
                                  0.0)
    # The read-in is outside the GPT-2 backbone: PyTorch default, bias != 0.
    self.assertGreater(np.abs(p["read_in"]["bias"]).max(), 0.0)
    self.assertLessEqual(np.abs(p["read_in"]["kernel"]).max(),
                         1 / math.sqrt(3))

  def test_hybrid_uses_mixer_model_init(self):
    p = _params(_config("hybrid"))
    np.testing.assert_allclose(np.std(p["wpe"]), 1.0, rtol=0.1)
    attn = p["blocks_0"]["mixer"]
    for name in ("c_attn", "c_proj"):
      np.testing.assert_array_equal(attn[name]["bias"], 0.0)
      self.assertLessEqual(np.abs(attn[name]["kernel"]).max(),
                           1 / math.sqrt(32))
    out_proj = np.abs(p["blocks_1"]["mixer"]["out_proj"]["kernel"])
    bound = 1 / math.sqrt(64) / math.sqrt(2)  # n_layer = 2
    self.assertLessEqual(out_proj.max(), bound)
    self.assertGreater(out_proj.max(), 0.8 * bound)

  def test_mambaformer_rescales_by_config_n_layer(self):
    # n_layer=1 builds (mamba, attn): the scale is 1/sqrt(1), not
    # 1/sqrt(2 blocks).
    p = _params(_config("mambaformer"))
    bound = 1 / math.sqrt(64)
    w = np.abs(p["blocks_0"]["mixer"]["out_proj"]["kernel"])
    self.assertLessEqual(w.max(), bound)
    self.assertGreater(w.max(), 0.8 * bound)


class ScanAndRematTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # The repeated group is (attn, mlp) x 2.
      ("transformer_scan", dict(family="transformer", n_layer=2), False),
      # An unscanned prefix block, then (mamba,) x 2, with remat.
      ("prefix_scan_remat", dict(family="custom", pattern="mlp,mamba,mamba"),
       True),
  )
  def test_scan_layers_same_outputs_as_the_loop(self, kwargs, remat):
    cfg = _config(**kwargs)
    scanned = cfg.replace(scan_layers=True, remat=remat)
    params = _random_params(cfg)
    stacked = models.stack_layers(params, scanned)
    self.assertIn(backbone.SCANNED, stacked)
    abstract = jax.eval_shape(models.ICLModel(scanned).init, _key(),
                              _tokens())
    self.assertEqual(
        jax.tree.map(lambda a: a.shape, nn.meta.unbox(abstract)["params"]),
        jax.tree.map(lambda a: a.shape, stacked))
    specs = nn.get_partition_spec(abstract)["params"][backbone.SCANNED]
    for spec in jax.tree.leaves(
        specs, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec)):
      self.assertEqual(spec[0], axes.LAYERS)
    jax.tree.map(np.testing.assert_array_equal,
                 models.unstack_layers(stacked, scanned), params)
    x = _tokens()
    np.testing.assert_allclose(
        _forward(scanned)({"params": stacked}, x),
        _forward(cfg)({"params": params}, x), rtol=1e-5, atol=1e-5)

  def test_remat_same_outputs_and_grads(self):
    # The remat wiring is in the backbone, not the mixers: MLP blocks keep
    # the compile cheap.
    cfg = _config("custom", pattern="mlp,mlp")
    params = _random_params(cfg)
    grads, y = _forward_backward(cfg)(params, _causal_pair())
    grads_remat, y_remat = _forward_backward(cfg.replace(remat=True))(
        params, _causal_pair())
    np.testing.assert_allclose(y_remat, y, rtol=1e-6, atol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        grads_remat, grads)


class DropoutTest(absltest.TestCase):

  def test_s4_mamba_dropout_only_when_not_deterministic(self):
    cfg = _config("s4_mamba", s4_mamba_dropout=0.5)
    params = {"params": _random_params(cfg)}
    apply = _forward(cfg)
    x = _tokens()
    # No "dropout" rng is given: active dropout would raise here.
    y_eval = apply(params, x)
    y_train = apply(params, x, deterministic=False,
                    rngs={"dropout": _key(1)})
    y_train2 = apply(params, x, deterministic=False,
                     rngs={"dropout": _key(2)})
    self.assertGreater(np.abs(y_train - y_eval).max(), 1e-4)
    self.assertGreater(np.abs(y_train - y_train2).max(), 1e-4)


class LongSequenceTest(parameterized.TestCase):

  @parameterized.parameters(*_FAMILIES)
  def test_2048_tokens_shape_level(self, family):
    cfg = _config(family)
    model = models.ICLModel(cfg)
    x = jax.ShapeDtypeStruct((2, 2048, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    y = jax.eval_shape(model.apply, variables, x)
    self.assertEqual(y.shape, (2, 2048, 2))

  def test_2048_tokens_mamba_forward(self):
    cfg = _config("mamba")
    x = _tokens(batch=2, length=2048)
    # Prompt 1 differs from prompt 0 from token 1500 on.
    x = x.at[1].set(x[0].at[1500:].set(0.0))
    y = _forward(cfg)({"params": _random_params(cfg)}, x)
    self.assertEqual(y.shape, (2, 2048, 2))
    self.assertTrue(np.all(np.isfinite(y)))
    np.testing.assert_allclose(y[0, :1500], y[1, :1500], rtol=1e-5,
                               atol=1e-6)
    self.assertGreater(np.abs(y[0, 1500:] - y[1, 1500:]).max(), 1e-4)

  def test_2048_tokens_blocked_attention(self):
    cfg = _config("transformer", attn_impl="blocked", attn_block_size=256)
    x = _tokens(batch=2, length=2048)
    x = x.at[1].set(x[0].at[1500:].set(0.0))
    y = _forward(cfg)({"params": _random_params(cfg)}, x)
    self.assertEqual(y.shape, (2, 2048, 2))
    self.assertTrue(np.all(np.isfinite(y)))
    np.testing.assert_allclose(y[0, :1500], y[1, :1500], rtol=1e-5,
                               atol=1e-5)
    self.assertGreater(np.abs(y[0, 1500:] - y[1, 1500:]).max(), 1e-4)


class BadInputTest(absltest.TestCase):

  def test_sequence_longer_than_position_table(self):
    cfg = _config("transformer", n_positions=8)
    model = models.ICLModel(cfg)
    x = jax.ShapeDtypeStruct((1, 9, 3), jnp.float32)
    with self.assertRaisesRegex(ValueError, r"9 tokens is longer than "
                                r"n_positions=8"):
      jax.eval_shape(model.init, jax.random.key(0), x)

  def test_no_position_limit_without_positions(self):
    cfg = _config("mamba", n_positions=8)
    x = jax.ShapeDtypeStruct((1, 9, 3), jnp.float32)
    variables = jax.eval_shape(models.ICLModel(cfg).init, jax.random.key(0),
                               x)
    self.assertIn("params", variables)

  def test_wrong_token_width(self):
    model = models.ICLModel(_config("mamba"))
    x = jax.ShapeDtypeStruct((1, 4, 5), jnp.float32)
    with self.assertRaisesRegex(ValueError, r"d_in=3\], got shape \(1, 4, 5\)"):
      jax.eval_shape(model.init, jax.random.key(0), x)


class BuildModelTest(absltest.TestCase):

  def test_from_dict_and_config_dict(self):
    cfg = _config("hybrid")
    from_dict = models.build_model(cfg.to_dict())
    from_cd = models.build_model(ml_collections.ConfigDict(cfg.to_dict()))
    self.assertEqual(from_dict.config, cfg)
    self.assertEqual(from_cd.config, cfg)
    self.assertIs(models.build_model(cfg).config, cfg)

  def test_bad_config_fails_before_tracing(self):
    with self.assertRaisesRegex(ValueError, "Unknown family 'rnn'"):
      models.build_model({"family": "rnn"})
    with self.assertRaisesRegex(ValueError, r"\['dmodel'\]"):
      models.build_model({"dmodel": 3})



_PROMPT = 4  # prefill length of the prefill + decode checks


@functools.lru_cache(maxsize=None)
def _decode_fns(cfg):
  """jit(params, tokens) -> (full pass, token by token, prefill + decode)."""
  model = models.ICLModel(cfg)

  def scan_steps(params, cache, tokens):
    step = lambda c, tok: model.decode_step(params, c, tok)[::-1]
    cache, ys = jax.lax.scan(step, cache, jnp.moveaxis(tokens, 1, 0))
    return jnp.moveaxis(ys, 0, 1), cache

  def run(params, tokens):
    batch, length = tokens.shape[:2]
    full = model.apply({"params": params}, tokens)
    stepwise, _ = scan_steps(params, model.init_cache(batch, length),
                             tokens)
    head, cache = model.prefill(params, tokens[:, :_PROMPT], length)
    tail, _ = scan_steps(params, cache, tokens[:, _PROMPT:])
    return full, stepwise, jnp.concatenate([head, tail], axis=1)

  return jax.jit(run)


def _assert_rel_close(got, want, rtol=1e-5):
  """Equal to rtol of the output scale (fp32 sums in another order)."""
  want = np.asarray(want)
  np.testing.assert_allclose(np.asarray(got), want, rtol=rtol,
                             atol=rtol * np.abs(want).max())


class DecodeTest(parameterized.TestCase):

  @parameterized.parameters(*_FAMILIES, "custom")
  def test_decoding_equals_the_full_pass(self, family):
    overrides = {}
    if family == "custom":  # every block kind, with positions
      overrides = dict(pattern="mamba,attn,mlp,s4d,s4_mamba",
                       pos_emb="learned")
    cfg = _config(family, **overrides)
    full, stepwise, prefilled = _decode_fns(cfg)(_random_params(cfg),
                                                 _tokens())
    self.assertEqual(stepwise.shape, full.shape)
    _assert_rel_close(stepwise, full)
    _assert_rel_close(prefilled, full)

  def test_decode_step_compiles_once_for_all_positions(self):
    cfg = _config("mambaformer", pos_emb="learned")
    model, params = models.ICLModel(cfg), _random_params(cfg)
    traces = []

    def step(params, cache, token):
      traces.append(1)
      return model.decode_step(params, cache, token)

    step = jax.jit(step)
    tokens = _tokens(length=5)
    cache = model.init_cache(2, 5)
    ys = []
    for t in range(5):
      y, cache = step(params, cache, tokens[:, t])
      ys.append(y)
    self.assertLen(traces, 1)
    self.assertEqual(int(cache.position), 5)
    _assert_rel_close(jnp.stack(ys, 1),
                      _forward(cfg)({"params": params}, tokens))

  def test_scan_layers_params_decode(self):
    cfg = _config("mamba", n_layer=2)
    params = _random_params(cfg)
    model = models.ICLModel(cfg.replace(scan_layers=True))
    tokens = _tokens(length=3)
    want = _forward(cfg)({"params": params}, tokens)
    got, cache = model.prefill(
        backbone.stack_layers(params, cfg), tokens, max_len=3)
    _assert_rel_close(got, want)
    self.assertLen(cache.blocks, 2)
    with self.assertRaisesRegex(ValueError, "scan_layers=False"):
      model.apply({"params": backbone.stack_layers(params, cfg)}, tokens,
                  cache=cache)

  def test_bad_decoding_sizes(self):
    model = models.ICLModel(_config("hybrid", n_positions=8))
    with self.assertRaisesRegex(ValueError, "max_len=9 exceeds n_positions"):
      model.init_cache(2, 9)
    with self.assertRaisesRegex(ValueError, "batch must be a positive int"):
      model.init_cache(0, 4)
    with self.assertRaisesRegex(ValueError, "length <= max_len=3"):
      model.prefill({}, _tokens(length=4), 3)

  def test_cache_shapes(self):
    cfg = _config("custom", pattern="mamba,attn,mlp,s4d,s4_mamba")
    cache = models.ICLModel(cfg).init_cache(2, 7)
    e, n = cfg.d_inner, cfg.d_state
    mamba_c, attn_c, mlp_c, s4d_c, s4m_c = cache.blocks
    self.assertEqual(mamba_c.conv.shape, (2, cfg.d_conv - 1, e))
    self.assertEqual(mamba_c.ssm.shape, (2, e, n))
    self.assertEqual(mamba_c.ssm.dtype, jnp.float32)
    self.assertEqual(attn_c.k.shape, (2, 7, 4, 8))
    self.assertEqual(jax.tree.leaves(mlp_c), [])
    self.assertEqual(s4d_c.ssm.shape, (2, cfg.d_model, n // 2, 2))
    self.assertEqual(s4m_c.ssm.shape, (2, e, n // 2, 2))


if __name__ == "__main__":
  absltest.main()
