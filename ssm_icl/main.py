r"""Trains a model: `python -m ssm_icl.main --config=... --workdir=...`.

  python -m ssm_icl.main --config=configs/linear_regression.py:mamba,tiny \
      --workdir=/tmp/lr_tiny --config.train.steps=100

Multi-process: set SSM_ICL_DIST_INIT=1 on every host of a TPU pod (the
coordinator is auto-detected), or pass --coordinator_address, --num_processes
and --process_id to each local process. The logic lives in
`ssm_icl.train.loop.train_and_evaluate`, so it can be imported and tested.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ssm_icl import paths
from ssm_icl.parallel import distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file, e.g. configs/quickstart.py or "
    "configs/linear_regression.py:mamba,tiny.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory, local or gs://bucket/path (checkpoints, "
    "metrics, TensorBoard); an existing run there is resumed.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for local "
    "multi-process runs (with --num_processes and --process_id).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes of a local multi-process run.")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "Index of this process in a local multi-process run.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with a clear message for unknown config keys.

  The config is locked, so `--config.model.nope=1` fails at once; absl
  would only show config_dict's bare `AttributeError: 'nope'`.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # e.g. --config.train.lr=abc
    sys.exit(f"FATAL Flags parsing error: {e}")
  except (AttributeError, KeyError) as e:
    key = str(e).strip("\"'")
    overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    sys.exit(f"FATAL Flags parsing error: unknown config key {key!r} in the "
             f"overrides {overrides}. The config is locked: every --config.* "
             "override must name an existing key (docs/TRAINING.md lists "
             "them).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  workdir = paths.workdir_path(_WORKDIR.value, name="--workdir")
  # Before any JAX computation: initialise the multi-process runtime.
  distributed.maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                               _PROCESS_ID.value)
  # Orbax logs dozens of INFO lines per save; keep the console readable
  # unless --verbosity asks for more.
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  # Imported after the distributed init (it imports jax-heavy modules).
  from ssm_icl.train import loop  # pylint: disable=g-import-not-at-top
  loop.train_and_evaluate(_CONFIG.value, workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
