"""Import and export PyTorch state dicts as `ICLModel` parameters.

Sources (`source=` on load, `target=` on export):

  "reference"  the paper's PyTorch ICL models (krafton-ai/mambaformer-icl):
               `_read_in`, `_backbone`, `_read_out` and, for the Standard
               Hybrid, a top-level `wpe`. The Transformer's `_backbone` is a
               HF `GPT2Model`; the other families' is the Mamba `MixerModel`
               (`layers.{i}.norm`, `layers.{i}.mixer.*`, `norm_f`), whose
               `layers.0` is MambaFormer's leading block, so `layers.{i}` is
               our `blocks_{i}`.
  "hf_gpt2"    a bare HF `GPT2Model` (a `transformer.` prefix is stripped).
  "hf_mamba"   a HF `MambaModel` (a `backbone.` prefix is stripped).
  "mamba_ssm"  an official `mamba_ssm` `MixerModel` / `MambaLMHeadModel`.

Backbone-only sources lack read-in/read-out: on load they come from `params=`
(e.g. a fresh init); on export they are dropped. GPT-2 layer i is our blocks
2i ("attn", `ln_1`) and 2i+1 ("mlp", `ln_2`). An `nn.Linear` weight [out, in]
is our kernel transposed, a GPT-2 `Conv1D` weight [in, out] our kernel as is;
depthwise `Conv1d` weights [E, 1, K] and S4D's `output_linear` [2H, H, 1]
are transposed and squeezed; S4D's `C` ([H, N/2, 2], `view_as_real`) and all
else map unchanged. Keys matching `IGNORED` (GPT-2 `wte`, `lm_head`, old
causal-mask buffers, the MixerModel's unused `embedding`) are skipped;
`include_unused=True` exports zero placeholders for the reference's `wte` /
`embedding` so PyTorch's strict loading accepts the result.

HF and pretrained Mamba checkpoints use RMSNorm (no `norm.bias`): they load
into a config with `norm="rms"`; into a LayerNorm config they are refused
rather than loaded inexactly. A language-model config (`vocab_size`) loads
the token embedding (`embeddings.weight` of HF `MambaForCausalLM`,
`embedding.weight` of `mamba_ssm` `MambaLMHeadModel`) and, when untied,
`lm_head.weight`; a tied `lm_head.weight` is the embedding and is skipped. With `scan_layers=True`, loaded params are stacked
(`backbone.stack_layers`) and exported ones unstacked first. Files: .pt/.pth/
.bin/.ckpt are read with `torch.load(weights_only=True)`, which never
unpickles arbitrary objects; torch and safetensors are imported only when
needed (the `interop` extra).
"""
from __future__ import annotations

import collections
import functools
import re
from typing import Any, Callable, Mapping, Optional

from flax import linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.models import backbone
from ssm_icl.models import config as config_lib
from ssm_icl.models import weights_io
from ssm_icl.models.weights_io import load_checkpoint_file  # pylint: disable=unused-import
from ssm_icl.models.weights_io import save_safetensors  # pylint: disable=unused-import
from ssm_icl.models.weights_io import save_torch  # pylint: disable=unused-import
from ssm_icl.nn import attention
from ssm_icl.nn import layers
from ssm_icl.nn import mamba
from ssm_icl.nn import s4

ModelConfig = config_lib.ModelConfig
SOURCES = ("reference", "hf_gpt2", "hf_mamba", "mamba_ssm")
# The vocabulary of the reference GPT-2 (`wte` rows of `include_unused`).
GPT2_VOCAB = 50257
_WRAPPER_PREFIX = {"hf_gpt2": "transformer.", "hf_mamba": "backbone.",
                   "mamba_ssm": "backbone."}
_MAX_LISTED = 20
# The token embedding of the language-model sources (after the prefix).
_EMBEDDING = {"hf_mamba": "embeddings.weight",
              "mamba_ssm": "embedding.weight"}

