"""The plan of a reproduction suite: one `Run` per (task, model, sweep point).

A suite (configs/suites.py) names the families to train on each task, the
size argument of the task configs and the overrides of the suite; `plan`
turns it into the list of runs, each with its complete training config,
label, directory and analytic training FLOPs. A sweep
(`--sweep model.d_model=64,128,256`) multiplies every run by the values of
one or more config fields.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import itertools
import os
import sys
from typing import Any, Mapping, Sequence

import ml_collections

from ssm_icl import errors
from ssm_icl.ops import flops as flops_lib

# task.kwargs holds the task's fields; a suite may set fields the paper
# config leaves at their defaults, so new keys are allowed there only.
_OPEN_SECTIONS = ("task.kwargs",)


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a suite.

  Attributes:
    task: task name (a key of `ssm_icl.tasks.TASKS`).
    family: model family.
    label: the model's name in curves and Table 1: the family, plus the
      sweep values, e.g. "mamba@d_model=64".
    group: the task's name in curves and Table 1: the task, plus sweep
      values of task.* fields (runs of one group share their baselines).
    sweep: ((key, value), ...) of this sweep point.
    config: the complete training config.
  """

  task: str
  family: str
  label: str
  group: str
  sweep: tuple[tuple[str, Any], ...]
  config: ml_collections.ConfigDict

  @property
  def relpath(self) -> str:
    """Directory of the run under the suite's workdir: <group>/<label>."""
    return f"{self.group}/{self.label}"  # "/" in URLs (gs://) too


def import_configs() -> None:
  """Makes the top-level `configs` package importable.

  `configs/` lives next to the `ssm_icl` package in a source checkout (it is
  not installed), as for `python -m ssm_icl.main`; run from the checkout, or
  from anywhere with the package installed in editable mode.
  """
  try:
    importlib.import_module("configs.common")
  except ImportError:
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    if not os.path.isdir(os.path.join(root, "configs")):
      raise errors.UserError("Cannot import the configs/ package: run from the "
                             "source checkout that holds configs/.") from None
    sys.path.insert(0, root)


def suite_config(name: str) -> ml_collections.ConfigDict:
  """The suite `name` of configs/suites.py."""
  import_configs()
  suites = importlib.import_module("configs.suites")
  return suites.get_config(name)


def task_config(task: str, family: str, size: str
                ) -> ml_collections.ConfigDict:
  """configs/<task>.py:<family>,<size>."""
  import_configs()
  try:
    module = importlib.import_module(f"configs.{task}")
  except ModuleNotFoundError:
    raise errors.UserError(
        f"Unknown task {task!r}: there is no configs/{task}.py.") from None
  return module.get_config(f"{family},{size}")


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any], path: str = "") -> None:
  """Sets the leaves of the nested `overrides` in `config`, in place.

  Args:
    config: a training config.
    overrides: nested dict (or ConfigDict) like the config, e.g.
      {"train": {"lr": 1e-3}}.
    path: dotted prefix of `config` (for error messages).

  Raises:
    ValueError: a key that the config does not have (except under
      task.kwargs), or a value of the wrong type.
  """
  if hasattr(overrides, "to_dict"):
    overrides = overrides.to_dict()
  for key, value in overrides.items():
    name = f"{path}{key}"
    if key not in config:
      if path.rstrip(".") not in _OPEN_SECTIONS:
        raise errors.UserError(
            f"Override {name!r}: the config has no such key; "
            f"{path or 'the top level '}holds {sorted(config)}.")
      with config.unlocked():
        config[key] = value
      continue
    if isinstance(value, Mapping) and isinstance(
        config[key], ml_collections.ConfigDict):
      apply_overrides(config[key], value, name + ".")
      continue
    try:
      config[key] = value
    except TypeError as e:
      raise errors.UserError(
          f"Override {name}={value!r} has the wrong type: {e}") from None


