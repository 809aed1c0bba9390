"""Bayes-optimal predictor for sparse parity (Bhattamishra et al. 2023 task).

The label is y = prod_{j in S} x_j for an unknown subset S of size k of the
d coordinates, x uniform in {-1, +1}^d. Under the uniform prior over the
C(d, k) subsets, the posterior is uniform over the subsets consistent with
every prefix example, and the Bayes-optimal prediction is the majority vote of
their parities on the query; once the prefix pins S down (about log2 C(d, k)
examples), the prediction is always right. With `use_examples=False` the
same vote runs over all C(d, k) subsets: the best predictor that ignores the
in-context examples (the trivial level of Table 1), whose accuracy is
`no_context_accuracy(d, k)` (e.g. 38/64 = 0.594 for d = 6, k = 2).

Shapes: b prompts, n examples, d input width, p slots, c candidate subsets.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ssm_icl.baselines import prefix
from ssm_icl.tasks import base

MAJORITY = "majority"
FIRST = "first"


@functools.partial(jax.jit, static_argnames=("rule",))
def _parity(view: prefix.PrefixView, subsets: jax.Array,
            rule: str) -> jax.Array:
  """Parity predictions of every slot, [b, p] in {-1, +1}."""
  signs = jnp.sign(view.xs)                                   # [b, n, d]
  # Parity of every example under every candidate subset.
  parities = jnp.prod(signs[:, :, subsets], axis=-1)          # [b, n, c]
  labels = jnp.sign(view.ys[..., :1])                         # [b, n, 1]
  wrong = (parities != labels).astype(jnp.float32)            # [b, n, c]
  # A subset is consistent with slot j's prefix iff it mislabels none of it.
  errors = jnp.einsum("bpn,bnc->bpc", view.prefix_mask, wrong)
  consistent = errors == 0                                    # [b, p, c]
  # Noisy labels could leave no consistent subset: then all subsets vote.
  consistent = jnp.where(consistent.any(-1, keepdims=True), consistent, True)
  query = jnp.prod(jnp.sign(view.queries)[:, :, subsets], axis=-1)  # [b,p,c]
  first = jnp.take_along_axis(
      query, jnp.argmax(consistent, -1)[..., None], axis=-1)[..., 0]
  if rule == FIRST:
    return first
  vote = jnp.sum(jnp.where(consistent, query, 0.0), -1)
  # Ties (e.g. two consistent subsets disagreeing) fall back to the first
  # consistent subset, so the prediction is never 0 (which counts as wrong).
  return jnp.where(vote != 0, jnp.sign(vote), first)


@dataclasses.dataclass(frozen=True)
class ParityBayes(prefix.Baseline):
  """Majority vote (or first) of the k-subsets consistent with the prefix.

  Attributes:
    k: subset size, >= 1 (at most d, checked on the prompt).
    rule: "majority" (Bayes-optimal) or "first" (first consistent subset in
      lexicographic order).
    use_examples: False ignores the prefix (every subset stays consistent):
      the Bayes predictor with no examples.
  """

  k: int = 2
  rule: str = MAJORITY
  use_examples: bool = True

  def __post_init__(self):
    if not (isinstance(self.k, int) and self.k >= 1):
      raise ValueError(f"ParityBayes.k must be an int >= 1, got {self.k!r}.")
    if self.rule not in (MAJORITY, FIRST):
      raise ValueError(
          f"ParityBayes.rule={self.rule!r} is unknown; expected one of "
          f"{[MAJORITY, FIRST]}.")

  def __call__(self, prompt: base.Prompt) -> jax.Array:
    view = prefix.prefix_view(prompt, name="parity_bayes")
    if not self.use_examples:
      view = view._replace(prefix_mask=jnp.zeros_like(view.prefix_mask))
    d = view.xs.shape[-1]
    if self.k > d:
      raise ValueError(
          f"ParityBayes.k={self.k} exceeds the input width d={d}.")
    subsets = jnp.asarray(
        np.array(list(itertools.combinations(range(d), self.k)), np.int32))
    sign = _parity(view, subsets, self.rule)                  # [b, p]
    # The sign goes into coordinate 0, the one the accuracy metric reads.
    preds = jnp.zeros(prompt.targets.shape, jnp.float32)
    return preds.at[..., 0].set(sign)


def no_context_accuracy(d: int, k: int) -> float:
  """Exact accuracy of the Bayes predictor that sees only the query.

  For a query with m coordinates equal to -1, c(m) of the C(d, k) subsets
  have parity +1 (an even number of -1s among the subset), and the majority
  vote is right with probability max(c, C - c) / C; m is Binomial(d, 1/2).
  Ties (c = C / 2) are right half the time whichever sign is chosen.
  """
  if not (isinstance(d, int) and isinstance(k, int) and 1 <= k <= d):
    raise ValueError(f"no_context_accuracy needs ints 1 <= k <= d; got "
                     f"d={d!r}, k={k!r}.")
  total = math.comb(d, k)
  accuracy = 0.0
  for m in range(d + 1):
    plus = sum(math.comb(m, j) * math.comb(d - m, k - j)
               for j in range(0, min(m, k) + 1, 2))
    accuracy += math.comb(d, m) / 2**d * max(plus, total - plus) / total
  return accuracy
