"""Every config file builds with every documented argument and initialises.

The initialisation is abstract (`jax.eval_shape`), so even the paper-size
models cost only a trace. `configs/base.py` and `configs/quickstart.py` take
no argument; every task file takes "family[,size]".
"""

import importlib
import os

from absl.testing import absltest
from absl.testing import parameterized
from flax import linen as nn
import jax
import ml_collections

from configs import common
from ssm_icl import models
from ssm_icl.nn import blocks
from ssm_icl.parallel import mesh as mesh_lib
from ssm_icl.train import loop
from ssm_icl.train import optim
from ssm_icl.train import state as state_lib

_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                           "configs")
TASK_FILES = ("linear_regression", "sparse_linear_regression",
              "relu_2nn_regression", "decision_tree",
              "ortho_outlier_regression", "many_outlier_regression",
              "sparse_parity", "cot_io", "vector_mqar")


def _load(name):
  return importlib.import_module(f"configs.{name}")


def _abstract_init(config):
  """Builds task/model/optimiser and eval_shapes the sharded train state."""
  task, curriculum, model_cfg, _ = loop.build(config)
  model = models.build_model(model_cfg)
  tx = optim.make_optimizer(config.train)
  mesh = mesh_lib.make_mesh(config.mesh.shape, config.mesh.axes)
  rules = mesh_lib.axis_rules(config.mesh.rules, mesh)
  mesh_lib.check_batch_divisible(config.train.batch_size, mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    sharded = state_lib.abstract_state(
        model, tx, (1, task.seq_len(curriculum.points_start), task.d_in),
        config.train.seed, mesh, rules)
  return model_cfg, sharded


def _n_params(sharded):
  return sum(x.size for x in jax.tree.leaves(sharded.target.params))


class ConfigFilesTest(parameterized.TestCase):

  def test_every_task_has_a_file(self):
    from ssm_icl import tasks  # pylint: disable=g-import-not-at-top
    self.assertCountEqual(TASK_FILES, tasks.TASKS)
    for name in TASK_FILES + ("base", "quickstart"):
      self.assertTrue(os.path.exists(os.path.join(_CONFIG_DIR, name + ".py")))

  @parameterized.product(task=TASK_FILES, family=common.FAMILIES)
  def test_paper_size_initialises(self, task, family):
    config = _load(task).get_config(family)
    self.assertIsInstance(config, ml_collections.ConfigDict)
    self.assertEqual(config.model.family, family)
    self.assertEqual(config.train.batch_size, 64)
    model_cfg, sharded = _abstract_init(config)
    self.assertGreater(_n_params(sharded), 0)
    self.assertEqual(model_cfg.family, family)

  @parameterized.product(task=TASK_FILES, size=("tiny", "small"))
  def test_other_sizes_initialise(self, task, size):
    family = "mambaformer" if size == "tiny" else "mamba"
    config = _load(task).get_config(f"{family},{size}")
    _, sharded = _abstract_init(config)
    self.assertGreater(_n_params(sharded), 0)
    if size == "tiny":
      self.assertLessEqual(config.train.steps, 20)
      self.assertLess(_n_params(sharded), 20_000)

  @parameterized.parameters(*common.FAMILIES)
  def test_tiny_of_every_family(self, family):
    _abstract_init(_load("linear_regression").get_config(f"{family},tiny"))

  def test_paper_values(self):
    # Hyperparameters and parameter counts: docs/PAPER.md §7, §6.
    lr = _load("linear_regression")
    _, sharded = _abstract_init(lr.get_config("mamba"))
    self.assertEqual(_n_params(sharded), 470_017)
    _, sharded = _abstract_init(lr.get_config("transformer"))
    self.assertEqual(_n_params(sharded), 425_473)
    self.assertEqual(lr.get_config("").train.lr, 1e-4)
    self.assertEqual(_load("decision_tree").get_config().train.lr, 4e-4)
    mqar = _load("vector_mqar").get_config()
    self.assertEqual((mqar.train.lr, mqar.train.grad_clip), (2e-4, 100.0))
    many = _load("many_outlier_regression").get_config("mamba")
    self.assertEqual(many.train.steps, 1_000_000)
    self.assertEqual(many.task.curriculum.points.to_dict(),
                     {"start": 12, "end": 512, "inc": 2, "interval": 200})
    parity = _load("sparse_parity").get_config("transformer")
    self.assertEqual((parity.model.d_model, parity.model.n_layer), (256, 12))

  def test_deep_models_scan_their_layers(self):
    # One compiled layer instead of n_layer (configs/common.py).
    for family, size, want in (("mamba", "paper", True),
                               ("transformer", "paper", True),
                               ("mamba", "small", False),
                               ("transformer", "small", False)):
      config = _load("sparse_parity").get_config(f"{family},{size}")
      self.assertEqual(config.model.scan_layers, want, (family, size))
    self.assertFalse(_load("linear_regression").get_config(
        "mamba").model.scan_layers)
    self.assertFalse(_load("cot_io").get_config("mamba").model.scan_layers)

  def test_base_and_quickstart(self):
    for name in ("base", "quickstart"):
      config = _load(name).get_config()
      _abstract_init(config)
    with self.assertRaisesRegex(ValueError, r"takes no argument \(got 'x'\)"):
      _load("base").get_config("x")

  def test_every_block_hyperparameter_is_overridable(self):
    # A field added to a mixer sub-config is a key of the (locked) base
    # config, so --config.model.<field>=... reaches ModelConfig.
    model = _load("base").get_config().model
    for key in blocks.MixerConfigs.flat_keys():
      self.assertIn(key, model)
    self.assertEqual(
        models.ModelConfig.from_config_dict(
            dict(model.to_dict(), d_in=1, d_out=1)).mixers,
        blocks.MixerConfigs())

  def test_quickstart_is_the_measured_setting(self):
    # docs/TRAINING.md and the README quote the error this exact setting
    # reaches; changing any of these needs a new measurement there.
    config = _load("quickstart").get_config()
    self.assertEqual(
        (config.model.family, config.model.d_model, config.model.n_layer),
        ("mambaformer", 64, 4))
    self.assertEqual(config.task.kwargs.n_dims, 4)
    self.assertEqual((config.task.curriculum.points.start,
                      config.task.curriculum.points.end), (9, 9))
    self.assertEqual(
        (config.train.lr, config.train.lr_schedule, config.train.warmup_steps,
         config.train.steps, config.train.batch_size, config.train.seed),
        (2e-3, "cosine", 200, 4000, 64, 0))

  @parameterized.parameters(*TASK_FILES)
  def test_paper_sizes_train_in_full_fp32(self, task):
    # The reference trains in fp32; the small/tiny sizes may use TF32/bf16
    # matmul passes on GPU/TPU (docs/TRAINING.md, "Precision").
    module = _load(task)
    self.assertEqual(module.get_config("mamba").train.matmul_precision,
                     "highest")
    for size in ("small", "tiny"):
      self.assertEqual(
          module.get_config(f"mamba,{size}").train.matmul_precision,
          "default")

  def test_precision_of_base_and_quickstart(self):
    self.assertEqual(_load("base").get_config().train.matmul_precision,
                     "highest")
    self.assertEqual(_load("quickstart").get_config().train.matmul_precision,
                     "default")

  def test_configs_are_lockable_and_json_friendly(self):
    config = _load("linear_regression").get_config("mamba,tiny")
    config.lock()
    with self.assertRaises(AttributeError):
      config.train.nope = 1
    self.assertIn('"family": "mamba"', config.to_json())


class ParseArgTest(parameterized.TestCase):

  def test_family_size_and_values(self):
    args = common.parse_arg("mambaformer,tiny,steps=7,flag",
                            family="transformer", size="paper", steps=1,
                            flag=False)
    self.assertEqual(args.to_dict(), {"family": "mambaformer", "size": "tiny",
                                      "steps": 7, "flag": True})

  def test_defaults(self):
    args = common.parse_arg(None, family="transformer", size="paper")
    self.assertEqual((args.family, args.size), ("transformer", "paper"))

  @parameterized.parameters(
      ("mamba,nope", r"unknown key 'nope'"),
      ("mamba,hybrid", r"sets 'family' twice"),
      ("family=rnn", r"family='rnn' is unknown"),
      ("size=huge", r"size='huge' is unknown"),
      ("steps=x", r"steps='x' must be a int"),
  )
  def test_bad_args(self, arg, message):
    with self.assertRaisesRegex(ValueError, message):
      common.parse_arg(arg, family="transformer", size="paper", steps=1)


if __name__ == "__main__":
  absltest.main()
