"""Tests for ssm_icl/parallel/mesh.py (8 fake CPU devices from conftest)."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from ssm_icl.parallel import mesh as mesh_lib


class ResolveMeshShapeTest(parameterized.TestCase):

  @parameterized.parameters(
      ((-1, 1), 8, (8, 1)),
      ((2, -1), 8, (2, 4)),
      ((2, 4), 8, (2, 4)),
      ((-1,), 4, (4,)),
      ((1, -1), 1, (1, 1)),
  )
  def test_fills_minus_one(self, shape, n, expected):
    self.assertEqual(mesh_lib.resolve_mesh_shape(shape, n), expected)

  @parameterized.parameters(
      ((2, 2), 8, r"mesh.shape=\(2, 2\) covers 4 devices but 8 devices"),
      ((3, -1), 8, r"multiply to 3, which does not divide the device count 8"),
      ((-1, -1), 8, r"more than one -1"),
      ((0, 8), 8, r"non-positive entries \[0\]"),
      ((), 8, r"mesh.shape is empty"),
  )
  def test_bad_shapes(self, shape, n, message):
    with self.assertRaisesRegex(ValueError, message):
      mesh_lib.resolve_mesh_shape(shape, n)


class MakeMeshTest(parameterized.TestCase):

  def test_auto_axes_and_shape(self):
    mesh = mesh_lib.make_mesh((2, -1))
    self.assertEqual(dict(mesh.shape), {"data": 2, "model": 4})
    self.assertEqual(mesh.axis_types, (AxisType.Auto, AxisType.Auto))

  def test_device_subset(self):
    mesh = mesh_lib.make_mesh((-1, 1), devices=jax.devices()[:2])
    self.assertEqual(dict(mesh.shape), {"data": 2, "model": 1})
    self.assertEqual(set(mesh.devices.flat), set(jax.devices()[:2]))

  def test_shape_not_matching_device_count(self):
    with self.assertRaisesRegex(ValueError, r"covers 4 devices but 8"):
      mesh_lib.make_mesh((4, 1))

  def test_axes_length_mismatch(self):
    with self.assertRaisesRegex(ValueError, r"mesh.axes=\('data',\) has 1"):
      mesh_lib.make_mesh((2, 4), axes=("data",))

  def test_missing_data_axis(self):
    with self.assertRaisesRegex(ValueError, r"has no 'data' axis"):
      mesh_lib.make_mesh((2, 4), axes=("x", "model"))

  def test_repeated_axes(self):
    with self.assertRaisesRegex(ValueError, r"repeated names"):
      mesh_lib.make_mesh((2, 4), axes=("data", "data"))


class RulesAndShardingTest(parameterized.TestCase):

  @parameterized.parameters("dp", "dp_tp")
  def test_rules_map_batch_to_data(self, name):
    rules = dict(mesh_lib.axis_rules(name, mesh_lib.make_mesh((2, 4))))
    self.assertEqual(rules["act_batch"], "data")

  def test_unknown_rules(self):
    with self.assertRaisesRegex(ValueError, r"'nope'"):
      mesh_lib.axis_rules("nope", mesh_lib.make_mesh((2, 4)))

  def test_rules_need_model_axis(self):
    mesh = mesh_lib.make_mesh((-1,), axes=("data",))
    with self.assertRaisesRegex(ValueError, r"mesh axes \['model'\]"):
      mesh_lib.axis_rules("dp_tp", mesh)

  def test_batch_divisible(self):
    mesh = mesh_lib.make_mesh((2, 4))
    mesh_lib.check_batch_divisible(6, mesh)
    with self.assertRaisesRegex(
        ValueError, r"train.batch_size=5 is not divisible by the mesh's "
        r"'data' axis of size 2"):
      mesh_lib.check_batch_divisible(5, mesh)

  def test_shardings(self):
    mesh = mesh_lib.make_mesh((2, 4))
    self.assertEqual(mesh_lib.batch_sharding(mesh).spec, P("data"))
    self.assertEqual(mesh_lib.replicated(mesh).spec, P())


if __name__ == "__main__":
  absltest.main()
