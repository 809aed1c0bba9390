"""Helpers shared by the config files: argument parsing and model sizes.

A config file's argument (the part after ":" in `--config=file.py:arg`) is a
comma-separated list in the style of big_vision: bare names are flags and
`key=value` pairs set options, e.g. `mambaformer,tiny` or `mamba,size=small`.
A bare model family name sets `family`, a bare size name sets `size`.
"""

from __future__ import annotations

import ast
from typing import Any

import ml_collections

from ssm_icl import errors

# The six architectures of the paper (ssm_icl.models.FAMILIES).
FAMILIES = ("transformer", "mamba", "s4", "s4_mamba", "hybrid", "mambaformer")
# "paper": the paper's sizes and schedule; "small": a narrower model for a
# workstation; "tiny": a few-second CPU smoke run (tests use it).
SIZES = ("paper", "small", "tiny")


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses "mambaformer,tiny,steps=10" into a ConfigDict over `defaults`.

  Args:
    arg: the config argument, or None / "" for all defaults.
    **defaults: every accepted key with its default; values given in `arg`
      are converted to the default's type (bools accept a bare name).

  Returns:
    A ConfigDict with the keys of `defaults`.

  Raises:
    ValueError: an unknown key, a value of the wrong type, or two families /
      sizes.
  """
  result = ml_collections.ConfigDict(defaults)
  seen = set()
  for token in (arg or "").split(","):
    token = token.strip()
    if not token:
      continue
    if "=" in token:
      key, value = (s.strip() for s in token.split("=", 1))
    elif token in FAMILIES and "family" in defaults:
      key, value = "family", token
    elif token in SIZES and "size" in defaults:
      key, value = "size", token
    else:
      key, value = token, "True"
    if key not in defaults:
      raise errors.UserError(
          f"Config argument {token!r}: unknown key {key!r}; expected a family "
          f"{FAMILIES}, a size {SIZES} or one of {sorted(defaults)}.")
    if key in seen:
      raise errors.UserError(f"Config argument sets {key!r} twice in {arg!r}.")
    seen.add(key)
    result[key] = _convert(key, value, defaults[key])
  if "family" in defaults and result.family not in FAMILIES:
    raise errors.UserError(
        f"Config argument family={result.family!r} is unknown; expected one "
        f"of {FAMILIES}.")
  if "size" in defaults and result.size not in SIZES:
    raise errors.UserError(
        f"Config argument size={result.size!r} is unknown; expected one of "
        f"{SIZES}.")
  return result


def _convert(key: str, value: str, default: Any) -> Any:
  """Converts the string `value` to the type of `default`."""
  if isinstance(default, bool):
    if value.lower() in ("true", "1", "yes"):
      return True
    if value.lower() in ("false", "0", "no"):
      return False
    raise errors.UserError(f"Config argument {key}={value!r} must be a bool.")
  if isinstance(default, str) or default is None:
    return value
  try:
    parsed = ast.literal_eval(value)
  except (ValueError, SyntaxError):
    raise errors.UserError(
        f"Config argument {key}={value!r} must be a "
        f"{type(default).__name__}.") from None
  if isinstance(default, float) and isinstance(parsed, int):
    parsed = float(parsed)
  if type(parsed) is not type(default):  # pylint: disable=unidiomatic-typecheck
    raise errors.UserError(
        f"Config argument {key}={value!r} must be a "
        f"{type(default).__name__}.")
  return parsed


def n_positions(family: str, max_tokens: int,
                reference: int | None = None) -> int:
  """Rows of the position table the reference code gives each family.

  Args:
    family: model family.
    max_tokens: tokens per prompt at the end of the curriculum.
    reference: the reference config's `n_positions` (in points), if any.

  Returns:
    transformer: 2 * reference (HF GPT-2 gets twice the config value);
    hybrid: the reference value, raised to `max_tokens` when too short (the
    reference crashes there, docs/PAPER.md §8.5); families without a
    position table: `max_tokens` (only used to check prompt lengths).
  """
  if reference is None:
    return max_tokens
  if family == "transformer":
    return max(2 * reference, max_tokens)
  if family == "hybrid":
    return max(reference, max_tokens)
  return max_tokens


# Paper-size models with at least this many layers get `scan_layers=True`.
SCAN_LAYERS_FROM = 12


def set_model(config: ml_collections.ConfigDict, family: str, size: str, *,
              max_tokens: int, reference_positions: int | None = None,
              paper_width: int = 128, paper_depth: int = 4,
              transformer_depth: int = 2) -> None:
  """Fills `config.model` for a family at a size.

  Args:
    config: a config from `base.get_config()`.
    family: one of `FAMILIES`.
    size: one of `SIZES`.
    max_tokens: tokens per prompt at the end of the curriculum.
    reference_positions: the reference config's `n_positions`.
    paper_width: the paper's d_model for this task.
    paper_depth: the paper's n_layer for the Mamba-family models.
    transformer_depth: the paper's n_layer for the Transformer (a GPT-2 layer
      is two blocks, so 2 layers match 4 Mamba blocks).
  """
  model = config.model
  model.family = family
  depth = transformer_depth if family == "transformer" else paper_depth
  if size == "paper":
    model.d_model, model.n_layer, model.n_head = paper_width, depth, 8
  elif size == "small":
    model.d_model = max(paper_width // 2, 32)
    model.n_layer = max(depth // 2, 2 if family != "transformer" else 1)
    model.n_head = 4
  else:  # tiny
    model.d_model, model.n_head, model.d_state = 16, 2, 4
    model.n_layer = 1 if family == "transformer" else 2
  model.n_positions = n_positions(family, max_tokens, reference_positions)
  # Deep paper models run their layers under `nn.scan`: XLA compiles one
  # layer instead of n_layer copies (sparse parity's 24-layer D = 256 Mamba
  # train step: trace+lower 6.8 -> 0.8 s, XLA compile 24.4 -> 10.5 s, on a
  # busy 2-core CPU, 2026-12-02). Params are stacked per layer; reference
  # checkpoints load as before (`models.convert` stacks them). Only the
  # paper size: the smaller sizes are shrunk further by the suites, and the
  # layout must not change under the runs they already finished.
  model.scan_layers = size == "paper" and model.n_layer >= SCAN_LAYERS_FROM


def shrink_to_tiny(config: ml_collections.ConfigDict) -> None:
  """Training settings of the `tiny` size: a few seconds on a CPU."""
  config.train.steps = 20
  config.train.batch_size = 8
  config.train.lr = 1e-3
  config.train.log_every = 5
  config.train.eval_every = 10
  config.train.eval_prompts = 16
  config.ckpt.every = 10


def curriculum(dims: tuple[int, int, int, int],
               points: tuple[int, int, int, int]) -> dict[str, Any]:
  """{"dims": {...}, "points": {...}} from (start, end, inc, interval)s."""
  keys = ("start", "end", "inc", "interval")
  return {"dims": dict(zip(keys, dims)), "points": dict(zip(keys, points))}


def task_config(arg: str | None, *, task: str, kwargs: dict[str, Any],
                schedule: dict[str, Any], lr: float, steps: int = 500_000,
                grad_clip: float = 10.0,
                reference_positions: int | None = None,
                paper_width: int = 128, paper_depth: int = 4,
                transformer_depth: int = 2, ckpt_every: int = 5000,
                tiny_kwargs: dict[str, Any],
                tiny_schedule: dict[str, Any],
                default_family: str = "transformer"
                ) -> ml_collections.ConfigDict:
  """The config of one task file: base + task + family/size from `arg`.

  Args:
    arg: "family[,size]" (see `parse_arg`).
    task: the task name.
    kwargs: the task's fields at the paper's setting.
    schedule: the paper's curriculum (`curriculum(...)`).
    lr: the paper's learning rate for this task.
    steps: the paper's number of steps.
    grad_clip: the paper's clipping threshold.
    reference_positions: the reference config's `n_positions`.
    paper_width: the paper's d_model.
    paper_depth: the paper's n_layer of the Mamba-family models.
    transformer_depth: the paper's n_layer of the Transformer.
    ckpt_every: checkpoint interval of the paper-size run.
    tiny_kwargs: task fields of the `tiny` size.
    tiny_schedule: curriculum of the `tiny` size.
    default_family: family when `arg` names none.

  Returns:
    The config.
  """
  # Imported here so that `common` itself loads without the package.
  from configs import base  # pylint: disable=g-import-not-at-top
  from ssm_icl import tasks  # pylint: disable=g-import-not-at-top
  args = parse_arg(arg, family=default_family, size="paper")
  config = base.get_config()
  tiny = args.size == "tiny"
  config.task.name = task
  config.task.kwargs = ml_collections.ConfigDict(
      tiny_kwargs if tiny else kwargs)
  config.task.curriculum = ml_collections.ConfigDict(
      tiny_schedule if tiny else schedule)
  config.train.lr = lr
  config.train.steps = steps
  config.train.grad_clip = grad_clip
  config.ckpt.every = ckpt_every
  if args.size != "paper":
    # Workstation and smoke runs: GPU/TPU matmuls may use TF32/bf16 passes.
    # The paper size trains in full fp32 like the reference (base.py).
    config.train.matmul_precision = "default"
  if args.size == "small":
    config.train.steps = min(steps, 50_000)
    config.ckpt.every = min(ckpt_every, 5000)
  if tiny:
    shrink_to_tiny(config)
  points_end = config.task.curriculum.points.end
  max_tokens = tasks.get_task(task, **config.task.kwargs).seq_len(points_end)
  set_model(config, args.family, args.size, max_tokens=max_tokens,
            reference_positions=None if tiny else reference_positions,
            paper_width=paper_width, paper_depth=paper_depth,
            transformer_depth=transformer_depth)
  return config