# Per-key conversions: torch array -> flax array and back.
_TO_FLAX: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "same": lambda w: w,
    "linear": lambda w: w.T,
    "dwconv": lambda w: w[:, 0, :].T,
    "pwconv": lambda w: w[:, :, 0].T,
}
_TO_TORCH: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "same": lambda k: k,
    "linear": lambda k: k.T,
    "dwconv": lambda k: k.T[:, None, :],
    "pwconv": lambda k: k.T[:, :, None],
}
# (torch key, "/"-separated flax param path, a key of _TO_FLAX).
_Entry = collections.namedtuple("_Entry", "key path kind")


def _torch_shape(kind: str, shape: tuple) -> tuple:
  return _TO_TORCH[kind](np.broadcast_to(np.float32(0), shape)).shape


def _linear(torch_name, flax_name, kind="linear"):
  return [(f"{torch_name}.weight", f"{flax_name}/kernel", kind),
          (f"{torch_name}.bias", f"{flax_name}/bias", "same")]


def _norm(torch_name, flax_name):
  return [(f"{torch_name}.weight", f"{flax_name}/scale", "same"),
          (f"{torch_name}.bias", f"{flax_name}/bias", "same")]


def _s4d_core(t):
  return [(f"{t}.D", "D", "same")] + [
      (f"{t}.kernel.{n}", n, "same")
      for n in ("log_dt", "log_A_real", "A_imag", "C")]


_CONV = [("conv1d.weight", "conv1d/kernel", "dwconv"),
         ("conv1d.bias", "conv1d/bias", "same")]
# Mixer parameters, relative to the mixer: (torch key, flax path, kind).
# Entries whose flax path the model lacks (e.g. in_proj.bias) are dropped.
_MIXER_ENTRIES = {
    "mamba": (_linear("in_proj", "in_proj") + _CONV
              + _linear("x_proj", "x_proj") + _linear("dt_proj", "dt_proj")
              + [("A_log", "A_log", "same"), ("D", "D", "same")]
              + _linear("out_proj", "out_proj")),
    # nanoGPT CausalSelfAttention of the hybrids: nn.Linear layers.
    "attn": _linear("c_attn", "c_attn") + _linear("c_proj", "c_proj"),
    "s4d": (_s4d_core("s4")
            + _linear("s4.output_linear.0", "output_linear", "pwconv")),
    "s4_mamba": (_linear("in_proj", "in_proj") + _CONV
                 + _s4d_core("S4DMamba") + _linear("out_proj", "out_proj")),
    # HF GPT-2 attention and MLP: Conv1D layers ([in, out] weights).
    "gpt2_attn": (_linear("attn.c_attn", "c_attn", "same")
                  + _linear("attn.c_proj", "c_proj", "same")),
    "mlp": (_linear("c_fc", "c_fc", "same")
            + _linear("c_proj", "c_proj", "same")),
}
_MIXER_ENTRIES["gpt2_mlp"] = [("mlp." + k, p, c)
                              for k, p, c in _MIXER_ENTRIES["mlp"]]
_MIXER_KIND = {mamba.MambaMixer: "mamba",
               attention.CausalSelfAttention: "attn", s4.S4DMixer: "s4d",
               s4.S4MambaMixer: "s4_mamba", layers.MLP: "mlp"}
# Keys a source may hold that the model never uses (see module docstring).
IGNORED = {
    "gpt2": (r"wte\.weight", r"h\.\d+\.attn\.(bias|masked_bias)",
             r"lm_head\.weight"),
    "mixer": (r"embeddings?\.weight", r"layers\.\d+\.mixer\.bias",
              r"lm_head\.weight"),
}


