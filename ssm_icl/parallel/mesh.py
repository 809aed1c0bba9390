"""Device meshes, logical-axis rules and data shardings from the config.

The config's `mesh` section names a mesh shape over the axes ("data", "model")
where one entry may be -1 ("fill from the device count"), and a rule set name
("dp" or "dp_tp", defined in `ssm_icl.nn.axes`) that maps the logical axis
names carried by every parameter and activation onto those mesh axes.

Meshes are built with `AxisType.Auto` on every axis: flax linen's logical
partitioning inserts `with_sharding_constraint`s, which act as assertions on
`Explicit` axes (the `jax.make_mesh` default) and break tensor parallelism.

Everything here validates its input before anything is compiled, so a wrong
mesh shape or batch size fails in well under a second with a message that
names the offending value.
"""

from __future__ import annotations

from collections.abc import Sequence
import math

import jax
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ssm_icl import errors

# The batch axis of every generated prompt is split over this mesh axis.
DATA_AXIS = "data"
# Tensor-parallel dimensions (Mamba inner channels, heads, MLP) go here.
MODEL_AXIS = "model"
DEFAULT_AXES = (DATA_AXIS, MODEL_AXIS)


def resolve_mesh_shape(shape: Sequence[int],
                       n_devices: int) -> tuple[int, ...]:
  """Fills a single -1 entry of `shape` so the product equals `n_devices`.

  Args:
    shape: mesh shape, e.g. (-1, 1) or (2, 4); at most one entry is -1, the
      others are positive.
    n_devices: number of devices the mesh must cover.

  Returns:
    The shape with -1 replaced.

  Raises:
    ValueError: several -1 entries, a non-positive entry, or a shape whose
      product does not equal (or divide, for -1) the device count.
  """
  shape = tuple(int(s) for s in shape)
  if not shape:
    raise errors.UserError("mesh.shape is empty; expected e.g. (-1, 1).")
  if shape.count(-1) > 1:
    raise errors.UserError(
        f"mesh.shape={shape} has more than one -1; at most one axis can be "
        "filled from the device count.")
  bad = [s for s in shape if s != -1 and s <= 0]
  if bad:
    raise errors.UserError(
        f"mesh.shape={shape} has non-positive entries {bad}; expected "
        "positive sizes or a single -1.")
  fixed = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if n_devices % fixed:
      raise errors.UserError(
          f"mesh.shape={shape}: the fixed axes multiply to {fixed}, which "
          f"does not divide the device count {n_devices}.")
    shape = tuple(n_devices // fixed if s == -1 else s for s in shape)
  elif fixed != n_devices:
    raise errors.UserError(
        f"mesh.shape={shape} covers {fixed} devices but {n_devices} devices "
        f"are available; use a shape whose product is {n_devices} or put -1 "
        "on one axis.")
  return shape


def make_mesh(shape: Sequence[int],
              axes: Sequence[str] = DEFAULT_AXES,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds an `AxisType.Auto` mesh over `devices` (default: all devices).

  Args:
    shape: mesh shape with at most one -1 (see `resolve_mesh_shape`).
    axes: mesh axis names; must contain "data" and match `shape` in length.
    devices: devices to use (default `jax.devices()`, every process's).

  Returns:
    The mesh. `jax.make_mesh` orders the devices topology-aware on TPU/GPU.
  """
  axes = tuple(axes)
  if len(axes) != len(tuple(shape)):
    raise errors.UserError(
        f"mesh.axes={axes} has {len(axes)} names but mesh.shape="
        f"{tuple(shape)} has {len(tuple(shape))} entries.")
  if len(set(axes)) != len(axes):
    raise errors.UserError(f"mesh.axes={axes} has repeated names.")
  if DATA_AXIS not in axes:
    raise errors.UserError(
        f"mesh.axes={axes} has no {DATA_AXIS!r} axis; the batch is split "
        "over it.")
  devices = list(jax.devices() if devices is None else devices)
  resolved = resolve_mesh_shape(shape, len(devices))
  return jax.make_mesh(
      resolved, axes, axis_types=(AxisType.Auto,) * len(axes),
      devices=devices)


def axis_rules(name: str, mesh: Mesh) -> tuple[tuple[str, str | None], ...]:
  """The logical-axis rule set `name`, checked against the mesh's axes.

  Args:
    name: rule-set name known to `ssm_icl.nn.axes.get_rules` ("dp", "dp_tp").
    mesh: the mesh the rules will be used with.

  Returns:
    Tuple of (logical name, mesh axis or None) pairs.
  """
  # Imported here so that `parallel` stays a leaf package at import time.
  from ssm_icl.nn import axes as axes_lib  # pylint: disable=g-import-not-at-top
  rules = tuple(axes_lib.get_rules(name))
  missing = sorted({m for _, m in rules
                    if m is not None and m not in mesh.axis_names})
  if missing:
    raise errors.UserError(
        f"mesh.rules={name!r} maps onto mesh axes {missing}, which the mesh "
        f"axes {tuple(mesh.axis_names)} lack.")
  return rules


def check_batch_divisible(batch_size: int, mesh: Mesh,
                          field: str = "train.batch_size") -> None:
  """Raises ValueError unless `batch_size` splits evenly over the data axis."""
  n_data = mesh.shape[DATA_AXIS]
  if batch_size <= 0 or batch_size % n_data:
    raise errors.UserError(
        f"{field}={batch_size} is not divisible by the mesh's {DATA_AXIS!r} "
        f"axis of size {n_data} (mesh shape {dict(mesh.shape)}); choose a "
        f"multiple of {n_data}.")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of arrays whose leading axis is the batch."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of scalars and other arrays every device holds whole."""
  return NamedSharding(mesh, P())
