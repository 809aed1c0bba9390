"""Tests for ssm_icl.models.families."""

from absl.testing import absltest
from absl.testing import parameterized

from ssm_icl.models import families
from ssm_icl.nn import blocks

M, A, F = "mamba", "attn", "mlp"


class FamiliesTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("transformer", "transformer", 2, (A, F, A, F), "learned", "gpt2"),
      ("mamba", "mamba", 4, (M,) * 4, "none", "mamba"),
      ("s4", "s4", 3, ("s4d",) * 3, "none", "mamba"),
      ("s4_mamba", "s4_mamba", 2, ("s4_mamba",) * 2, "none", "mamba"),
      ("hybrid", "hybrid", 4, (A, M, A, M), "learned", "mamba"),
      ("hybrid_odd", "hybrid", 3, (A, M, A), "learned", "mamba"),
      ("mambaformer", "mambaformer", 4, (M, A, M, A, M), "none", "mamba"),
  )
  def test_paper_patterns(self, family, n_layer, pattern, pos, style):
    self.assertEqual(families.block_pattern(family, n_layer), pattern)
    self.assertEqual(families.default_pos_emb(family), pos)
    self.assertEqual(families.init_style(family), style)
    for kind in pattern:
      self.assertIn(kind, blocks.BLOCKS)

  def test_mambaformer_depth_24(self):
    pattern = families.block_pattern("mambaformer", 24)
    self.assertLen(pattern, 25)
    self.assertEqual(pattern.count(M), 13)
    self.assertEqual(pattern.count(A), 12)

  def test_custom(self):
    self.assertEqual(families.block_pattern("custom", 9, "mamba,attn,mlp"),
                     (M, A, F))
    self.assertEqual(families.block_pattern("custom", 1, [A, A]), (A, A))
    self.assertEqual(families.default_pos_emb("custom"), "none")
    self.assertEqual(families.init_style("custom"), "mamba")

  def test_custom_needs_pattern(self):
    with self.assertRaisesRegex(ValueError, "family='custom' needs a pattern"):
      families.block_pattern("custom", 2)

  def test_unknown_family(self):
    with self.assertRaisesRegex(ValueError, r"Unknown family 'gpt3'.*'s4'"):
      families.block_pattern("gpt3", 2)

  @parameterized.parameters(("",), ("mamba,,attn",), (3,), ((),))
  def test_bad_patterns(self, pattern):
    with self.assertRaisesRegex(ValueError, "pattern must"):
      families.parse_pattern(pattern)

  def test_forced_and_unknown_init(self):
    self.assertEqual(families.init_style("transformer", "mamba"), "mamba")
    with self.assertRaisesRegex(ValueError, r"Unknown init 'he'.*'reference'"):
      families.init_style("mamba", "he")

  def test_position_std(self):
    self.assertEqual(families.position_std("gpt2"), 0.02)
    self.assertEqual(families.position_std("mamba"), 1.0)


if __name__ == "__main__":
  absltest.main()
