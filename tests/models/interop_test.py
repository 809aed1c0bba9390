"""Cross-checks of ssm_icl.models.convert against PyTorch and transformers.

Needs the `interop` extra (torch, transformers, safetensors). Every model
here gets random weights (PyTorch init plus noise, so no parameter keeps a
symmetric default such as a unit LayerNorm weight or a zero bias), is loaded
through `convert`, and must give the same outputs as the PyTorch model on the
same inputs, to 1e-5 of the output scale.
"""

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn as tnn
from torch.nn import functional as F
import transformers
from transformers.models.mamba import modeling_mamba

from ssm_icl.models import backbone
from ssm_icl.models import config as config_lib
from ssm_icl.models import convert
from ssm_icl.models import generation
from ssm_icl.nn import mamba
from ssm_icl.ops import flops

pytestmark = pytest.mark.interop

_D, _D_IN, _LEN, _BATCH = 16, 3, 7, 2
_RTOL = 1e-5


def _perturb(module: tnn.Module, seed: int) -> tnn.Module:
  """Adds N(0, 0.05^2) noise to every parameter, in place."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(0.05 * torch.randn(p.shape, generator=gen))
  return module.eval()


def _assert_close(ours, ref):
  ref = np.asarray(ref)
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=_RTOL,
                             atol=_RTOL * np.abs(ref).max())


def _mamba_config(n_layer):
  return transformers.MambaConfig(
      hidden_size=_D, state_size=16, conv_kernel=4, expand=2,
      num_hidden_layers=n_layer, vocab_size=4, layer_norm_epsilon=1e-5)


class _NanoAttention(tnn.Module):
  """The hybrids' causal self-attention: fused Linear qkv, Linear out."""

  def __init__(self, d, n_head):
    super().__init__()
    self.c_attn = tnn.Linear(d, 3 * d)
    self.c_proj = tnn.Linear(d, d)
    self.n_head = n_head

  def forward(self, x):
    b, l, d = x.shape
    q, k, v = (t.view(b, l, self.n_head, -1).transpose(1, 2)
               for t in self.c_attn(x).split(d, dim=2))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return self.c_proj(y.transpose(1, 2).reshape(b, l, d))


