"""PyTorch CPU peers of the paper's Transformer and Mamba train steps.

The peers are what a researcher would otherwise run: the reference code's
models (a linear read-in, Hugging Face `GPT2Model` or a stack of Hugging Face
`MambaMixer` blocks in the reference's pre-norm residual layout, a final
LayerNorm, a linear read-out), trained with `torch.optim.Adam` and
`clip_grad_norm_` on the squared error of the predictions at the x tokens,
as the reference trains. They take the same shapes as our step (batch,
tokens, D, depth, heads, d_state, expand, d_conv) from the same config.

Hugging Face's `MambaMixer` runs its sequential `slow_forward` on a CPU
(the fused kernels are CUDA only), as it would for any CPU user. `GPT2Model`
uses the attention implementation `transformers` picks by default (SDPA in
current versions), the faster of its two CPU paths.

Needs the `interop` extra (torch, transformers); `available()` says whether
it is installed.
"""

from __future__ import annotations

import statistics
import time
from typing import Any


def available() -> bool:
  """Whether torch and transformers can be imported."""
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    import transformers  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def _models(model_cfg: Any, n_positions: int):
  """(read-in + backbone + read-out) torch module of the config's family."""
  # pylint: disable=g-import-not-at-top
  import torch
  from torch import nn
  import transformers
  from transformers.models.mamba import modeling_mamba
  # pylint: enable=g-import-not-at-top

  d, d_in = model_cfg.d_model, model_cfg.d_in
  if model_cfg.family == "transformer":
    gpt2 = transformers.GPT2Config(
        n_positions=n_positions, n_embd=d, n_layer=model_cfg.n_layer,
        n_head=model_cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, use_cache=False)

    class GPT2ICL(nn.Module):
      """The reference TransformerModel."""

      def __init__(self):
        super().__init__()
        self.read_in = nn.Linear(d_in, d)
        self.backbone = transformers.GPT2Model(gpt2)
        self.read_out = nn.Linear(d, model_cfg.d_out)

      def forward(self, tokens):
        out = self.backbone(inputs_embeds=self.read_in(tokens))
        return self.read_out(out.last_hidden_state)

    return GPT2ICL()
  if model_cfg.family != "mamba":
    raise ValueError(f"No PyTorch peer for family {model_cfg.family!r}.")
  hf = transformers.MambaConfig(
      hidden_size=d, state_size=model_cfg.d_state,
      num_hidden_layers=model_cfg.n_layer, expand=model_cfg.expand,
      conv_kernel=model_cfg.d_conv, use_bias=False, use_conv_bias=True)

  class MambaICL(nn.Module):
    """The reference's Mamba model: pre-norm MambaMixer blocks."""

    def __init__(self):
      super().__init__()
      self.read_in = nn.Linear(d_in, d)
      self.mixers = nn.ModuleList(
          [modeling_mamba.MambaMixer(hf, layer_idx=i)
           for i in range(model_cfg.n_layer)])
      self.norms = nn.ModuleList(
          [nn.LayerNorm(d) for _ in range(model_cfg.n_layer)])
      self.norm_f = nn.LayerNorm(d)
      self.read_out = nn.Linear(d, model_cfg.d_out)

    def forward(self, tokens):
      h, residual = self.read_in(tokens), None
      for mixer, norm in zip(self.mixers, self.norms):
        residual = h if residual is None else h + residual
        h = mixer(norm(residual))
      return self.read_out(self.norm_f(h + residual))

  del torch
  return MambaICL()


def bench(model_cfg: Any, *, batch: int, n_tokens: int, n_positions: int,
          grad_clip: float, lr: float, steps: int, seed: int = 0) -> dict:
  """Times the PyTorch peer's full train step (forward, backward, clip, Adam).

  Args:
    model_cfg: our `ModelConfig` (family "transformer" or "mamba").
    batch: prompts per step.
    n_tokens: tokens per prompt (2 per example).
    n_positions: the GPT-2 position table's rows.
    grad_clip: `clip_grad_norm_` threshold.
    lr: Adam learning rate.
    steps: timed steps, after one warm-up step.
    seed: torch seed of the weights and data.

  Returns:
    {"step_ms", "threads", "torch", "transformers", "impl"}.
  """
  # pylint: disable=g-import-not-at-top
  import torch
  import transformers
  # pylint: enable=g-import-not-at-top

  torch.manual_seed(seed)
  model = _models(model_cfg, n_positions)
  opt = torch.optim.Adam(model.parameters(), lr=lr)
  tokens = torch.randn(batch, n_tokens, model_cfg.d_in)
  targets = torch.randn(batch, n_tokens // 2, model_cfg.d_out)
  times = []
  for _ in range(steps + 1):
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    # The reference's loss: squared error of the predictions at x tokens.
    pred = model(tokens)[:, ::2]
    loss = ((pred - targets) ** 2).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    times.append(time.perf_counter() - start)
  impl = ("GPT2Model (" + model.backbone.config._attn_implementation + ")"  # pylint: disable=protected-access
          if model_cfg.family == "transformer" else
          "MambaMixer x %d (slow_forward)" % model_cfg.n_layer)
  return {"step_ms": 1e3 * statistics.median(times[1:]),
          "threads": torch.get_num_threads(), "torch": torch.__version__,
          "transformers": transformers.__version__, "impl": impl}
