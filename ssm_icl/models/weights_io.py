"""Reading and writing state-dict files (.safetensors, .npz, torch files).

torch and safetensors are optional (the `interop` extra) and imported only
when a file format needs them. Torch files are read with
`torch.load(weights_only=True)`, which never unpickles arbitrary objects.
"""

from __future__ import annotations

import importlib
import os
import pickle
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_MAX_LISTED = 20


def import_optional(module: str):
  """Imports an optional dependency of the `interop` extra, or explains."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ImportError(f"{module} is needed here; install the `interop` extra "
                      f"(torch, transformers, safetensors).") from e


def to_numpy(state_dict: Any) -> dict[str, np.ndarray]:
  """Mapping of str -> array / torch tensor, as numpy (bfloat16 kept)."""
  if not isinstance(state_dict, Mapping):
    raise TypeError(f"state_dict must be a mapping of names to arrays, got "
                    f"{type(state_dict).__name__}.")
  out, bad = {}, []
  for k, v in state_dict.items():
    if type(v).__module__.startswith("torch") and hasattr(v, "detach"):
      torch = import_optional("torch")
      v = v.detach().cpu()
      if v.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret.
        out[k] = v.view(torch.int16).numpy().view(jnp.bfloat16)
      else:
        out[k] = v.numpy()
    elif isinstance(v, (np.ndarray, np.generic, jax.Array)):
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
    obj = import_optional("safetensors.numpy").load_file(path)
  elif suffix == ".npz":
    with np.load(path, allow_pickle=False) as f:
      obj = dict(f)
  elif suffix in _TORCH_SUFFIXES:
    torch = import_optional("torch")
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
  return to_numpy(obj)


def save_safetensors(state_dict: Mapping[str, Any], path: str | os.PathLike,
                     *, metadata: Optional[dict[str, str]] = None) -> None:
  """Writes a state dict (arrays or tensors) as a .safetensors file."""
  arrays = {k: np.ascontiguousarray(v)
            for k, v in to_numpy(state_dict).items()}
  import_optional("safetensors.numpy").save_file(arrays, os.fspath(path),
                                         metadata=metadata)


def save_torch(state_dict: Mapping[str, Any],
               path: str | os.PathLike) -> None:
  """Writes a state dict as plain torch tensors with `torch.save`."""
  torch = import_optional("torch")
  tensors = {}
  for k, v in to_numpy(state_dict).items():
    # torch cannot take bfloat16 from numpy: move the bits as int16.
    is_bf16 = v.dtype == jnp.bfloat16
    t = torch.from_numpy(np.array(v.view(np.int16) if is_bf16 else v))
    tensors[k] = t.view(torch.bfloat16) if is_bf16 else t
  torch.save(tensors, os.fspath(path))