@functools.lru_cache(maxsize=32)
def _expected_shapes(module: nn.Module, width: Optional[int]) -> tuple:
  """((path, shape, dtype), ...) of `module`'s params (abstract init).

  `width` is the token width; None for int token ids (a language model).
  """
  if width is None:
    tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  else:
    tokens = jax.ShapeDtypeStruct((1, 1, width), jnp.float32)
  variables = jax.eval_shape(
      functools.partial(module.init, deterministic=True), jax.random.key(0),
      tokens)
  flat = traverse_util.flatten_dict(_strip_boxes(variables["params"]),
                                    sep="/")
  return tuple((p, tuple(v.shape), v.dtype) for p, v in flat.items())


def _expected(config: ModelConfig) -> dict[str, tuple]:
  model = backbone.ICLModel(config.replace(scan_layers=False))
  width = None if config.is_language_model else config.d_in
  return {p: (s, d) for p, s, d in _expected_shapes(model, width)}


def _strip_boxes(tree: Any) -> Any:
  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
  return jax.tree.map(lambda x: x.value if is_box(x) else x, tree,
                      is_leaf=is_box)


def _is_gpt2_layout(pattern: tuple[str, ...]) -> bool:
  return pattern == ("attn", "mlp") * (len(pattern) // 2)


def _layout(config: ModelConfig, source: str,
            expected: Mapping[str, Any]) -> tuple[list[_Entry], tuple]:
  """The entries of `source` for `config`, and its ignored-key regexes."""
  if source not in SOURCES:
    raise ValueError(f"Unknown source/target {source!r}; expected one of "
                     f"{list(SOURCES)}.")
  pattern = config.block_pattern
  gpt2 = (source == "hf_gpt2" or
          (source == "reference" and _is_gpt2_layout(pattern)))
  if gpt2 and not _is_gpt2_layout(pattern):
    raise ValueError(f"source {source!r} holds GPT-2 layers, i.e. the block "
                     f"pattern ('attn', 'mlp') * n; family={config.family!r}"
                     f" has {list(pattern)}.")
  if source in ("hf_mamba", "mamba_ssm") and set(pattern) != {"mamba"}:
    raise ValueError(f"source {source!r} holds only Mamba blocks; "
                     f"family={config.family!r} has {list(pattern)}.")
  if config.is_language_model and source not in _EMBEDDING:
    raise ValueError(f"A language model (vocab_size={config.vocab_size}) "
                     f"loads from source 'hf_mamba' or 'mamba_ssm', not "
                     f"{source!r}.")
  bb = "_backbone." if source == "reference" else ""
  raw = []  # (torch key, flax path, kind)

  def block(i, torch_prefix, norm, kind, mixer=""):
    raw.extend(_norm(torch_prefix + norm, f"blocks_{i}/norm") + [
        (torch_prefix + mixer + k, f"blocks_{i}/mixer/{p}", c)
        for k, p, c in _MIXER_ENTRIES[kind]])

  if gpt2:
    raw.append((f"{bb}wpe.weight", "wpe", "same"))
    for i in range(len(pattern) // 2):
      block(2 * i, f"{bb}h.{i}.", "ln_1", "gpt2_attn")
      block(2 * i + 1, f"{bb}h.{i}.", "ln_2", "gpt2_mlp")
    raw += _norm(f"{bb}ln_f", "ln_f")
  else:
    if source == "reference":  # The Standard Hybrid's table.
      raw.append(("wpe.weight", "wpe", "same"))
    for i, kind in enumerate(pattern):
      if kind not in ("mamba", "attn", "s4d", "s4_mamba"):
        raise ValueError(f"Block kind '{kind}' (blocks_{i}) has no "
                         f"counterpart in the reference MixerModel.")
      block(i, f"{bb}layers.{i}.", "norm", kind, mixer="mixer.")
    raw += _norm(f"{bb}norm_f", "ln_f")
  if source == "reference":
    raw += _linear("_read_in", "read_in") + _linear("_read_out", "read_out")
  if source in _EMBEDDING:  # Used when the config is a language model.
    raw += [(_EMBEDDING[source], "embedding/embedding", "same"),
            ("lm_head.weight", "lm_head/kernel", "linear")]
  entries = [_Entry(*r) for r in raw if r[1] in expected]
  ignored = tuple(bb + r for r in IGNORED["gpt2" if gpt2 else "mixer"])
  return entries, ignored


def _listing(title: str, items: list[str]) -> str:
  more = (f" ... and {len(items) - _MAX_LISTED} more"
          if len(items) > _MAX_LISTED else "")
  return f"\n  {title} ({len(items)}): {', '.join(items[:_MAX_LISTED])}{more}"


def guess_source(keys) -> Optional[str]:
  """The source whose names `keys` look like, or None."""
  keys = list(keys)
  if any(k.startswith(("_backbone.", "_read_in.")) for k in keys):
    return "reference"
  if any(re.match(r"(transformer\.)?h\.\d+\.", k) for k in keys):
    return "hf_gpt2"
  if any(re.match(r"(backbone\.)?embeddings\.", k) for k in keys):
    return "hf_mamba"
  if any(re.match(r"(backbone\.)?layers\.\d+\.mixer\.", k) for k in keys):
    return "mamba_ssm"
  return None


def _check(found: Mapping[str, tuple], want: Mapping[str, tuple],
           header: str, ignored: tuple = ()) -> None:
  """Raises ValueError listing missing, unexpected and mis-shaped names."""
  missing = [k for k in want if k not in found]
  unexpected = [k for k in found if k not in want and
                not any(re.fullmatch(r, k) for r in ignored)]
  shapes = [f"{k}: expected {want[k]}, found {found[k]}"
            for k in want if k in found and found[k] != want[k]]
  if not (missing or unexpected or shapes):
    return
  msg = header + "".join(_listing(t, i) for t, i in (
      ("missing keys", missing), ("unexpected keys", unexpected),
      ("mis-shaped keys", shapes)) if i)
  if any(k.endswith(("norm.bias", "norm_f.bias")) for k in missing):
    msg += ("\n  Missing LayerNorm biases: an RMSNorm checkpoint (HF / "
            "pretrained Mamba)? Load it into a config with norm='rms' "
            "(and vocab_size for a language model).")
  raise ValueError(msg)


def _convert(arrays, entries, expected, header, ignored=()) -> dict:
  """Checks `arrays` against `entries`; returns {flax path: jax array}."""
  _check({k: tuple(v.shape) for k, v in arrays.items()},
         {e.key: _torch_shape(e.kind, expected[e.path][0]) for e in entries},
         header, ignored)
  return {e.path: jnp.asarray(_TO_FLAX[e.kind](arrays[e.key]),
                              expected[e.path][1]) for e in entries}


def _export(flat, entries, prefix="") -> dict[str, np.ndarray]:
  # Writable C-order copies: torch.from_numpy wants both.
  return {prefix + e.key: np.array(_TO_TORCH[e.kind](np.asarray(
      flat[e.path])), order="C") for e in entries}


def _strip_prefix(arrays, source, prefix):
  if prefix is None:
    prefix = _WRAPPER_PREFIX.get(source, "")
    if not any(k.startswith(prefix) for k in arrays):
      prefix = ""
  if not prefix:
    return arrays
  return {k[len(prefix):] if k.startswith(prefix) else k: v
          for k, v in arrays.items()}


def load_state_dict(config: Any, state_dict: Mapping[str, Any], *,
                    source: str = "reference", params: Any = None,
                    prefix: Optional[str] = None) -> dict:
  """Converts a PyTorch state dict into `ICLModel(config)` params.

  Args:
    config: a `ModelConfig` (or anything `ModelConfig.from_config_dict`
      takes).
    state_dict: mapping of torch names to torch tensors or numpy arrays.
    source: one of `SOURCES` (see the module docstring).
    params: params to take what the source lacks from (read-in/read-out of
      the backbone-only sources); required for those, ignored otherwise.
    prefix: a prefix to strip from every key; None strips the source's
      wrapper prefix ("transformer." / "backbone.") when keys have it.

  Returns:
    The "params" collection (unwrapped, unboxed), in the config's parameter
    dtypes and layout (stacked when `scan_layers`).

  Raises:
    ValueError: on missing, unexpected or mis-shaped keys (all listed, with
      expected and found shapes), an unknown source, or a block pattern the
      source cannot hold.
  """
  config = ModelConfig.from_config_dict(config)
  arrays = _strip_prefix(weights_io.to_numpy(state_dict), source, prefix)
  # Older reference S4-Mamba checkpoints named the S4D core `S4D`.
  arrays = {k.replace(".mixer.S4D.", ".mixer.S4DMamba."): v
            for k, v in arrays.items()}
  expected = _expected(config)
  entries, ignored = _layout(config, source, expected)
  header = (f"State dict does not match source={source!r} for "
            f"family={config.family!r}")
  guess = guess_source(arrays)
  if guess not in (None, source):
    header += f" (the keys look like source={guess!r})"
  flat = _convert(arrays, entries, expected, header + ":", ignored)
  rest = [p for p in expected if p not in flat]
  if rest:
    if params is None:
      raise ValueError(f"source={source!r} has no {rest}; pass params= "
                       f"(e.g. a fresh init) to take them from.")
    given = _flat_params(params, config)
    for p in rest:
      if p not in given or tuple(given[p].shape) != expected[p][0]:
        raise ValueError(f"params has no {p!r} of shape {expected[p][0]}.")
      flat[p] = jnp.asarray(given[p], expected[p][1])
  tree = traverse_util.unflatten_dict(flat, sep="/")
  return backbone.stack_layers(tree, config) if config.scan_layers else tree


def hf_mamba_config(hf_config: Any, **overrides: Any) -> ModelConfig:
  """The language-model `ModelConfig` of a Hugging Face `MambaConfig`.

  Args:
    hf_config: a `transformers.MambaConfig` (e.g. `model.config`).
    **overrides: fields to set on top (e.g. dtype="bfloat16").

  Returns:
    A Mamba-family config with RMSNorm, the vocabulary and tied head of
    `hf_config`, ready for `load_state_dict(..., source="hf_mamba")`.

  Raises:
    ValueError: on HF options ICLModel does not implement (in/out
      projection biases, no conv bias, an activation other than silu, an
      eps other than 1e-5).
  """
  unsupported = {"use_bias": False, "use_conv_bias": True,
                 "hidden_act": "silu", "layer_norm_epsilon": 1e-5}
  for name, want in unsupported.items():
    value = getattr(hf_config, name, want)
    if value != want:
      raise ValueError(f"MambaConfig.{name}={value!r} is not supported; "
                       f"ICLModel implements {name}={want!r}.")
  fields = dict(
      family="mamba", n_layer=hf_config.num_hidden_layers,
      d_model=hf_config.hidden_size, d_state=hf_config.state_size,
      d_conv=hf_config.conv_kernel, expand=hf_config.expand,
      dt_rank=hf_config.time_step_rank, norm="rms",
      residual_in_fp32=bool(hf_config.residual_in_fp32),
      vocab_size=hf_config.vocab_size,
      tie_embeddings=bool(getattr(hf_config, "tie_word_embeddings", True)))
  fields.update(overrides)
  return ModelConfig(**fields)


def _flat_params(params: Any, config: ModelConfig) -> dict[str, Any]:
  """Loop-layout flat params from a (wrapped, boxed, stacked) params tree."""
  params = _strip_boxes(params)
  if isinstance(params, Mapping) and set(params) == {"params"}:
    params = params["params"]
  if config.scan_layers:
    params = backbone.unstack_layers(params, config)
  return traverse_util.flatten_dict(dict(params), sep="/")


def export_state_dict(config: Any, params: Any, *,
                      target: str = "reference", include_unused: bool = False,
                      prefix: str = "") -> dict[str, np.ndarray]:
  """Converts `ICLModel(config)` params into a PyTorch state dict.

  Args:
    config: a `ModelConfig` (or a mapping / ConfigDict of one).
    params: the model's params (optionally wrapped as {"params": ...} and/or
      boxed; stacked when `config.scan_layers`).
    target: one of `SOURCES`; backbone-only targets drop read-in/read-out.
    include_unused: add zero placeholders for the reference's unused
      `_backbone.wte.weight` [50257, D] / `_backbone.embedding.weight`
      [1, D] (target "reference" only).
    prefix: prepended to every key (e.g. "backbone.").

  Returns:
    {torch name: contiguous numpy array in the parameter's dtype}.

  Raises:
    ValueError: if `params` does not match the config (missing, unexpected
      or mis-shaped entries are listed) or the target cannot hold it.
  """
  config = ModelConfig.from_config_dict(config)
  expected = _expected(config)
  flat = _flat_params(params, config)
  _check({p: tuple(np.shape(v)) for p, v in flat.items()},
         {p: shape for p, (shape, _) in expected.items()},
         f"params do not match family={config.family!r}:")
  out = _export(flat, _layout(config, target, expected)[0], prefix)
  if include_unused:
    if target != "reference":
      raise ValueError(f"include_unused is only for target='reference', "
                       f"not {target!r}.")
    if _is_gpt2_layout(config.block_pattern):
      name, rows = "_backbone.wte.weight", GPT2_VOCAB
    else:
      name, rows = "_backbone.embedding.weight", 1
    out[prefix + name] = np.zeros((rows, config.d_model), np.float32)
  return out


def _mixer_entries(mixer: nn.Module) -> tuple[list[_Entry], dict]:
  kind = _MIXER_KIND.get(type(mixer))
  if kind is None:
    raise TypeError(f"No PyTorch layout for {type(mixer).__name__}; "
                    f"expected one of "
                    f"{sorted(t.__name__ for t in _MIXER_KIND)}.")
  expected = {p: (s, d) for p, s, d in
              _expected_shapes(mixer, mixer.d_model)}
  entries = [_Entry(*e) for e in _MIXER_ENTRIES[kind] if e[1] in expected]
  return entries, expected


def load_mixer_state_dict(mixer: nn.Module, state_dict: Mapping[str, Any], *,
                          prefix: str = "") -> dict:
  """Params of one mixer from the state dict of its PyTorch counterpart.

  `MambaMixer` <- official `Mamba` / HF `MambaMixer`; `CausalSelfAttention`
  <- the reference (nanoGPT) `CausalSelfAttention`; `S4DMixer` <-
  `S4Wrapper`; `S4MambaMixer` <- `S4Mamba`; `MLP` <- HF `GPT2MLP`.

  Args:
    mixer: the (unbound) flax mixer module.
    state_dict: torch names to tensors or arrays.
    prefix: stripped from the keys that have it, e.g. "layers.0.mixer.".

  Returns:
    The mixer's "params" collection.

  Raises:
    ValueError: on missing, unexpected or mis-shaped keys.
  """
  entries, expected = _mixer_entries(mixer)
  arrays = _strip_prefix(weights_io.to_numpy(state_dict), "", prefix)
  flat = _convert(arrays, entries, expected,
                  f"State dict does not match {type(mixer).__name__}:")
  return traverse_util.unflatten_dict(flat, sep="/")


def export_mixer_state_dict(mixer: nn.Module,
                            params: Any) -> dict[str, np.ndarray]:
  """The inverse of `load_mixer_state_dict`."""
  entries, _ = _mixer_entries(mixer)
  params = _strip_boxes(params)
  if set(params) == {"params"}:
    params = params["params"]
  return _export(traverse_util.flatten_dict(dict(params), sep="/"), entries)
