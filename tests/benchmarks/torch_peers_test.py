"""Tests of benchmarks/torch_peers.py: the PyTorch peers build and train.

Needs the `interop` extra. Tiny shapes, one timed step each: the point is
that the peers are the reference's models on our config's shapes (depth,
width, heads, d_state, expand, d_conv) and that a step runs, not speed.
"""

import os
import sys

from absl.testing import absltest
import pytest
import torch
from torch import nn as tnn
from transformers.models.mamba import modeling_mamba

from ssm_icl.models import config as config_lib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), "benchmarks"))
import torch_peers  # pylint: disable=g-import-not-at-top,wrong-import-position

pytestmark = pytest.mark.interop


def _config(family, **kw):
  return config_lib.ModelConfig(
      family=family, n_layer=2, d_model=16, n_head=2, d_in=3, d_out=1,
      n_positions=16, d_state=4, **kw)


class TorchPeersTest(absltest.TestCase):

  def test_available(self):
    self.assertTrue(torch_peers.available())

  def test_transformer_peer_is_gpt2_with_our_shapes(self):
    model = torch_peers._models(_config("transformer"), n_positions=16)  # pylint: disable=protected-access
    cfg = model.backbone.config
    self.assertEqual((cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions),
                     (2, 16, 2, 16))
    self.assertEqual(model.read_in.in_features, 3)

  def test_mamba_peer_is_mixer_stack_with_our_shapes(self):
    model = torch_peers._models(_config("mamba", expand=3, d_conv=2),  # pylint: disable=protected-access
                                n_positions=16)
    self.assertLen(model.mixers, 2)
    mixer = model.mixers[0]
    self.assertIsInstance(mixer, modeling_mamba.MambaMixer)
    self.assertEqual((mixer.intermediate_size, mixer.ssm_state_size,
                      mixer.conv_kernel_size), (48, 4, 2))
    self.assertTrue(all(isinstance(n, tnn.LayerNorm) for n in model.norms))

  def test_bench_runs_a_step(self):
    for family in ("transformer", "mamba"):
      result = torch_peers.bench(_config(family), batch=2, n_tokens=6,
                                 n_positions=16, grad_clip=10.0, lr=1e-3,
                                 steps=1)
      self.assertGreater(result["step_ms"], 0.0)
      self.assertEqual(result["torch"], torch.__version__)

  def test_unknown_family(self):
    with self.assertRaisesRegex(ValueError, "No PyTorch peer.*'s4'"):
      torch_peers._models(_config("s4"), n_positions=16)  # pylint: disable=protected-access


if __name__ == "__main__":
  absltest.main()
