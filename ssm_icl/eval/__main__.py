r"""Evaluates a run's checkpoint against the baselines: curves, plot, table.

  python -m ssm_icl.eval --workdir=workdirs/quickstart [--n_prompts=1280]
  python -m ssm_icl.eval --workdir=gs://bucket/run   # object stores too

Restores the workdir's latest readable checkpoint (or `--step`), rebuilds the
task and model from the config stored in the checkpoint's metadata, and runs
the model and `ssm_icl.baselines.relevant_baselines(task)` on the same fixed
evaluation prompts at the curriculum's final length. Writes into
`<workdir>/eval/`: `results.json` (curves with bootstrap intervals),
`curves.png` / `curves.svg`, and `table.md` (Table 1 row of this run), and
prints the error of every predictor at a few numbers of examples.
"""

from __future__ import annotations

from typing import Any

from absl import app
from absl import flags

from ssm_icl import cli
from ssm_icl import compile_cache
from ssm_icl import errors
from ssm_icl import paths

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory to evaluate (local or gs://bucket/path).")
_N_PROMPTS = flags.DEFINE_integer("n_prompts", 1280, "Evaluation prompts.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Prompts per batch.")
_SEED = flags.DEFINE_integer("seed", 0, "Evaluation seed (fixes the prompts).")
_N_POINTS = flags.DEFINE_integer(
    "n_points", None, "Examples per prompt (default: the curriculum's end).")
_STEP = flags.DEFINE_integer(
    "step", None, "Checkpoint step (default: the latest readable one).")
_BASELINES = flags.DEFINE_bool(
    "baselines", True, "Also evaluate the task's relevant baselines.")
_N_BOOTSTRAP = flags.DEFINE_integer("n_bootstrap", 1000,
                                    "Bootstrap resamples.")

EVAL_DIR = "eval"


def restore_run(workdir: paths.PathLike, step: int | None = None
                ) -> tuple[Any, Any, Any, Any, Any, int]:
  """Rebuilds a run from its checkpoint.

  Args:
    workdir: the run directory (local or gs://).
    step: checkpoint step; None for the latest readable one.

  Returns:
    (config, task, curriculum, model, params, step): the resolved config as
    a ConfigDict, the task, its curriculum, the flax model, the restored
    parameters (on one local device) and the step.
  """
  # pylint: disable=g-import-not-at-top
  from flax import linen as nn
  import jax
  import ml_collections
  from ssm_icl import models
  from ssm_icl.parallel import mesh as mesh_lib
  from ssm_icl.train import checkpoint as ckpt_lib
  from ssm_icl.train import loop
  from ssm_icl.train import optim
  from ssm_icl.train import state as state_lib
  # pylint: enable=g-import-not-at-top
  workdir = paths.workdir_path(workdir)
  directory = workdir / ckpt_lib.CHECKPOINT_DIR
  if not directory.is_dir():
    raise errors.UserError(
        f"workdir={str(workdir)!r} has no {ckpt_lib.CHECKPOINT_DIR}/ "
        "directory; train a model there first.")
  ckpt = ckpt_lib.Checkpointer(workdir, every=1, max_to_keep=None,
                               async_save=False)
  steps = ckpt.all_steps()
  if not steps:
    raise errors.UserError(f"{directory} holds no complete checkpoint.")
  if step is not None and step not in steps:
    raise errors.UserError(f"step={step} has no checkpoint in {directory}; "
                           f"available steps: {steps}.")
  meta = ckpt.read_meta(steps[-1] if step is None else step)
  config = ml_collections.ConfigDict(meta["config"])
  task, curriculum, model_cfg, _ = loop.build(config)
  model = models.build_model(model_cfg)
  tx = optim.make_optimizer(config.train)
  # Evaluation runs on one device; the restore reshards whatever mesh the
  # checkpoint was written from.
  mesh = mesh_lib.make_mesh((1, 1), devices=jax.local_devices()[:1])
  rules = mesh_lib.axis_rules("dp", mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    sharded = state_lib.abstract_state(
        model, tx, (1, task.seq_len(curriculum.points_start), task.d_in),
        config.train.seed, mesh, rules)
    if step is None:
      restored = ckpt.restore_latest(sharded.target, set_aside=False)
      state, _, step = restored
    else:
      state, _ = ckpt.restore(step, sharded.target)
  ckpt.close()
  return config, task, curriculum, model, state.params, step


def model_predictors(name: str, model: Any, params: Any, task: Any
                     ) -> dict[str, Any]:
  """The model as predictors: `name` (autoregressive for CoT-I/O)."""
  # pylint: disable=g-import-not-at-top
  from ssm_icl.eval import icl_curves
  # pylint: enable=g-import-not-at-top
  apply_fn = lambda p, tokens: model.apply({"params": p}, tokens)
  if task.name != "cot_io":
    return {name: icl_curves.model_predictor(apply_fn, params)}
  # Autoregressive y predictions by recurrent decoding (one pass a prompt).
  return {name: icl_curves.model_predictor(apply_fn, params, task=task,
                                           model=model),
          f"{name} (teacher-forced)": icl_curves.model_predictor(apply_fn,
                                                                params)}


def run(workdir: paths.PathLike, *, n_prompts: int = 1280,
        batch_size: int = 64, seed: int = 0, n_points: int | None = None,
        step: int | None = None, baselines: bool = True,
        n_bootstrap: int = 1000) -> dict[str, Any]:
  """Evaluates the run in `workdir`; writes and returns the results.

  Returns:
    The results dict of `icl_curves.evaluate`, plus `step` and `workdir`.
  """
  # pylint: disable=g-import-not-at-top
  from ssm_icl import baselines as baselines_lib
  from ssm_icl.eval import icl_curves
  from ssm_icl.eval import plots
  from ssm_icl.eval import report
  # pylint: enable=g-import-not-at-top
  workdir = paths.workdir_path(workdir)
  config, task, curriculum, model, params, step = restore_run(workdir, step)
  n_points = curriculum.points_end if n_points is None else n_points
  if model.config.uses_positions:
    task.check_fits(n_points, model.config.n_positions)
  name = config.model.family
  predictors = model_predictors(name, model, params, task)
  if baselines:
    predictors.update(baselines_lib.relevant_baselines(task))
  results = icl_curves.evaluate(
      predictors, task, n_points=n_points, n_prompts=n_prompts,
      batch_size=batch_size, seed=seed, n_bootstrap=n_bootstrap)
  results["step"] = step
  out = workdir / EVAL_DIR
  icl_curves.save_results(results, out / "results.json")
  plots.plot_curves(results, out / "curves",
                    title=f"{task.name}: {name} at step {step}")
  report.write_table({task.name: {name: results}}, out / "table.md",
                     models=[name])
  print(summary(results, task, model=name), flush=True)
  print(f"Wrote {out}/results.json, curves.png, curves.svg, table.md",
        flush=True)
  return results


def summary(results: dict[str, Any], task: Any,
            model: str | None = None) -> str:
  """Error of every predictor at 0, d/2, d and the last number of examples.

  With `model` and a least-squares curve, a last line compares the two at
  k = d examples (the quickstart's acceptance number).
  """
  xs = results["x"]
  d = getattr(task, "n_dims", None)
  wanted = [0] + ([d // 2, d] if d else []) + [xs[-1]]
  columns = [x for x in dict.fromkeys(wanted) if x in xs]
  header = " | ".join(f"k={x:>3}" for x in columns)
  lines = [f"{results['task']} ({results['metric']}, normalised by "
           f"{results['normalizer']:g}), {results['n_prompts']} prompts:",
           f"{'predictor':>28} | {header}"]
  for curve_name, curve in results["curves"].items():
    values = " | ".join(f"{curve['mean'][xs.index(x)]:5.3f}" for x in columns)
    lines.append(f"{curve_name:>28} | {values}")
  ls = results["curves"].get("least_squares")
  if model in results["curves"] and ls and d in xs:
    at_d = results["curves"][model]["mean"][xs.index(d)]
    ls_d = ls["mean"][xs.index(d)]
    lines.append(f"At k = d = {d} examples: {model} {at_d:.3f}, least "
                 f"squares {ls_d:.3f} (difference {at_d - ls_d:+.3f}).")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.start()
  run(paths.workdir_path(_WORKDIR.value, name="--workdir"),
      n_prompts=_N_PROMPTS.value,
      batch_size=_BATCH_SIZE.value, seed=_SEED.value,
      n_points=_N_POINTS.value, step=_STEP.value,
      baselines=_BASELINES.value, n_bootstrap=_N_BOOTSTRAP.value)
  print(compile_cache.report(), flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  cli.run(main)