class _S4DKernel(tnn.Module):
  """S4D-Lin kernel parameters and the Vandermonde kernel, in complex64."""

  def __init__(self, h, n):
    super().__init__()
    self.log_dt = tnn.Parameter(torch.rand(h) * 4.6 - 6.9)
    self.C = tnn.Parameter(torch.randn(h, n // 2, 2))
    self.log_A_real = tnn.Parameter(torch.full((h, n // 2), math.log(0.5)))
    self.A_imag = tnn.Parameter(math.pi * torch.arange(n // 2).repeat(h, 1))

  def forward(self, length):
    dt = torch.exp(self.log_dt)[:, None]
    a = -torch.exp(self.log_A_real) + 1j * self.A_imag
    c = torch.view_as_complex(self.C.contiguous()) * (
        torch.exp(dt * a) - 1) / a
    steps = torch.arange(length)
    return 2 * torch.einsum("hn,hnl->hl", c,
                            torch.exp((dt * a)[..., None] * steps)).real


def _s4d_core(core, u):
  """FFT causal conv with core.kernel plus core.D skip; u: [b, h, l]."""
  length = u.shape[-1]
  k = core.kernel(length)
  y = torch.fft.irfft(torch.fft.rfft(u, n=2 * length)
                      * torch.fft.rfft(k, n=2 * length),
                      n=2 * length)[..., :length]
  return y + u * core.D[:, None]


class _S4DCore(tnn.Module):

  def __init__(self, h, n, with_output):
    super().__init__()
    self.D = tnn.Parameter(torch.randn(h))
    self.kernel = _S4DKernel(h, n)
    if with_output:
      self.output_linear = tnn.Sequential(tnn.Conv1d(h, 2 * h, 1),
                                          tnn.GLU(dim=-2))


class _S4Wrapper(tnn.Module):
  """The S4 model's mixer: S4D conv, GELU, pointwise conv, GLU."""

  def __init__(self, d):
    super().__init__()
    self.s4 = _S4DCore(d, 16, with_output=True)

  def forward(self, x):
    y = F.gelu(_s4d_core(self.s4, x.transpose(1, 2)))
    return self.s4.output_linear(y).transpose(1, 2)


class _S4Mamba(tnn.Module):
  """Mamba with an LTI S4D core and a linear gate (eval mode: no dropout)."""

  def __init__(self, d):
    super().__init__()
    e = 2 * d
    self.in_proj = tnn.Linear(d, 2 * e, bias=False)
    self.conv1d = tnn.Conv1d(e, e, 4, groups=e, padding=3)
    self.S4DMamba = _S4DCore(e, 16, with_output=False)
    self.out_proj = tnn.Linear(e, d, bias=False)

  def forward(self, h):
    x, z = self.in_proj(h).transpose(1, 2).chunk(2, dim=1)
    x = F.silu(self.conv1d(x)[..., :h.shape[1]])
    y = _s4d_core(self.S4DMamba, x) * z
    return self.out_proj(y.transpose(1, 2))


class _Block(tnn.Module):
  """The Mamba repo's "Add -> LN -> Mixer" block."""

  def __init__(self, mixer):
    super().__init__()
    self.mixer = mixer
    self.norm = tnn.LayerNorm(_D)

  def forward(self, h, residual):
    residual = h if residual is None else h + residual
    return self.mixer(self.norm(residual)), residual


class _MixerICL(tnn.Module):
  """The reference ICL model with a MixerModel backbone (any block kinds)."""

  def __init__(self, kinds, n_head, n_positions=0):
    super().__init__()
    hf = _mamba_config(len(kinds))
    factories = {
        "mamba": lambda i: modeling_mamba.MambaMixer(hf, layer_idx=i),
        "attn": lambda i: _NanoAttention(_D, n_head),
        "s4d": lambda i: _S4Wrapper(_D),
        "s4_mamba": lambda i: _S4Mamba(_D),
    }
    self._read_in = tnn.Linear(_D_IN, _D)
    if n_positions:
      self.wpe = tnn.Embedding(n_positions, _D)
    self._backbone = tnn.Module()
    self._backbone.embedding = tnn.Embedding(1, _D)
    self._backbone.layers = tnn.ModuleList(
        [_Block(factories[k](i)) for i, k in enumerate(kinds)])
    self._backbone.norm_f = tnn.LayerNorm(_D)
    self._read_out = tnn.Linear(_D, 1)

  def forward(self, tokens):
    h = self._read_in(tokens)
    if hasattr(self, "wpe"):
      h = h + self.wpe(torch.arange(tokens.shape[1]))
    residual = None
    for block in self._backbone.layers:
      h, residual = block(h, residual)
    return self._read_out(self._backbone.norm_f(h + residual))


class _GPT2ICL(tnn.Module):
  """The reference TransformerModel: Linear, HF GPT2Model, Linear."""

  def __init__(self, n_layer, n_head, n_positions, vocab_size):
    super().__init__()
    cfg = transformers.GPT2Config(
        n_positions=n_positions, n_embd=_D, n_layer=n_layer, n_head=n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
        vocab_size=vocab_size, activation_function="gelu_new",
        bos_token_id=None, eos_token_id=None, attn_implementation="eager")
    self._read_in = tnn.Linear(_D_IN, _D)
    self._backbone = transformers.GPT2Model(cfg)
    self._read_out = tnn.Linear(_D, 1)

  def forward(self, tokens):
    out = self._backbone(inputs_embeds=self._read_in(tokens))
    return self._read_out(out.last_hidden_state)


def _tokens(seed=0):
  return np.random.default_rng(seed).normal(
      size=(_BATCH, _LEN, _D_IN)).astype(np.float32)


def _torch_out(module, tokens):
  with torch.no_grad():
    return module(torch.from_numpy(tokens)).numpy()


def _ours(config, params, tokens):
  return backbone.ICLModel(config).apply({"params": params},
                                         jnp.asarray(tokens))


def _config(family, **kw):
  kw = dict(family=family, n_layer=2, d_model=_D, n_head=2, d_in=_D_IN,
            d_out=1, n_positions=8, scan_impl="sequential") | kw
  return config_lib.ModelConfig(**kw)


class MixerTest(parameterized.TestCase):

  @parameterized.named_parameters(("sequential", "sequential"),
                                  ("associative", "associative"))
  def test_mamba_mixer_matches_transformers(self, impl):
    hf = _perturb(modeling_mamba.MambaMixer(_mamba_config(1), layer_idx=0),
                  seed=1)
    ours = mamba.MambaMixer(d_model=_D,
                            config=mamba.MambaConfig(scan_impl=impl))
    params = convert.load_mixer_state_dict(ours, hf.state_dict())
    h = np.random.default_rng(2).normal(size=(_BATCH, _LEN, _D)).astype(
        np.float32)
    with torch.no_grad():
      want = hf(torch.from_numpy(h)).numpy()
    _assert_close(ours.apply({"params": params}, jnp.asarray(h)), want)

  def test_mixer_export_round_trip(self):
    hf = _perturb(modeling_mamba.MambaMixer(_mamba_config(1), layer_idx=0),
                  seed=3)
    ours = mamba.MambaMixer(d_model=_D)
    sd = {k: v.numpy() for k, v in hf.state_dict().items()}
    back = convert.export_mixer_state_dict(
        ours, convert.load_mixer_state_dict(ours, sd))
    self.assertEqual(sorted(back), sorted(sd))
    for k, v in sd.items():
      np.testing.assert_array_equal(back[k], v, err_msg=k)


class ReferenceModelTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("mamba", "mamba", ("mamba", "mamba"), 0),
      ("hybrid", "hybrid", ("attn", "mamba"), 8),
      ("mambaformer", "mambaformer", ("mamba", "attn", "mamba"), 0),
      ("s4", "s4", ("s4d", "s4d"), 0),
      ("s4_mamba", "s4_mamba", ("s4_mamba", "s4_mamba"), 0),
  )
  def test_mixer_families_match_reference(self, family, kinds, n_pos):
    ref = _perturb(_MixerICL(kinds, n_head=2, n_positions=n_pos), seed=4)
    config = _config(family)
    self.assertEqual(config.block_pattern, kinds)
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    params = convert.load_state_dict(config, sd)
    tokens = _tokens()
    _assert_close(_ours(config, params, tokens), _torch_out(ref, tokens))
    # export(load(sd)) == sd, but for the unused embedding (zeros).
    back = convert.export_state_dict(config, params, include_unused=True)
    self.assertEqual(sorted(back), sorted(sd))
    for k, v in sd.items():
      if k != "_backbone.embedding.weight":
        np.testing.assert_array_equal(back[k], v, err_msg=k)

  def test_gpt2_transformer_matches_reference(self):
    ref = _perturb(_GPT2ICL(n_layer=2, n_head=2, n_positions=8,
                            vocab_size=5), seed=5)
    config = _config("transformer")
    params = convert.load_state_dict(config, ref.state_dict())
    tokens = _tokens(1)
    _assert_close(_ours(config, params, tokens), _torch_out(ref, tokens))

  def test_bare_gpt2_source_matches_reference_source(self):
    ref = _perturb(_GPT2ICL(n_layer=1, n_head=2, n_positions=8,
                            vocab_size=5), seed=6)
    config = _config("transformer", n_layer=1)
    full = convert.load_state_dict(config, ref.state_dict())
    lm_head = {f"transformer.{k}": v
               for k, v in ref._backbone.state_dict().items()}
    lm_head["lm_head.weight"] = ref._backbone.wte.weight
    bare = convert.load_state_dict(config, lm_head, source="hf_gpt2",
                                   params=full)
    jax.tree.map(np.testing.assert_array_equal, bare, full)

  def test_export_loads_strictly_into_torch(self):
    config = _config("transformer")
    source = _perturb(_GPT2ICL(n_layer=2, n_head=2, n_positions=8,
                               vocab_size=5), seed=9)
    params = convert.load_state_dict(config, source.state_dict())
    sd = convert.export_state_dict(config, params, include_unused=True)
    ref = _GPT2ICL(n_layer=2, n_head=2, n_positions=8,
                   vocab_size=convert.GPT2_VOCAB)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()},
                        strict=True)
    tokens = _tokens(2)
    _assert_close(_torch_out(ref.eval(), tokens), _torch_out(source, tokens))
    _assert_close(_ours(config, params, tokens), _torch_out(ref, tokens))


class HfMambaTest(absltest.TestCase):

  def test_hf_mamba_backbone_with_layernorm_matches(self):
    # HF MambaModel has RMSNorm; with LayerNorms swapped in it is the
    # reference MixerModel, so the ICL model built around it must match.
    model = transformers.MambaModel(_mamba_config(2))
    for block in model.layers:
      block.norm = tnn.LayerNorm(_D)
    model.norm_f = tnn.LayerNorm(_D)
    _perturb(model, seed=7)
    read_in, read_out = tnn.Linear(_D_IN, _D), tnn.Linear(_D, 1)
    config = _config("mamba")
    template = convert.load_state_dict(config, {
        "_read_in.weight": read_in.weight, "_read_in.bias": read_in.bias,
        "_read_out.weight": read_out.weight,
        "_read_out.bias": read_out.bias,
        **{f"_backbone.{k}": v for k, v in model.state_dict().items()}})
    sd = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    params = convert.load_state_dict(config, sd, source="hf_mamba",
                                     params=template)
    tokens = _tokens(3)
    with torch.no_grad():
      hidden = model(inputs_embeds=read_in(torch.from_numpy(tokens)),
                     use_cache=False).last_hidden_state
      want = read_out(hidden).numpy()
    _assert_close(_ours(config, params, tokens), want)

  def test_rmsnorm_checkpoint_is_refused(self):
    model = transformers.MambaModel(_mamba_config(1))
    config = _config("mamba", n_layer=1)
    with self.assertRaisesRegex(ValueError, r"RMSNorm(.|\n)*layers\.0\.norm"
                                r"\.bias|layers\.0\.norm\.bias(.|\n)*RMSNorm"):
      convert.load_state_dict(config, model.state_dict(), source="hf_mamba",
                              params={})


_VOCAB = 40


def _hf_lm(tie=True, seed=11):
  """A random-weight HF MambaForCausalLM (RMSNorm, tied head by default)."""
  config = transformers.MambaConfig(
      vocab_size=_VOCAB, hidden_size=_D, state_size=8, conv_kernel=4,
      expand=2, num_hidden_layers=2, layer_norm_epsilon=1e-5,
      tie_word_embeddings=tie, pad_token_id=0, bos_token_id=0,
      eos_token_id=0)
  torch.manual_seed(seed)
  model = _perturb(transformers.MambaForCausalLM(config), seed=seed)
  if tie:  # _perturb added noise to the shared matrix once: still tied.
    assert model.lm_head.weight is model.backbone.embeddings.weight
  return model


def _lm_config(tie=True):
  return config_lib.ModelConfig(
      family="mamba", n_layer=2, d_model=_D, d_state=8, d_conv=4, expand=2,
      norm="rms", vocab_size=_VOCAB, tie_embeddings=tie)


def _ids(batch=2, length=_LEN, seed=0):
  return np.random.default_rng(seed).integers(0, _VOCAB, (batch, length))


def _our_logits(config, params, ids):
  model = backbone.ICLModel(config)
  return np.asarray(model.apply({"params": params}, jnp.asarray(ids)))


def _hf_logits(model, ids):
  with torch.no_grad():
    return model(torch.from_numpy(ids), use_cache=False).logits.numpy()


class HfMambaLanguageModelTest(parameterized.TestCase):

  @parameterized.parameters(True, False)
  def test_causal_lm_logits_match(self, tie):
    hf = _hf_lm(tie)
    config = _lm_config(tie)
    params = convert.load_state_dict(config, hf.state_dict(),
                                     source="hf_mamba")
    self.assertEqual("lm_head" in params, not tie)
    self.assertEqual(backbone.count_params(params), flops.param_count(config))
    ids = _ids()
    _assert_close(_our_logits(config, params, ids), _hf_logits(hf, ids))

  def test_mamba_ssm_names_load_the_same_model(self):
    # mamba_ssm is not installable here (CUDA only). Its MambaLMHeadModel
    # names are HF's with `embedding` for `embeddings` (MixerModel
    # `backbone.embedding`, `backbone.layers.{i}.norm / .mixer.*`,
    # `backbone.norm_f`, `lm_head`), so a renamed HF state dict stands in.
    hf = _hf_lm()
    sd = {k.replace("backbone.embeddings.", "backbone.embedding."): v
          for k, v in hf.state_dict().items()}
    self.assertEqual(convert.guess_source(sd), "mamba_ssm")
    config = _lm_config()
    params = convert.load_state_dict(config, sd, source="mamba_ssm")
    ids = _ids(seed=1)
    _assert_close(_our_logits(config, params, ids), _hf_logits(hf, ids))

  def test_greedy_generation_matches_generate(self):
    hf = _hf_lm(seed=12)
    config = _lm_config()
    params = convert.load_state_dict(config, hf.state_dict(),
                                     source="hf_mamba")
    prompt = _ids(length=5, seed=2)
    with torch.no_grad():
      want = hf.generate(torch.from_numpy(prompt), max_new_tokens=8,
                         do_sample=False, min_new_tokens=8).numpy()
    got = jax.jit(lambda p, ids: generation.greedy_generate(
        backbone.ICLModel(config), p, ids, 8))(params, prompt)
    np.testing.assert_array_equal(np.asarray(got), want)

  def test_layernorm_config_still_refuses_rmsnorm(self):
    config = _lm_config().replace(norm="layer")
    with self.assertRaisesRegex(ValueError, r"norm='rms'"):
      convert.load_state_dict(config, _hf_lm().state_dict(),
                              source="hf_mamba")

  def test_hf_mamba_config(self):
    hf = _hf_lm(tie=False)
    config = convert.hf_mamba_config(hf.config)
    self.assertEqual(config, _lm_config(tie=False).replace(
        dt_rank=hf.config.time_step_rank))
    with self.assertRaisesRegex(ValueError, r"use_bias=True is not"):
      convert.hf_mamba_config(transformers.MambaConfig(use_bias=True))

  def test_language_model_needs_a_mamba_source(self):
    with self.assertRaisesRegex(ValueError, r"loads from source 'hf_mamba'"):
      convert.load_state_dict(_lm_config(), {}, source="reference")


class FileTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.config = _config("mamba", n_layer=1)
    ref = _perturb(_MixerICL(("mamba",), n_head=2), seed=8)
    self.sd = ref.state_dict()
    self.params = convert.load_state_dict(self.config, self.sd)

  def _assert_params(self, params):
    jax.tree.map(np.testing.assert_array_equal, params, self.params)

  def test_torch_pt_file_loads(self):
    path = self.create_tempfile("model.pt").full_path
    torch.save(dict(self.sd), path)
    self._assert_params(convert.load_state_dict(
        self.config, convert.load_checkpoint_file(path)))

  def test_reference_training_checkpoint_loads(self):
    path = self.create_tempfile("state.pt").full_path
    opt = torch.optim.Adam([tnn.Parameter(torch.ones(2))])
    torch.save({"model_state_dict": self.sd,
                "optimizer_state_dict": opt.state_dict(),
                "train_step": 5}, path)
    self._assert_params(convert.load_state_dict(
        self.config, convert.load_checkpoint_file(path)))

  def test_safetensors_file_from_torch_loads(self):
    path = self.create_tempfile("model.safetensors").full_path
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in self.sd.items()}, path)
    self._assert_params(convert.load_state_dict(
        self.config, convert.load_checkpoint_file(path)))

  def test_save_torch_round_trip(self):
    path = self.create_tempfile("out.pt").full_path
    sd = convert.export_state_dict(self.config, self.params)
    convert.save_torch(sd, path)
    loaded = torch.load(path, weights_only=True)
    self.assertEqual(sorted(loaded), sorted(sd))
    for k, v in sd.items():
      np.testing.assert_array_equal(loaded[k].numpy(), v, err_msg=k)

  def test_bfloat16_tensors_convert_exactly(self):
    path = self.create_tempfile("bf16.pt").full_path
    t = torch.randn(5).to(torch.bfloat16)
    torch.save({"w": t}, path)
    got = convert.load_checkpoint_file(path)["w"]
    self.assertEqual(got.dtype, jnp.bfloat16)
    np.testing.assert_array_equal(got.astype(np.float32), t.float().numpy())

  def test_pickled_object_is_refused(self):
    path = self.create_tempfile("evil.pt").full_path
    torch.save({"w": torch.ones(2), "obj": _Pickled()}, path)
    with self.assertRaisesRegex(ValueError, "weights_only=True"):
      convert.load_checkpoint_file(path)
    self.assertFalse(_Pickled.ran)


class _Pickled:
  """Unpickling this object would set `ran` (i.e. run code)."""
  ran = False

  def __reduce__(self):
    return (_mark_ran, ())


def _mark_ran():
  _Pickled.ran = True
  return None


if __name__ == "__main__":
  absltest.main()
