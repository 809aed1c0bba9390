r"""Trains a model: `python -m ssm_icl.main --config=... --workdir=...`.

  python -m ssm_icl.main --config=configs/linear_regression.py:mamba,tiny \
      --workdir=/tmp/lr_tiny --config.train.steps=100

Multi-process: set SSM_ICL_DIST_INIT=1 on every host of a TPU pod (the
coordinator is auto-detected), or pass --coordinator_address, --num_processes
and --process_id to each local process. --compile_cache moves or disables
the persistent compilation cache (`ssm_icl.cli`); a mistake in a flag or
the config prints one `error: ...` line. The logic lives in
`ssm_icl.train.loop.train_and_evaluate`, so it can be imported and tested.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from ssm_icl import cli
from ssm_icl import compile_cache
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  workdir = paths.workdir_path(_WORKDIR.value, name="--workdir")
  # Before any JAX computation: initialise the multi-process runtime.
  distributed.maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                               _PROCESS_ID.value)
  cli.start()
  # Imported after the distributed init (it imports jax-heavy modules).
  # pylint: disable=g-import-not-at-top
  import jax
  from ssm_icl.train import loop
  # pylint: enable=g-import-not-at-top
  result = loop.train_and_evaluate(cli.config_value(_CONFIG), workdir)
  loop.console(compile_cache.report())
  if result.interrupted and jax.process_count() == 1:
    # Stopped by SIGTERM: the checkpoint is on disk and the metric files are
    # closed, so skip the interpreter's teardown (freeing the XLA client
    # and, where installed, PyTorch, which tensorboardX imports): seconds
    # that a preempted VM may not have. Multi-process runs exit normally, so
    # jax.distributed shuts down in step with the other processes.
    cli.exit_now(0)


if __name__ == "__main__":
  cli.run(main)
