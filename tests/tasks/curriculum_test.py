"""Tests for ssm_icl.tasks.curriculum."""

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections

from ssm_icl.tasks import curriculum as curriculum_lib


def _reference_replay(c, steps):
  """The reference's stateful schedule: sample, then update()."""
  dims, points, values = c.dims_start, c.points_start, []
  for step in range(steps):
    values.append((dims, points))
    count = step + 1
    if count % c.dims_interval == 0:
      dims = min(dims + c.dims_inc, c.dims_end)
    if count % c.points_interval == 0:
      points = min(points + c.points_inc, c.points_end)
  return values


class CurriculumTest(parameterized.TestCase):

  @parameterized.parameters(
      (0, (5, 11)), (1999, (5, 11)), (2000, (6, 13)), (29_999, (19, 39)),
      (30_000, (20, 41)), (500_000, (20, 41)))
  def test_paper_linear_regression_schedule(self, step, expected):
    self.assertEqual(curriculum_lib.Curriculum().at(step), expected)

  def test_many_outlier_schedule(self):
    c = curriculum_lib.Curriculum(dims_start=4, dims_end=20, dims_inc=1,
                                  dims_interval=2000, points_start=12,
                                  points_end=512, points_inc=2,
                                  points_interval=200)
    self.assertEqual(c.at(49_999), (20, 510))
    self.assertEqual(c.at(50_000), (20, 512))
    self.assertEqual(c.final_step, 50_000)
    self.assertEqual(c.final, (20, 512))
    self.assertLen(c.distinct_points(), 251)

  def test_matches_reference_replay(self):
    c = curriculum_lib.Curriculum(dims_start=2, dims_end=5, dims_inc=2,
                                  dims_interval=3, points_start=4,
                                  points_end=9, points_inc=3,
                                  points_interval=5)
    replay = _reference_replay(c, 40)
    self.assertEqual([c.at(s) for s in range(40)], replay)
    self.assertEqual(c.distinct_points(),
                     tuple(sorted({p for _, p in replay})))
    self.assertEqual(c.distinct_points(), (4, 7, 9))  # end is clipped

  def test_distinct_points_and_constant(self):
    c = curriculum_lib.Curriculum(points_start=26, points_end=101,
                                  points_inc=5)
    self.assertEqual(c.distinct_points(), tuple(range(26, 102, 5)))
    const = curriculum_lib.Curriculum.constant(10, 140)
    self.assertEqual(const.at(0), (10, 140))
    self.assertEqual(const.at(10**6), (10, 140))
    self.assertEqual(const.distinct_points(), (140,))
    self.assertEqual(const.final_step, 0)

  def test_from_nested_dict_and_config_dict(self):
    nested = {"dims": {"start": 5, "end": 20, "inc": 1, "interval": 2000},
              "points": {"start": 26, "end": 101, "inc": 5,
                         "interval": 2000}}
    c = curriculum_lib.Curriculum.from_config(nested)
    self.assertEqual(c.at(30_000), (20, 101))
    self.assertEqual(
        curriculum_lib.Curriculum.from_config(
            ml_collections.ConfigDict(nested)), c)
    flat = curriculum_lib.Curriculum.from_config(
        ml_collections.ConfigDict({"points_start": 7, "points_end": 7,
                                   "points_inc": 0}))
    self.assertEqual(flat.at(123), (5, 7))

  @parameterized.parameters(
      (dict(dims={"start": 1, "step": 2}), "Unknown curriculum key dims.step"),
      (dict(point_start=3), "Unknown curriculum key 'point_start'"),
      (dict(dims=3), "'dims' must be a mapping"),
  )
  def test_from_config_errors(self, config, message):
    with self.assertRaisesRegex(ValueError, message):
      curriculum_lib.Curriculum.from_config(config)

  @parameterized.parameters(
      (dict(dims_start=0), "dims_start=0 must be >= 1"),
      (dict(points_start=50), "points_end=41 must be >= points_start=50"),
      (dict(points_inc=0), "points_inc=0 must be > 0"),
      (dict(dims_inc=-1), "dims_inc=-1 must be > 0"),
      (dict(dims_interval=0), "dims_interval=0 must be >= 1"),
      (dict(points_end=41.5), "points_end=41.5 must be an int"),
  )
  def test_invalid_fields(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      curriculum_lib.Curriculum(**kwargs)

  def test_invalid_step(self):
    with self.assertRaisesRegex(ValueError, "step=-1 must be >= 0"):
      curriculum_lib.Curriculum().at(-1)
    with self.assertRaisesRegex(ValueError, "step=1.5 must be an int"):
      curriculum_lib.Curriculum().at(1.5)


if __name__ == "__main__":
  absltest.main()
