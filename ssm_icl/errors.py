"""User-facing errors: a mistake in what the user asked for, not a bug.

The command-line programs (`ssm_icl.main`, `ssm_icl.eval`,
`ssm_icl.reproduce`) print a `UserError` as one `error: ...` line and exit
non-zero, without a Python traceback; any other exception is a bug in
`ssm_icl` and keeps its traceback. Raise it (or a subclass) with a message
that names the bad value and what was expected, e.g.
`UserError("--workdir='s3://x': unsupported scheme 's3'; expected a local "
"path or gs://bucket/path")`.

It subclasses `ValueError` so library callers that already catch
`ValueError` for bad arguments keep working. The `check_*` / `parse_enum`
helpers below raise it with that kind of message; the frozen config
dataclasses validate their fields with them.
"""

import enum
from typing import Any, TypeVar


class UserError(ValueError):
  """A bad input from the user (config value, flag, workdir, checkpoint)."""


class UserTypeError(UserError, TypeError):
  """A user-supplied value of the wrong type (e.g. a string for an int).

  Also a `TypeError`, so callers catching either keep working.
  """


# ------------------------------------------------------------------ checks
# Shared by the frozen config dataclasses (`ssm_icl.models.ModelConfig` and
# the block sub-configs of `ssm_icl.nn`), which validate in __post_init__.

_E = TypeVar("_E", bound=enum.Enum)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_int(field: str, value: Any) -> None:
  """Raises unless `value` is an int >= 1 (a bool is not an int here)."""
  if isinstance(value, bool) or not isinstance(value, int):
    raise UserTypeError(f"{field} must be an int, got {value!r}.")
  if value < 1:
    raise UserError(f"{field} must be positive, got {value}.")


def check_positive_number(field: str, value: Any) -> None:
  """Raises unless `value` is an int or float > 0."""
  if not _is_number(value) or not value > 0:
    raise UserError(f"{field} must be a positive number, got {value!r}.")


def check_fraction(field: str, value: Any) -> None:
  """Raises unless `value` is a number in [0, 1) (a dropout rate)."""
  if not _is_number(value) or not 0.0 <= value < 1.0:
    raise UserError(f"{field} must be a number in [0, 1), got {value!r}.")


def check_bool(field: str, value: Any) -> None:
  """Raises unless `value` is a bool."""
  if not isinstance(value, bool):
    raise UserTypeError(f"{field} must be a bool, got {value!r}.")


def parse_enum(field: str, value: Any, kind: type[_E]) -> _E:
  """`kind(value)` for a member or its value, else a UserError.

  Args:
    field: the name of what is parsed, for the message (e.g. "attn_impl").
    value: a member of `kind` or its (string) value.
    kind: the enum class.

  Returns:
    The member.

  Raises:
    UserError: naming the field, the bad value and the valid values.
  """
  try:
    return kind(value)
  except (ValueError, TypeError):
    raise UserError(f"Unknown {field} {value!r}; expected one of "
                    f"{[m.value for m in kind]}.") from None
