"""Tests for ssm_icl/eval/convergence.py on synthetic loss curves."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from ssm_icl import errors
from ssm_icl.eval import convergence

_STEPS = np.arange(100, 4001, 100)  # log_every = 100, 4000 steps


def _assess(losses, **kwargs):
  kwargs.setdefault("total_steps", 4000)
  kwargs.setdefault("log_every", 100)
  return convergence.Convergence().assess(_STEPS, losses, **kwargs)


class ConvergenceTest(parameterized.TestCase):

  def test_plateaued_curve_is_converged(self):
    losses = 0.1 + np.exp(-_STEPS / 300.0)  # flat long before 3000
    result = _assess(losses)
    self.assertEqual(result["status"], convergence.CONVERGED)
    self.assertLess(abs(result["fall"]), 1e-3)
    self.assertEqual(result["start_step"], 3000)
    self.assertIsNone(convergence.mark_text(result))

  def test_still_falling_curve_is_not_converged(self):
    losses = 1.0 - _STEPS / 5000.0  # linear fall: 0.4 -> 0.2 in the last 1/4
    result = _assess(losses)
    self.assertEqual(result["status"], convergence.NOT_CONVERGED)
    # Smoothed (3 points) at 3000: mean of 2800..3000 -> 1 - 2900/5000 = 0.42;
    # at the end: mean of 3800..4000 -> 0.22.
    np.testing.assert_allclose(result["loss_start"], 0.42)
    np.testing.assert_allclose(result["loss_end"], 0.22)
    np.testing.assert_allclose(result["fall"], 0.2 / 0.42)
    self.assertEqual(convergence.mark_text(result), "not converged (-47.6%)")

  def test_noisy_but_flat_curve_is_converged(self):
    # +-3% noise per point: single points differ by up to 6%, but on a
    # flat plateau the smoothed curve does not fall (the noise sums to 0
    # over any 3 consecutive points).
    noise = np.tile([0.03, -0.03, 0.0], len(_STEPS) // 3 + 1)[:len(_STEPS)]
    losses = 0.5 * (1 + noise)
    self.assertGreater(losses[29] - losses.min(), 0.02 * losses[29])
    result = _assess(losses)
    self.assertEqual(result["status"], convergence.CONVERGED)
    self.assertLess(abs(result["fall"]), 0.02)

  def test_smoothing_window_of_one_sees_the_noise(self):
    losses = np.full(len(_STEPS), 0.5)
    losses[29] = 0.53  # the point at step 3000
    strict = convergence.Convergence(smooth=1).assess(
        _STEPS, losses, total_steps=4000, log_every=100)
    self.assertEqual(strict["status"], convergence.NOT_CONVERGED)
    self.assertEqual(_assess(losses)["status"], convergence.CONVERGED)

  def test_curriculum_jumps_before_the_last_quarter_are_excluded(self):
    # The loss falls, jumps up when the final stage starts at step 2000,
    # then plateaus: points before the final stage are ignored.
    losses = np.where(_STEPS <= 2000, 0.2, 0.8)
    result = _assess(losses, final_stage_step=2000)
    self.assertEqual(result["status"], convergence.CONVERGED)
    # A window that starts at the jump would have mixed the stages.
    self.assertAlmostEqual(result["loss_start"], 0.8)

  def test_curriculum_ending_after_three_quarters_is_flagged(self):
    losses = np.ones(len(_STEPS))
    result = _assess(losses, final_stage_step=3500)
    self.assertEqual(result["status"], convergence.CURRICULUM_NOT_FINISHED)
    self.assertIsNone(result["fall"])
    self.assertEqual(convergence.mark_text(result),
                     convergence.CURRICULUM_NOT_FINISHED)

  def test_too_few_usable_points(self):
    # The final stage starts at 2900: only the point at 3000 is usable
    # (the one at 2900 still averages steps of the earlier stage).
    result = _assess(np.ones(len(_STEPS)), final_stage_step=2900)
    self.assertEqual(result["status"], convergence.TOO_SHORT)

  def test_rising_loss_counts_as_converged(self):
    # A loss that rises is not still falling: no more steps would help.
    result = _assess(0.5 + _STEPS / 40000.0)
    self.assertEqual(result["status"], convergence.CONVERGED)
    self.assertLess(result["fall"], 0)

  def test_moving_mean(self):
    np.testing.assert_allclose(
        convergence.moving_mean([1.0, 2.0, 3.0, 4.0], 2), [1, 1.5, 2.5, 3.5])

  def test_train_loss_log_keeps_last_record_per_step(self):
    records = [{"step": 100, "train/loss": 2.0}, {"step": 100, "eval/x": 1},
               {"step": 200, "train/loss": 1.0},
               {"step": 100, "train/loss": 1.5}]
    self.assertEqual(convergence.train_loss_log(records),
                     ([100, 200], [1.5, 1.0]))

  def test_describe_states_the_numbers(self):
    text = convergence.Convergence().describe()
    self.assertIn("at most 2%", text)
    self.assertIn("moving mean of 3 logged points", text)
    self.assertIn("0.75 of the steps", text)

  @parameterized.parameters(
      {"max_fall": -0.1}, {"max_fall": 1.0}, {"start_fraction": 0.0},
      {"start_fraction": 1.0}, {"smooth": 0}, {"smooth": 2.5})
  def test_bad_thresholds(self, **kwargs):
    with self.assertRaisesRegex(errors.UserError, "Convergence"):
      convergence.Convergence(**kwargs)

  def test_bad_inputs(self):
    with self.assertRaisesRegex(errors.UserError, "one length"):
      convergence.Convergence().assess([1, 2], [1.0], total_steps=2)
    with self.assertRaisesRegex(errors.UserError, "total_steps=0"):
      convergence.Convergence().assess([1], [1.0], total_steps=0)


if __name__ == "__main__":
  absltest.main()
