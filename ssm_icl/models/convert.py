"""Import and export PyTorch state dicts as `ICLModel` parameters.

Sources (`source=` on load, `target=` on export):

  "reference"  the paper's PyTorch ICL models (krafton-ai/mambaformer-icl):
               `_read_in`, `_backbone`, `_read_out`, plus a top-level `wpe`
               for the Standard Hybrid. The Transformer's `_backbone` is a HF
               `GPT2Model`; every other family's is the vendored Mamba
               `MixerModel` (`layers.{i}.norm`, `layers.{i}.mixer.*`,
               `norm_f`). MambaFormer's leading Mamba block (layer_idx -1) is
               `layers.0`, so indices equal our `blocks_{i}`.
  "hf_gpt2"    a bare HF `GPT2Model` (`wpe`, `h.{i}.*`, `ln_f`); a
               `transformer.` prefix (`GPT2LMHeadModel`) is stripped.
  "hf_mamba"   a HF `MambaModel`; a `backbone.` prefix is stripped.
  "mamba_ssm"  an official `mamba_ssm` `MixerModel` / `MambaLMHeadModel`
               (same names as "hf_mamba"; `backbone.` is stripped).

The three backbone-only sources hold no read-in/read-out: on load those
parameters (and any other one the source lacks) come from `params=`, e.g. a
fresh init; on export they are dropped.

A GPT-2 layer i is our blocks 2i ("attn", `ln_1`) and 2i+1 ("mlp", `ln_2`).
Tensor layouts: a `nn.Linear` weight [out, in] is our kernel transposed; a
GPT-2 `Conv1D` weight is [in, out], our kernel as is; Mamba's depthwise
`Conv1d` weight [E, 1, K] is our [K, E] kernel transposed; S4D's
`output_linear` `Conv1d(H, 2H, 1)` weight is [2H, H, 1]; S4D's `C`
(`view_as_real`, [H, N/2, 2]) and everything else map unchanged.

Ignored on load (`IGNORED`): GPT-2's `wte` (the ICL models feed embeddings,
never token ids) and `lm_head`, the causal-mask buffers of older
transformers / nanoGPT (`attn.bias`, `attn.masked_bias`, `mixer.bias`), and
the MixerModel's unused `embedding` (HF: `embeddings`).
`export_state_dict(..., include_unused=True)` writes zero placeholders for
the reference's `wte` / `embedding` so PyTorch's strict loading accepts it.

HF and pretrained Mamba checkpoints use RMSNorm (no `norm.bias`); ICLModel
uses LayerNorm like the paper's code, so such checkpoints are refused (missing
bias keys) rather than loaded inexactly. With `scan_layers=True` loaded params
are stacked (`backbone.stack_layers`) and exported params unstacked first.

Files: `load_checkpoint_file` reads .safetensors and .npz without torch, and
.pt/.pth/.bin/.ckpt with `torch.load(weights_only=True)`, which refuses to
unpickle anything but tensors and plain containers. torch, safetensors and
transformers (the `interop` extra) are imported only when needed.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import pickle
import re
from typing import Any, Callable, Mapping, Optional

from flax import linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.models import backbone
from ssm_icl.models import config as config_lib
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
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_MAX_LISTED = 20

# Per-key conversions: torch array -> flax array, flax -> torch, and the
# torch shape of a flax shape.
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
_TORCH_SHAPE: dict[str, Callable[[tuple], tuple]] = {
    "same": lambda s: tuple(s),
    "linear": lambda s: tuple(s[::-1]),
    "dwconv": lambda s: (s[1], 1, s[0]),
    "pwconv": lambda s: (s[1], s[0], 1),
}


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


@dataclasses.dataclass(frozen=True)
class _Entry:
  key: str   # torch state-dict key
  path: str  # flax param path, "/"-separated
  kind: str  # a key of _TO_FLAX


def _import(module: str):
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ImportError(f"{module} is needed here; install the `interop` extra "
                      f"(torch, transformers, safetensors).") from e


@functools.lru_cache(maxsize=32)
def _expected_shapes(module: nn.Module, width: int) -> tuple:
  """((path, shape, dtype), ...) of `module`'s params, for a [1, 1, width]
  input, without allocating them."""
  tokens = jax.ShapeDtypeStruct((1, 1, width), jnp.float32)
  variables = jax.eval_shape(
      functools.partial(module.init, deterministic=True), jax.random.key(0),
      tokens)
  flat = traverse_util.flatten_dict(_strip_boxes(variables["params"]),
                                    sep="/")
  return tuple((p, tuple(v.shape), v.dtype) for p, v in flat.items())


def _expected(config: ModelConfig) -> dict[str, tuple]:
  model = backbone.ICLModel(config.replace(scan_layers=False))
  return {p: (s, d) for p, s, d in _expected_shapes(model, config.d_in)}


def _strip_boxes(tree: Any) -> Any:
  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
  return jax.tree.map(lambda x: x.value if is_box(x) else x, tree,
                      is_leaf=is_box)


def _is_gpt2_layout(pattern: tuple[str, ...]) -> bool:
  return len(pattern) % 2 == 0 and pattern == ("attn", "mlp") * (
      len(pattern) // 2)


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
  bb = "_backbone." if source == "reference" else ""
  raw = []  # (torch key, flax path, kind)
  if gpt2:
    raw.append((f"{bb}wpe.weight", "wpe", "same"))
    for i in range(len(pattern) // 2):
      a, m, h = f"blocks_{2 * i}/", f"blocks_{2 * i + 1}/", f"{bb}h.{i}."
      raw += _norm(f"{h}ln_1", f"{a}norm")
      raw += [(h + k, a + "mixer/" + p, c)
              for k, p, c in _MIXER_ENTRIES["gpt2_attn"]]
      raw += _norm(f"{h}ln_2", f"{m}norm")
      raw += [(f"{h}mlp.{k}", m + "mixer/" + p, c)
              for k, p, c in _MIXER_ENTRIES["mlp"]]
    raw += _norm(f"{bb}ln_f", "ln_f")
  else:
    if source == "reference":  # The Standard Hybrid's table.
      raw.append(("wpe.weight", "wpe", "same"))
    for i, kind in enumerate(pattern):
      if kind not in _MIXER_ENTRIES:
        raise ValueError(f"Block kind {kind!r} (blocks_{i}) has no "
                         f"counterpart in the reference MixerModel.")
      t, f = f"{bb}layers.{i}.", f"blocks_{i}/"
      raw += _norm(f"{t}norm", f"{f}norm")
      raw += [(f"{t}mixer.{k}", f"{f}mixer/{p}", c)
              for k, p, c in _MIXER_ENTRIES[kind]]
    raw += _norm(f"{bb}norm_f", "ln_f")
  if source == "reference":
    raw += _linear("_read_in", "read_in") + _linear("_read_out", "read_out")
  entries = [_Entry(*r) for r in raw if r[1] in expected]
  ignored = tuple(bb + r for r in IGNORED["gpt2" if gpt2 else "mixer"])
  return entries, ignored


def _to_numpy(state_dict: Any) -> dict[str, np.ndarray]:
  """Mapping of str -> array / torch tensor, as numpy (bfloat16 kept)."""
  if not isinstance(state_dict, Mapping):
    raise TypeError(f"state_dict must be a mapping of names to arrays, got "
                    f"{type(state_dict).__name__}.")
  out, bad = {}, []
  for k, v in state_dict.items():
    if type(v).__module__.startswith("torch") and hasattr(v, "detach"):
      torch = _import("torch")
      v = v.detach().cpu()
      if v.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret.
        out[k] = v.view(torch.int16).numpy().view(jnp.bfloat16)
      else:
        out[k] = v.numpy()
    elif isinstance(v, (np.ndarray, jax.Array)):
      out[k] = np.asarray(v)
    else:
      bad.append(f"{k!r} ({type(v).__name__})")
    if not isinstance(k, str):
      bad.append(f"{k!r} (key is not a str)")
  if bad:
    raise ValueError(f"state_dict values must be numpy/JAX arrays or torch "
                     f"tensors; bad entries: {', '.join(bad[:_MAX_LISTED])}. "
                     f"(A training checkpoint? Pass its 'model_state_dict'.)")
  return out


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


def _check_keys(arrays, entries, ignored, expected, where: str) -> None:
  """Raises ValueError listing missing, unexpected and mis-shaped keys."""
  by_key = {e.key: e for e in entries}
  missing = [k for k in by_key if k not in arrays]
  unexpected = [k for k in arrays if k not in by_key and
                not any(re.fullmatch(r, k) for r in ignored)]
  shapes = []
  for k, e in by_key.items():
    want = _TORCH_SHAPE[e.kind](expected[e.path][0])
    if k in arrays and tuple(arrays[k].shape) != want:
      shapes.append(f"{k}: expected {want}, found {tuple(arrays[k].shape)}")
  if not (missing or unexpected or shapes):
    return
  msg = f"State dict does not match {where}:"
  for title, items in (("missing keys", missing),
                       ("unexpected keys", unexpected),
                       ("mis-shaped keys", shapes)):
    if items:
      msg += _listing(title, items)
  if any(k.endswith("norm.bias") or k.endswith("norm_f.bias")
         for k in missing):
    msg += ("\n  Missing LayerNorm biases: an RMSNorm checkpoint (HF / "
            "pretrained Mamba)? ICLModel uses LayerNorm like the paper's "
            "code, so it cannot load RMSNorm weights exactly.")
  raise ValueError(msg)


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
  arrays = _strip_prefix(_to_numpy(state_dict), source, prefix)
  # Older reference S4-Mamba checkpoints named the S4D core `S4D`.
  arrays = {k.replace(".mixer.S4D.", ".mixer.S4DMamba."): v
            for k, v in arrays.items()}
  expected = _expected(config)
  entries, ignored = _layout(config, source, expected)
  where = f"source={source!r} for family={config.family!r}"
  guess = guess_source(arrays)
  if guess not in (None, source):
    where += f" (the keys look like source={guess!r})"
  _check_keys(arrays, entries, ignored, expected, where)
  flat = {e.path: jnp.asarray(_TO_FLAX[e.kind](arrays[e.key]),
                              expected[e.path][1]) for e in entries}
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
  flat = {p: np.asarray(v) for p, v in _flat_params(params, config).items()}
  shapes = [f"{p}: expected {expected[p][0]}, found {tuple(v.shape)}"
            for p, v in flat.items()
            if p in expected and tuple(v.shape) != expected[p][0]]
  missing = [p for p in expected if p not in flat]
  unexpected = [p for p in flat if p not in expected]
  if missing or unexpected or shapes:
    raise ValueError(
        f"params do not match family={config.family!r}:"
        + "".join(_listing(t, i) for t, i in (
            ("missing", missing), ("unexpected", unexpected),
            ("mis-shaped", shapes)) if i))
  entries, _ = _layout(config, target, expected)
  # Writable C-order copies: torch.from_numpy wants both.
  out = {prefix + e.key: np.array(_TO_TORCH[e.kind](flat[e.path]), order="C")
         for e in entries}
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
  return [_Entry(*e) for e in _MIXER_ENTRIES[kind] if e[1] in expected
          ], expected


def load_mixer_state_dict(mixer: nn.Module, state_dict: Mapping[str, Any], *,
                          prefix: str = "") -> dict:
  """Params of one mixer from the state dict of its PyTorch counterpart.

  `MambaMixer` <- official `Mamba` / HF `MambaMixer`; `CausalSelfAttention`
  <- the reference (nanoGPT) `CausalSelfAttention`; `S4DMixer` <-
  `S4Wrapper`; `S4MambaMixer` <- `S4Mamba`; `MLP` <- HF `GPT2MLP`.

  Args:
    mixer: the (unbound) flax mixer module.
    state_dict: torch names (relative to the mixer after `prefix`) to
      tensors or arrays.
    prefix: stripped from the keys that have it, e.g. "layers.0.mixer.".

  Returns:
    The mixer's "params" collection.

  Raises:
    ValueError: on missing, unexpected or mis-shaped keys.
  """
  entries, expected = _mixer_entries(mixer)
  arrays = _strip_prefix(_to_numpy(state_dict), "", prefix)
  _check_keys(arrays, entries, (), expected, type(mixer).__name__)
  flat = {e.path: jnp.asarray(_TO_FLAX[e.kind](arrays[e.key]),
                              expected[e.path][1]) for e in entries}
  return traverse_util.unflatten_dict(flat, sep="/")


def export_mixer_state_dict(mixer: nn.Module,
                            params: Any) -> dict[str, np.ndarray]:
  """The inverse of `load_mixer_state_dict`."""
  entries, _ = _mixer_entries(mixer)
  flat = traverse_util.flatten_dict(dict(_strip_boxes(params)), sep="/")
  return {e.key: np.array(_TO_TORCH[e.kind](np.asarray(flat[e.path])),
                         order="C") for e in entries}


def load_checkpoint_file(path: str | os.PathLike, *,
                         key: Optional[str] = None) -> dict[str, np.ndarray]:
  """Reads a state dict from .safetensors, .npz or a torch file.

  Torch files are read with `torch.load(weights_only=True)`: tensors and
  plain containers only, never arbitrary pickled objects. A training
  checkpoint ({"model_state_dict": ..., "optimizer_state_dict": ...}, as the
  reference trainer writes) yields its model state dict.

  Args:
    path: a .safetensors, .npz, .pt, .pth, .bin or .ckpt file.
    key: the entry of a dict-of-dicts checkpoint to return; None picks
      "model_state_dict", "state_dict" or "model" when the top level is not a
      state dict itself.

  Returns:
    {name: numpy array}.

  Raises:
    ValueError: on an unknown suffix, a file holding arbitrary objects, or a
      missing `key`.
  """
  path = os.fspath(path)
  suffix = os.path.splitext(path)[1].lower()
  if suffix == ".safetensors":
    obj = _import("safetensors.numpy").load_file(path)
  elif suffix == ".npz":
    with np.load(path, allow_pickle=False) as f:
      obj = dict(f)
  elif suffix in _TORCH_SUFFIXES:
    torch = _import("torch")
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
      first = str(e).strip().splitlines()[0]
      raise ValueError(
          f"Refusing to load {path!r}: it pickles objects other than tensors "
          f"and plain containers, and only torch.load(weights_only=True) is "
          f"used, since unpickling arbitrary objects can run code. ({first})"
      ) from e
  else:
    raise ValueError(f"Unknown checkpoint suffix {suffix!r} of {path!r}; "
                     f"expected .safetensors, .npz or one of "
                     f"{list(_TORCH_SUFFIXES)}.")
  if key is not None:
    if not isinstance(obj, Mapping) or key not in obj:
      found = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
      raise ValueError(f"{path!r} has no entry key={key!r}; found {found}.")
    obj = obj[key]
  elif isinstance(obj, Mapping):
    for name in ("model_state_dict", "state_dict", "model"):
      if isinstance(obj.get(name), Mapping):
        obj = obj[name]
        break
  return _to_numpy(obj)


def save_safetensors(state_dict: Mapping[str, Any], path: str | os.PathLike,
                     *, metadata: Optional[dict[str, str]] = None) -> None:
  """Writes a state dict (arrays or tensors) as a .safetensors file."""
  arrays = {k: np.ascontiguousarray(v)
            for k, v in _to_numpy(state_dict).items()}
  _import("safetensors.numpy").save_file(arrays, os.fspath(path),
                                         metadata=metadata)


def save_torch(state_dict: Mapping[str, Any],
               path: str | os.PathLike) -> None:
  """Writes a state dict as plain torch tensors with `torch.save`."""
  torch = _import("torch")
  tensors = {}
  for k, v in _to_numpy(state_dict).items():
    if v.dtype == jnp.bfloat16:
      tensors[k] = torch.from_numpy(v.view(np.int16).copy()).view(
          torch.bfloat16)
    else:
      tensors[k] = torch.from_numpy(np.ascontiguousarray(v).copy())
  torch.save(tensors, os.fspath(path))
