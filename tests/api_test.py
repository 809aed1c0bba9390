"""The public API of ssm_icl.ops, ssm_icl.nn and ssm_icl.models.

Pins the exported names (`__all__`): adding or removing one is an API change
that must show up in review. Every exported function and class has its own
docstring, typed parameters, and, when it takes or returns arrays, a
docstring that names their shapes ("[b, l, d_model]").
"""

import dataclasses
import enum
import inspect
import re
import types

from absl.testing import absltest
from absl.testing import parameterized

from ssm_icl import models
from ssm_icl import nn as ssm_nn
from ssm_icl import ops

_EXPORTS = {
    "ops": (ops, [
        "AttnImpl", "ScanImpl", "cached_attention", "causal_attention",
        "causal_conv_fft", "linear_scan", "model_flops", "param_count",
        "s4d_kernel", "s4d_recurrence", "selective_scan",
        "selective_scan_naive"]),
    "nn": (ssm_nn, [
        "AttentionCache", "AttentionConfig", "Block", "BlockKind",
        "BlockSettings", "CausalDepthwiseConv1d", "CausalSelfAttention",
        "InitStyle", "MLP", "MambaCache", "MambaConfig", "MambaMixer",
        "MixerConfigs", "MlpConfig", "NormKind", "S4Config", "S4DCache",
        "S4DMixer", "S4MambaCache", "S4MambaMixer", "StatelessCache",
        "get_block", "get_rules", "norm"]),
    "models": (models, [
        "FAMILY_NAMES", "ICLModel", "ModelCache", "ModelConfig", "ModelInit",
        "PosEmb", "block_pattern", "build_model", "count_params",
        "export_state_dict", "greedy_generate", "hf_mamba_config",
        "load_checkpoint_file", "load_state_dict", "save_safetensors",
        "stack_layers", "unstack_layers"]),
}

# A shape in a docstring: "[b, l, d_model]", "[batch, E, N]", "[H, l]".
_SHAPE = re.compile(r"\[[\w ,.*/+-]+(?:, [\w ,.*/+-]+)+\]|\[\w+\]")


def _exported():
  for package, (module, names) in _EXPORTS.items():
    for name in names:
      yield f"{package}.{name}", getattr(module, name)


def _own_doc(obj) -> str:
  """The docstring obj defines itself (not a dataclass's generated one)."""
  doc = obj.__doc__ if isinstance(obj, (type, types.ModuleType)) else (
      inspect.getdoc(obj))
  if isinstance(obj, type) and doc and (
      doc.startswith(obj.__name__ + "(") or doc == type.__doc__):
    return ""
  return doc or ""


def _handles_arrays(obj) -> bool:
  """Whether obj (or its __call__) takes or returns a `jax.Array`."""
  fn = obj.__call__ if isinstance(obj, type) else obj
  try:
    sig = inspect.signature(fn)
  except (TypeError, ValueError):
    return False
  notes = [p.annotation for p in sig.parameters.values()]
  notes.append(sig.return_annotation)
  return any("Array" in str(n) for n in notes)


def _signature_docs(obj) -> str:
  """All docstrings that describe how obj is called."""
  docs = [_own_doc(obj)]
  if isinstance(obj, type):
    for method in ("__call__", "__init__", "init_cache"):
      if method in vars(obj):
        docs.append(inspect.getdoc(getattr(obj, method)) or "")
  return "\n".join(docs)


class ApiTest(parameterized.TestCase):

  @parameterized.named_parameters(
      (package, module, names)
      for package, (module, names) in _EXPORTS.items())
  def test_exported_names_are_pinned(self, module, names):
    self.assertEqual(sorted(module.__all__), sorted(names))
    for name in names:
      self.assertTrue(hasattr(module, name), name)

  def test_every_export_has_a_docstring(self):
    for label, obj in _exported():
      with self.subTest(label):
        if isinstance(obj, tuple):  # a constant: described by its package
          package = label.split(".")[0]
          self.assertIn(label.split(".")[1], _EXPORTS[package][0].__doc__)
          continue
        self.assertGreater(len(_own_doc(obj)), 20, label)

  def test_functions_have_typed_signatures(self):
    for label, obj in _exported():
      if not inspect.isfunction(obj):
        continue
      with self.subTest(label):
        sig = inspect.signature(obj)
        for p in sig.parameters.values():
          if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
          self.assertIsNot(p.annotation, p.empty, f"{label}({p.name})")
        self.assertIsNot(sig.return_annotation, sig.empty, label)

  def test_dataclass_fields_are_typed(self):
    for label, obj in _exported():
      if isinstance(obj, type) and dataclasses.is_dataclass(obj):
        with self.subTest(label):
          for f in dataclasses.fields(obj):
            self.assertNotIn(f.type, (None, ""), f"{label}.{f.name}")

  def test_array_interfaces_document_shapes(self):
    checked = 0
    for label, obj in _exported():
      if isinstance(obj, (tuple, types.ModuleType)) or not _handles_arrays(
          obj):
        continue
      with self.subTest(label):
        self.assertRegex(_signature_docs(obj), _SHAPE, label)
        checked += 1
    self.assertGreater(checked, 15)  # the mixers, the model and the ops

  def test_enums_are_string_valued(self):
    for label, obj in _exported():
      if isinstance(obj, type) and issubclass(obj, enum.Enum):
        with self.subTest(label):
          self.assertTrue(issubclass(obj, str), label)
          for member in obj:
            self.assertEqual(obj(member.value), member)


if __name__ == "__main__":
  absltest.main()