def parse_value(text: str) -> Any:
  """"64" -> 64, "1e-3" -> 0.001, "True" -> True, "mamba" -> "mamba"."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_sweep(specs: Sequence[str]) -> list[tuple[str, list[Any]]]:
  """Parses ["model.d_model=64,128", ...] into [(key, [values]), ...].

  Raises:
    ValueError: a spec without "=", an empty key or value list, or a key
      given twice.
  """
  parsed, seen = [], set()
  for spec in specs:
    key, sep, values = spec.partition("=")
    key = key.strip()
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key or not items:
      raise errors.UserError(
          f"--sweep {spec!r}: expected KEY=V1,V2,... such as "
          "model.d_model=64,128,256.")
    if key in seen:
      raise errors.UserError(f"--sweep sets {key!r} twice.")
    seen.add(key)
    parsed.append((key, [parse_value(v) for v in items]))
  return parsed


def _set_dotted(config: ml_collections.ConfigDict, key: str,
                value: Any) -> None:
  """config["a.b.c"] = value, with the checks of `apply_overrides`."""
  nested: Any = value
  for part in reversed(key.split(".")):
    nested = {part: nested}
  apply_overrides(config, nested)


def _fit_positions(config: ml_collections.ConfigDict) -> None:
  """Raises model.n_positions to the longest prompt when overrides grew it.

  The task configs size the position table for their own number of
  examples; a suite or sweep that asks for longer prompts needs more rows.
  """
  from ssm_icl import tasks  # pylint: disable=g-import-not-at-top
  task = tasks.get_task(config.task.name, **config.task.kwargs.to_dict())
  tokens = task.seq_len(config.task.curriculum.points.end)
  if config.model.n_positions < tokens:
    config.model.n_positions = tokens


def suite_sweep(suite: ml_collections.ConfigDict,
                sweep: Sequence[tuple[str, list[Any]]] = ()
                ) -> list[tuple[str, list[Any]]]:
  """The suite's own sweep and seeds, then `sweep` (which wins per key).

  A suite's `sweep` ([[key, values], ...]) and `seeds` (a sweep over
  train.seed) repeat its runs like --sweep; a --sweep of the same key
  replaces the suite's values.
  """
  own = [(str(k), list(v)) for k, v in (suite.get("sweep") or [])]
  if suite.get("seeds"):
    own.append(("train.seed", [int(s) for s in suite.seeds]))
  given = {k for k, _ in sweep}
  return [(k, v) for k, v in own if k not in given] + list(sweep)


def _label(base: str, sweep: Sequence[tuple[str, Any]]) -> str:
  if not sweep:
    return base
  return base + "@" + ",".join(f"{k.split('.')[-1]}={v}" for k, v in sweep)


def plan_runs(suite: ml_collections.ConfigDict, *,
         sweep: Sequence[tuple[str, list[Any]]] = (),
         tasks: Sequence[str] | None = None,
         families: Sequence[str] | None = None) -> list[Run]:
  """The runs of `suite`, in order (task by task).

  Args:
    suite: a suite from configs/suites.py.
    sweep: from `parse_sweep`; every run is repeated for every combination,
      with the suite's own sweep and seeds (`suite_sweep`).
    tasks: keep only these tasks (None: all).
    families: keep only these families (None: all).

  Returns:
    The runs.

  Raises:
    ValueError: unknown task or family in the filters, a filter that keeps
      nothing, a bad override or sweep key.
  """
  from ssm_icl import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  # The paper's task order (the registry's), then any others.
  order = list(tasks_lib.TASKS)
  known_tasks = sorted(suite.runs, key=lambda t: (
      order.index(t) if t in order else len(order), t))
  for name, wanted, known in (
      ("task", tasks, known_tasks),
      ("model", families, sorted({f.strip() for fs in suite.runs.values()
                                  for f in fs.split(",")}))):
    unknown = sorted(set(wanted or ()) - set(known))
    if unknown:
      raise errors.UserError(f"Unknown {name}(s) {unknown} for suite "
                             f"{suite.name!r}; it has {known}.")
  runs = []
  sweep = suite_sweep(suite, sweep)
  combos = list(itertools.product(*[[(k, v) for v in values]
                                    for k, values in sweep]))
  for task in known_tasks:
    if tasks and task not in tasks:
      continue
    for family in (f.strip() for f in suite.runs[task].split(",")):
      if families and family not in families:
        continue
      for combo in combos:
        config = task_config(task, family, suite.size)
        apply_overrides(config, suite.common)
        if task in suite.tasks:
          apply_overrides(config, suite.tasks[task])
        if family in suite.families:
          apply_overrides(config, suite.families[family])
        for key, value in combo:
          _set_dotted(config, key, value)
        if not any(k == "model.n_positions" for k, _ in combo):
          _fit_positions(config)
        task_sweep = [(k, v) for k, v in combo if k.startswith("task.")]
        runs.append(Run(task=task, family=family,
                        label=_label(family, combo),
                        group=_label(task, task_sweep), sweep=combo,
                        config=config))
  if not runs:
    raise errors.UserError(
        f"The filters tasks={tasks} models={families} keep no "
        f"run of suite {suite.name!r}.")
  return runs


def training_flops(config: ml_collections.ConfigDict) -> dict[str, float]:
  """Analytic FLOPs and size of a run (`ssm_icl.ops.flops`).

  Returns:
    {"params": parameter count, "train_flops": forward + backward FLOPs
    summed over every step of the curriculum, "eval_flops_per_prompt":
    forward FLOPs of one prompt at the final length}.
  """
  from ssm_icl.train import loop  # pylint: disable=g-import-not-at-top
  task, curriculum, model_cfg, _ = loop.build(config)
  steps, batch = config.train.steps, config.train.batch_size
  interval = curriculum.points_interval
  if curriculum.points_start == curriculum.points_end:
    interval = steps  # one length throughout
  cache = {}
  total = 0.0
  # n_points only changes at multiples of its interval.
  for start in range(0, steps, interval):
    n_points = curriculum.at(start)[1]
    if n_points not in cache:
      cache[n_points] = flops_lib.model_flops(
          model_cfg, task.seq_len(n_points), batch=batch,
          training=True)["total"]
    total += cache[n_points] * min(interval, steps - start)
  final = task.seq_len(curriculum.points_end)
  return {
      "params": flops_lib.param_count(model_cfg),
      "train_flops": total,
      "eval_flops_per_prompt": float(
          flops_lib.model_flops(model_cfg, final)["total"]),
  }
