"""Tests for ssm_icl/reproduce/contrasts.py."""

from absl.testing import absltest

from ssm_icl.reproduce import contrasts


def _run(family, seed, error, status="converged"):
  return {"task": "vector_mqar", "family": family, "seed": seed,
          "error": error, "convergence": {"status": status}}


_CONTRAST = [{"task": "vector_mqar", "better": "transformer",
              "worse": "mamba"}]


class ContrastsTest(absltest.TestCase):

  def test_claimed_when_it_holds_in_every_seed(self):
    runs = [_run("transformer", s, 0.001) for s in range(3)]
    runs += [_run("mamba", s, 0.9 + 0.01 * s) for s in range(3)]
    report = contrasts.build(_CONTRAST, runs, seeds=[0, 1, 2])
    (verdict,) = report["contrasts"]
    self.assertEqual(verdict["verdict"], contrasts.CLAIMED)
    self.assertEqual([p["holds"] for p in verdict["per_seed"]], [True] * 3)
    mamba = report["runs"]["vector_mqar"]["mamba"]
    self.assertAlmostEqual(mamba["mean"], 0.91)
    self.assertAlmostEqual(mamba["max"] - mamba["min"], 0.02)
    text = contrasts.markdown(report)
    self.assertIn("| transformer beats mamba on vector_mqar | claimed | "
                  "0: 0.001 vs 0.9, 1: 0.001 vs 0.91, 2: 0.001 vs 0.92 |",
                  text)

  def test_not_claimed_with_a_missing_or_unconverged_seed(self):
    runs = [_run("transformer", s, 0.001) for s in range(2)]
    runs += [_run("mamba", 0, 0.9, status="not converged"),
             _run("mamba", 1, 0.9)]
    report = contrasts.build(_CONTRAST, runs, seeds=[0, 1, 2])
    (verdict,) = report["contrasts"]
    self.assertEqual(verdict["verdict"], contrasts.NOT_CLAIMED)
    self.assertEqual(verdict["reason"],
                     "mamba seed 0: not converged; seed 2 not finished")
    self.assertIn("0.9 (not converged)", contrasts.markdown(report))


if __name__ == "__main__":
  absltest.main()
