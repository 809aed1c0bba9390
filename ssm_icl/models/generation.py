"""Greedy generation with a language-model `ICLModel` and its decode cache.

  ids = generation.greedy_generate(model, params, prompt_ids, 20)

runs the prompt once (`prefill`), then one `decode_step` per new token under
`lax.scan`, so the whole generation is one compiled program with O(1) work
per token in the Mamba blocks. The result equals Hugging Face
`MambaForCausalLM.generate(..., do_sample=False)` on the same weights.
"""

from __future__ import annotations

from typing import Any

import jax
from jax import lax
import jax.numpy as jnp


def greedy_generate(model: Any, params: Any, prompt: jax.Array,
                    max_new_tokens: int) -> jax.Array:
  """Extends each prompt by its `max_new_tokens` most likely next tokens.

  Args:
    model: a language-model `ICLModel` (`config.vocab_size` set).
    params: its params collection (or {"params": ...} variables).
    prompt: [b, l] int token ids.
    max_new_tokens: tokens to add (a Python int >= 1).

  Returns:
    [b, l + max_new_tokens] int32: the prompt, then the generated ids.

  Raises:
    ValueError: if the model is not a language model or on bad sizes.
  """
  if not model.config.is_language_model:
    raise ValueError("greedy_generate needs a language model (a config with "
                     "vocab_size); an ICL model has no token ids.")
  if (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
      or max_new_tokens < 1):
    raise ValueError(f"max_new_tokens must be a positive int, got "
                     f"{max_new_tokens!r}.")
  if prompt.ndim != 2 or prompt.shape[1] < 1:
    raise ValueError(f"prompt must be [batch, length >= 1] token ids, got "
                     f"shape {prompt.shape}.")
  prompt = prompt.astype(jnp.int32)
  logits, cache = model.prefill(params, prompt,
                                prompt.shape[1] + max_new_tokens)
  first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)  # [b]

  def step(carry, _):
    token, cache = carry
    logits, cache = model.decode_step(params, cache, token)
    return (jnp.argmax(logits, axis=-1).astype(jnp.int32), cache), token

  _, new = lax.scan(step, (first, cache), None, length=max_new_tokens)
  return jnp.concatenate([prompt, new.T], axis=1)
